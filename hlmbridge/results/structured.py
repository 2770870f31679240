"""After-fit quantities of a fit with a residual structure (Stata's ``residuals()``, the nlme engine).

The marginal model of one outermost group is ``y_i ~ N(X_i b, V_i)``, ``V_i = Z_i G Z_i' + R_i``
with ``R_i`` the structure's residual covariance (:mod:`hlmbridge.inference.residual_structures`).
Everything here is computed from the design at the fit's estimates (``FitResult.random``'s
rows, in the structured model's parameter order):

- random effects (BLUPs): ``u = G Z_i' V_i^-1 (y_i - X_i b)``, nlme's ``ranef()``; their
  conditional covariance ``G - G Z_i' V_i^-1 Z_i G`` (the fixed effects and variances treated
  as known, as lme4's ``condVar`` and Stata's ``reses``; nlme prints none);
- residuals: ``"response"`` (also ``"working"``/``"deviance"``: no weights here) ``y - fitted``,
  ``"pearson"`` divided by each row's residual SD ``sqrt(R_ii)`` (nlme's
  ``resid(type = "pearson")``: by sigma times the variance function's weight), ``"normalized"``
  the Pearson ones premultiplied within each innermost group by nlme's ``corFactor`` ``F``
  (``F C F' = I``, ``C`` the residual correlation matrix: ``L^-1`` for its lower Cholesky
  factor ``L``, but for ``exchangeable`` the eigenvalue-scaled Helmert basis nlme's corCompSymm
  uses; nlme's ``resid(type = "normalized")``);
- :func:`wcorrelation`: Stata's ``estat wcorrelation`` (``covariance=True``: the matrix
  itself), ``V_i`` of one outermost group, which is nlme's ``getVarCov(fit, type = "marginal")``.

- :func:`structured_random_sd` (Stata's ``estat sd``) and :func:`structured_tidy` /
  :func:`structured_glance` (broom.mixed's vocabulary): the levels' rows as for any fit; the
  structure's variances as SDs (``sd(e)``, ``1: sd(e)``, ``sd(e3)``; broom term
  ``sd__Observation``, ``sd__Observation.1``, ``sd__Observation.3``), its covariances as
  correlations (``corr(e)``, ``corr(e1,e2)``; ``cor__Observation``, ``cor__Observation.1.2``) and
  ``rho``, ``phi#``, ``theta#`` as they are (Stata's names, also broom's terms: broom.mixed's
  ``tidy.lme`` has no rows for nlme's correlation and variance functions). SEs by the delta
  method from the fit's ``random_vcov``; CIs on Stata's scales (log SD, atanh correlation).
  ``glance()``'s ``sigma`` is ``sqrt(var(e))``, NaN where the structure has several residual
  variances (``by()``, ``unstructured``: nlme's ``sigma`` there is one stratum's).

``estat icc`` is not defined after a residual structure (Stata's manual: intraclass
correlations "are not available ... with residual error structures other than independent
structures"): :func:`icc_refusal` says so.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> from hlmbridge.design.build import build_design
>>> from hlmbridge.inference.residual_structures import structured_model
>>> rng = np.random.default_rng(1)
>>> df = pd.DataFrame({"id": np.repeat(np.arange(10), 4), "t": np.tile(np.arange(4), 10)})
>>> df["y"] = rng.normal(size=40) + rng.normal(size=10)[df["id"]]
>>> d = build_design(parse_stata("mixed y t || id:, residuals(ar 1, t(t))"), df)
>>> m = structured_model(d, df)
>>> theta = np.array([1.0, 0.5, 2.0])                 # var(_cons), rho, var(e)
>>> V = marginal_covariance(m, theta, 0)
>>> V.round(3).tolist()[0]                             # 1 + 2 * 0.5^|s - t|
[3.0, 2.0, 1.5, 1.25]
>>> modes, cond = structured_effects(m, m.loglik(theta)[1], theta)[0]
>>> modes.shape, cond.shape
((10, 1), (10, 1, 1))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.inference.residual_structures import StructuredModel
from hlmbridge.inference.stata_parity import level_covariances

__all__ = ["STRUCTURED_RESIDUAL_KINDS", "icc_refusal", "marginal_covariance", "structured_effects",
           "structured_glance", "structured_level_effects", "structured_random_sd", "structured_residuals",
           "structured_tidy", "wcorrelation"]

STRUCTURED_RESIDUAL_KINDS = ("response", "pearson", "normalized", "working", "deviance")


def model_of(res: Any) -> StructuredModel:
    """The structured model of a fit (its design, rebuilt with the structure's columns)."""
    from hlmbridge.inference.residual_structures import structured_model_again
    from hlmbridge.results.random_effects import require_design

    return structured_model_again(require_design(res, "quantities after a residual structure"))


def _theta(res: Any) -> tuple[np.ndarray, np.ndarray]:
    beta = np.array([r[2] for r in res.fixed_rows], dtype=float)
    theta = np.array([r[5] for r in res.random_rows], dtype=float)
    return beta, theta


def _place(model: StructuredModel, group: int) -> tuple[Any, int]:
    """The stacked block and position of outermost group ``group`` (its code)."""
    top = int(np.argmin([ld.n_groups for ld in model.design.levels]))
    codes = model.design.levels[top].codes
    for b in model.blocks:
        hit = np.flatnonzero(codes[b.rows[:, 0]] == group)
        if hit.size:
            return b, int(hit[0])
    raise UsageError(f"no outermost group with code {group}")  # pragma: no cover - codes come from the design


def marginal_covariance(model: StructuredModel, theta: np.ndarray, group: int) -> np.ndarray:
    """``V_i`` of the outermost group with code ``group`` (its rows in the data's order)."""
    b, k = _place(model, group)
    return model.block_v(np.asarray(theta, dtype=float), b)[k]


def structured_effects(model: StructuredModel, beta: np.ndarray,
                       theta: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per design level ``(modes (n_groups, q), cond_cov (n_groups, q, q))`` at ``beta``, ``theta``
    (see the module docstring)."""
    design = model.design
    theta = np.asarray(theta, dtype=float)
    covs = level_covariances(design, np.append(theta[: model.n_level_params], 0.0))
    out = [(np.zeros((ld.n_groups, ld.Z.shape[1])), np.zeros((ld.n_groups, ld.Z.shape[1], ld.Z.shape[1])))
           for ld in design.levels]
    for b in model.blocks:
        V = model.block_v(theta, b, covs)
        r = b.y - np.einsum("bnp,p->bn", b.X, np.asarray(beta, dtype=float))
        a = np.linalg.solve(V, r[..., None])[..., 0]
        for lev, (Zl, cl, G) in enumerate(zip(b.Z, b.codes, covs, strict=True)):
            modes, cond = out[lev]
            for k in range(b.rows.shape[0]):
                for g in np.unique(cl[k]):
                    Zg = np.where((cl[k] == g)[:, None], Zl[k], 0.0)  # n x q: the group's rows
                    modes[g] = G @ (Zg.T @ a[k])
                    VZ = np.linalg.solve(V[k], Zg)
                    cond[g] = G - G @ Zg.T @ VZ @ G
    return tuple(out)


def structured_level_effects(res: Any) -> tuple[Any, ...]:
    """:class:`hlmbridge.results.random_effects.LevelEffects` of a structured fit."""
    from hlmbridge.results.random_effects import LevelEffects

    model = model_of(res)
    beta, theta = _theta(res)
    return tuple(LevelEffects(ld.key, tuple(ld.group_labels), tuple(ld.terms_lme4), tuple(ld.terms_stata),
                              modes, 0.5 * (cond + np.swapaxes(cond, -1, -2)))
                 for ld, (modes, cond) in zip(model.design.levels, structured_effects(model, beta, theta),
                                              strict=True))


def structured_residuals(res: Any, kind: str = "response", level: int | None = None) -> pd.Series:
    """Residuals of a structured fit (``kind`` as in the module docstring; ``level`` as
    :func:`hlmbridge.results.prediction.fitted`'s: None every level, 0 population)."""
    if kind not in STRUCTURED_RESIDUAL_KINDS:
        raise UsageError(f"kind must be one of {', '.join(map(repr, STRUCTURED_RESIDUAL_KINDS))}, got {kind!r}")
    from hlmbridge.results.prediction import fitted

    model = model_of(res)
    design = model.design
    r = design.y - fitted(res, level).to_numpy()
    if kind in ("pearson", "normalized"):
        _, theta = _theta(res)
        rtheta = theta[model.n_level_params:]
        out = np.empty_like(r)
        for b in model.blocks:
            R = model._residual_cov(rtheta, b)
            sd = np.sqrt(np.einsum("bii->bi", R))
            e = r[b.rows] / sd
            if kind == "normalized":
                C = R / (sd[..., :, None] * sd[..., None, :])
                for k in range(b.rows.shape[0]):
                    for g in np.unique(b.inner[k]):
                        idx = np.flatnonzero(b.inner[k] == g)
                        e[k, idx] = _inverse_factor(C[k][np.ix_(idx, idx)], model.structure.kind) @ e[k, idx]
            out[b.rows] = e
        r = out
    return pd.Series(r, index=pd.Index(design.rows, name="row"), name=kind)


def _inverse_factor(C: np.ndarray, kind: str) -> np.ndarray:
    """nlme's ``corFactor`` of one group's correlation matrix ``C`` (rows in the data's order):
    a matrix ``F`` with ``F C F' = I``. The inverse of the lower Cholesky factor for every
    structure but the exchangeable one, for which nlme's corCompSymm uses the Helmert basis
    scaled by the eigenvalues ``1 + (n - 1) rho`` and ``1 - rho``."""
    n = C.shape[0]
    if kind != "exchangeable" or n == 1:
        return np.linalg.inv(np.linalg.cholesky(C))
    rho = float(C[0, 1])
    F = np.zeros((n, n))
    F[0] = 1.0 / np.sqrt(n * (1.0 + (n - 1) * rho))
    for k in range(1, n):
        F[k, :k] = -1.0
        F[k, k] = k
        F[k] /= np.sqrt(k * (k + 1.0) * (1.0 - rho))
    return F


def _text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _cluster_rows(design: Any, at: Any) -> np.ndarray:
    """The design rows of the cluster ``at`` names: ``{level variable: value, ...}`` for the
    outermost level and optionally the next ones in order (a bare value: the outermost level's);
    None: the innermost (Stata's "two-level") cluster of the first row used, Stata's default."""
    levels = sorted(design.levels, key=lambda ld: ld.n_groups)  # outermost first (nested levels)
    first = int(np.argmin(design.rows))
    if at is None:
        chosen = {ld.name: ld.group_labels[ld.codes[first]].split(":")[-1] for ld in levels}
    elif isinstance(at, dict):
        names = [ld.name for ld in levels]
        if not at or list(at) != names[: len(at)]:
            raise UsageError(f"at= names the levels' variables from the outermost one, in order ({', '.join(names)}); "
                             f"got {at!r}")
        chosen = {k: _text(v) for k, v in at.items()}
    else:
        chosen = {levels[0].name: _text(at)}
    keep = np.ones(design.nobs, dtype=bool)
    for ld in levels:
        if ld.name not in chosen:
            break
        own = np.array([lab.split(":")[-1] for lab in ld.group_labels], dtype=object)
        keep &= own[ld.codes] == chosen[ld.name]
        if not keep.any():
            raise UsageError(f"at=: no cluster {chosen} in the estimation sample")
    return np.flatnonzero(keep)


def wcorrelation(res: Any, at: Any = None, covariance: bool = False) -> pd.DataFrame:
    """Stata's ``estat wcorrelation[, at() covariance nosort]``: the model-implied correlation (or
    covariance) matrix of the observations of one cluster, rows and columns labelled by the rows'
    positions in the fit's frame, in the data's order (Stata's ``nosort``). ``at``: ``{level
    variable: value}`` from the outermost level (``{"id": 3}``; ``{"school": 1, "class": 2}``), or
    the outermost level's value; None: Stata's default, the first two-level cluster in the data
    (the innermost group of the first row used)."""
    from hlmbridge.results.random_effects import require_design

    design = require_design(res, "estat wcorrelation")
    if res.spec.is_glmm:
        raise UnsupportedSpecError("wcorrelation() (estat wcorrelation)", res.engine, message=(
            "estat wcorrelation is computed for linear mixed models only"))
    _, theta = _theta(res)
    rows = _cluster_rows(design, at)
    if res.spec.residuals is not None:
        model = model_of(res)
        top = int(np.argmin([ld.n_groups for ld in design.levels]))
        b, k = _place(model, int(design.levels[top].codes[rows[0]]))
        pos = np.flatnonzero(np.isin(b.rows[k], rows))
        V, rows = model.block_v(theta, b)[k][np.ix_(pos, pos)], b.rows[k][pos]
    else:  # independent residuals: Z G Z' + s2 I
        covs = level_covariances(design, theta)
        V = theta[-1] * np.eye(len(rows))
        for ld, G in zip(design.levels, covs, strict=True):
            Z = ld.Z[rows]
            V = V + (Z @ G @ Z.T) * (ld.codes[rows][:, None] == ld.codes[rows][None, :])
    if not covariance:
        sd = np.sqrt(np.diag(V))
        V = V / np.outer(sd, sd)
    labels = pd.Index(design.rows[rows], name="row")
    out = pd.DataFrame(V, index=labels, columns=labels)
    out.attrs["title"] = "Standard deviations and covariances" if covariance else "Standard deviations and correlations"
    return out


_Z = 1.959963984540054


def structured_random_sd(res: Any) -> pd.DataFrame:
    """Stata's ``estat sd`` after a residual structure (see the module docstring): columns
    ``group``, ``kind``, ``stata_term``, ``estimate``, ``std_error``, ``conf_low``, ``conf_high``."""
    from dataclasses import replace

    from hlmbridge.results.postestimation import random_sd

    model = model_of(res)
    k = model.n_level_params
    V = np.asarray(res.random_vcov, dtype=float)
    levels = random_sd(replace(res, random_rows=res.random_rows[:k],
                               random_vcov=tuple(tuple(r[:k]) for r in res.random_vcov[:k])))
    theta = np.array([r[5] for r in res.random_rows], dtype=float)
    rows = []
    for i, prm in enumerate(model.params[k:], start=k):
        row = res.random_rows[i]
        if prm.kind == "var":
            sd = float(np.sqrt(theta[i]))
            se = float(np.sqrt(V[i, i]) / (2 * sd)) if sd > 0 else float("nan")
            rows.append(("Residual", "sd", prm.stata_term.replace("var(", "sd("), sd, se,
                         float(np.sqrt(row[7])), float(np.sqrt(row[8]))))
        elif prm.kind == "cov":
            ia, ib = (k, k) if model.structure.kind == "exchangeable" else (k + prm.index, k + prm.index2)
            va, vb, c = theta[ia], theta[ib], theta[i]
            r = float(c / np.sqrt(va * vb))
            grad = np.zeros(len(theta))
            grad[i] = 1 / np.sqrt(va * vb)
            grad[ia] += -0.5 * r / va
            grad[ib] += -0.5 * r / vb
            se = float(np.sqrt(grad @ V @ grad))
            half = _Z * se / (1 - r * r) if abs(r) < 1 else float("nan")
            rows.append(("Residual", "corr", prm.stata_term.replace("cov(", "corr("), r, se,
                         float(np.tanh(np.arctanh(r) - half)), float(np.tanh(np.arctanh(r) + half))))
        else:  # rho, phi#, theta#: Stata's rows as they are
            rows.append(("Residual", prm.kind, prm.stata_term, float(row[5]), float(row[6]), float(row[7]),
                         float(row[8])))
    return pd.concat([levels, pd.DataFrame(rows, columns=list(levels.columns))], ignore_index=True)


def _broom_term(stata_term: str, kind: str) -> str:
    """broom's term of a residual row of :func:`structured_random_sd`."""
    if kind == "sd":
        inner = stata_term.split(": ")[0] if ": " in stata_term else stata_term[4:-1].removeprefix("e")
        return "sd__Observation" + (f".{inner}" if inner else "")
    if kind == "corr":
        inner = stata_term[5:-1].replace("e", "").replace(",", ".")
        return "cor__Observation" + (f".{inner}" if inner else "")
    return stata_term


def structured_tidy(res: Any, effects: str | tuple[str, ...] = ("fixed", "ran_pars")) -> pd.DataFrame:
    """:meth:`FitResult.tidy` after a residual structure: the ``fixed`` and ``ran_vals`` rows as
    for any fit, ``ran_pars`` from :func:`structured_random_sd` (terms in the module docstring)."""
    from dataclasses import replace

    from hlmbridge.results.postestimation import tidy

    wanted = (effects,) if isinstance(effects, str) else tuple(effects)
    k = model_of(res).n_level_params
    levels_only = replace(res, random_rows=res.random_rows[:k],
                          random_vcov=tuple(tuple(r[:k]) for r in res.random_vcov[:k]))
    tidy(levels_only, effects=wanted if "ran_vals" not in wanted else "fixed")  # checks effects
    head = [e for e in wanted if e != "ran_vals"]
    # the levels' rows (their residual row is replaced below); ran_vals from the fit itself
    out = tidy(levels_only, effects=head) if head else None
    vals = tidy(res, effects="ran_vals") if "ran_vals" in wanted else None
    if out is None:
        return vals
    if "ran_pars" not in wanted:
        return out if vals is None else _with_vals(out, vals)
    sd = structured_random_sd(res).iloc[k:]
    extra = pd.DataFrame({"effect": "ran_pars", "group": "Residual",
                          "term": [_broom_term(t, kd) for t, kd in zip(sd["stata_term"], sd["kind"], strict=True)],
                          "estimate": sd["estimate"].to_numpy(), "std_error": sd["std_error"].to_numpy(),
                          "statistic": np.nan, "p_value": np.nan, "conf_low": sd["conf_low"].to_numpy(),
                          "conf_high": sd["conf_high"].to_numpy()})
    keep = ~((out["effect"] == "ran_pars") & (out["group"] == "Residual"))
    out = out[keep]
    cut = int(np.flatnonzero((out["effect"] == "ran_pars").to_numpy()).max(initial=len(out) - 1)) + 1 \
        if (out["effect"] == "ran_pars").any() else int((out["effect"] == "fixed").sum())
    out = pd.concat([out.iloc[:cut], extra, out.iloc[cut:]], ignore_index=True)
    return out if vals is None else _with_vals(out, vals)


def _with_vals(out: pd.DataFrame, vals: pd.DataFrame) -> pd.DataFrame:
    """``out`` with a ``level`` column and the ``ran_vals`` rows after it (as postestimation.tidy)."""
    out = out.copy()
    out.insert(2, "level", None)
    return pd.concat([out, vals], ignore_index=True) if len(out) else vals


def structured_glance(res: Any) -> pd.DataFrame:
    """:meth:`FitResult.glance` after a residual structure (``sigma`` as in the module docstring)."""
    from hlmbridge.results.broom import glance

    out = glance(res)
    model = model_of(res)
    variances = [i for i, p in enumerate(model.params) if p.kind == "var" and i >= model.n_level_params]
    out["sigma"] = float(np.sqrt(res.random_rows[variances[0]][5])) if len(variances) == 1 else float("nan")
    return out


def icc_refusal(res: Any) -> UnsupportedSpecError:
    """The error ``estat icc`` gives after a residual structure (see the module docstring)."""
    structure = res.spec.residuals.stata()
    why = ("each by() group has its own var(e), so there is no one intraclass correlation"
           if res.spec.residuals.by is not None else "the residuals are correlated within a group")
    return UnsupportedSpecError("icc() (estat icc)", res.engine, message=(
        f"estat icc is not defined after {structure}: {why}. Stata's manual: intraclass correlations are "
        "\"not available ... with residual error structures other than independent structures\". "
        "wcorrelation() (estat wcorrelation) gives the model-implied within-group correlations."))
