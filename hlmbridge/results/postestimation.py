"""Stata's postestimation for mixed models, computed from a FitResult alone.

``icc`` (``estat icc``), ``recov`` (``estat recov``), ``ic`` (``estat ic``),
``lrtest`` (``lrtest``), ``variance_explained`` (the proportional reduction in
variance the seed computes with ``di``), and the sd/corr and broom.mixed views.

Examples
--------
>>> import hlmbridge, hlmbridge.datasets
>>> df = hlmbridge.datasets.hsb("combined")
>>> m0 = hlmbridge.fit("mixed mathach || id:", df, engine="statsmodels")
>>> m1 = hlmbridge.fit("mixed mathach ses || id:", df, engine="statsmodels")
>>> round(float(m0.icc()["estimate"].iloc[0]), 2)
0.18
>>> round(variance_explained(m0, m1).level2, 2)
0.45
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UsageError
from hlmbridge.results.fit_result import FitResult

__all__ = ["LRTest", "VarianceExplained", "ic", "icc", "lrtest", "random_sd", "recov", "tidy", "variance_explained"]

_Z = 1.959963984540054  # scipy.stats.norm.ppf(0.975); scipy.stats is imported only when needed
BOUNDARY_NOTE = (
    "The reported degrees of freedom assumes the null hypothesis is not on the boundary of the "
    "parameter space. If this is not true, then the reported test is conservative."
)


def _vcov(res: FitResult) -> np.ndarray:
    return np.asarray(res.random_vcov, dtype=float)


def _index(rnd: pd.DataFrame, group: str, stata_term: str) -> int:
    """Row of ``stata_term`` at level ``group`` in a result's ``random`` table."""
    hit = np.flatnonzero((rnd["group"] == group).to_numpy() & (rnd["stata_term"] == stata_term).to_numpy())
    if hit.size == 0:
        raise UsageError(f"the model has no {stata_term} at level {group!r}")
    return int(hit[0])


def icc(res: FitResult) -> pd.DataFrame:
    """Stata's ``estat icc``: intraclass correlation per level, delta-method SE, logit-scale CI.

    With covariates in the fixed part it is the residual ICC (Stata's title says so);
    random slopes are conditioned at zero (only ``var(_cons)`` enters). Refused after a residual
    structure, as Stata refuses it (:func:`hlmbridge.results.structured.icc_refusal`).
    """
    if res.spec.residuals is not None:
        from hlmbridge.results.structured import icc_refusal

        raise icc_refusal(res)
    rnd = res.random
    theta = rnd["estimate"].to_numpy()
    V = _vcov(res)
    res_i = _index(rnd, "Residual", "var(Residual)")
    cons = []
    for g in res.groups:
        try:
            cons.append(_index(rnd, g.group, "var(_cons)"))
        except UsageError as exc:
            raise UsageError(f"estat icc needs a random intercept at every level ({g.group!r} has none)") from exc
    rows = icc_rows(res.groups, theta, V, cons, cons + [res_i])
    out = pd.DataFrame(rows, columns=["level", "estimate", "std_error", "conf_low", "conf_high"])
    has_covariates = any(t != "_cons" for t in res.fixed["stata_term"])
    out.attrs["title"] = "Residual intraclass correlation" if has_covariates else "Intraclass correlation"
    return out


def icc_rows(groups: Any, theta: np.ndarray, V: np.ndarray, cons: list[int], total_idx: list[int],
             constant: float = 0.0) -> list[tuple[str, float, float, float, float]]:
    """Stata's ``estat icc`` rows, one per nested level: rho = the ``var(_cons)`` of that level and
    the ones above it (``cons``, outermost first) over the sum of ``theta[total_idx]`` plus
    ``constant`` (a GLMM's latent residual variance), its delta-method SE from ``V`` (the
    covariance of ``theta``) and the CI on the logit scale, as Stata computes it (none at rho = 0).
    Each row is (level, rho, se, low, high)."""
    from scipy import special

    total = float(theta[total_idx].sum()) + constant
    rows = []
    label: list[str] = []
    for depth, g in enumerate(groups):
        label.append(g.group)
        num_idx = cons[: depth + 1]
        num = float(theta[num_idx].sum())
        rho = num / total
        grad = np.zeros(len(theta))
        for i in total_idx:
            grad[i] = ((total if i in num_idx else 0.0) - num) / total**2
        se = float(np.sqrt(grad @ V @ grad))
        with np.errstate(divide="ignore", invalid="ignore"):  # rho = 0 on a boundary: no interval
            half = _Z * se / (rho * (1 - rho))
            logit = np.log(rho) - np.log1p(-rho)
            lo, hi = float(special.expit(logit - half)), float(special.expit(logit + half))
        rows.append(("|".join(label), rho, se, lo, hi))
    return rows


def recov(res: FitResult, corr: bool = False) -> dict[str, pd.DataFrame]:
    """Stata's ``estat recov``: each level's random-effects covariance (or correlation) matrix."""
    rnd = res.random
    out: dict[str, pd.DataFrame] = {}
    for level in res.groups:
        terms = list(level.terms)
        mat = pd.DataFrame(0.0, index=terms, columns=terms)
        sub = rnd[rnd["group"] == level.group]
        for row in sub.itertuples(index=False):
            inner = row.stata_term[4:-1]
            if row.kind == "var" and inner in terms:
                mat.loc[inner, inner] = row.estimate
            elif row.kind == "var":  # a variance shared by several terms (identity/exchangeable)
                for t in inner.split():
                    mat.loc[t, t] = row.estimate
            elif "," in inner:
                a, b = inner.split(",")
                mat.loc[a, b] = mat.loc[b, a] = row.estimate
            else:
                names = inner.split()
                for a in names:
                    for b in names:
                        if a != b:
                            mat.loc[a, b] = row.estimate
        if corr:
            sd = np.sqrt(np.diag(mat.to_numpy()))
            mat = mat / np.outer(sd, sd)
        out[level.group] = mat
    return out


def ic(res: FitResult) -> pd.DataFrame:
    """Stata's ``estat ic`` (BIC with N = number of observations)."""
    return pd.DataFrame(
        [(res.nobs, float("nan"), res.loglik, res.df, res.aic, res.bic)],
        columns=["N", "ll_null", "ll_model", "df", "aic", "bic"],
    )


#: Stata's boundary note as ``lrtest`` prints it (wrapped after "boundary of the", as in the seed's log).
_NOTE_LINES = (
    "Note: The reported degrees of freedom assumes the null hypothesis is not on the boundary of the",
    "      parameter space. If this is not true, then the reported test is conservative.",
)


@dataclass(frozen=True)
class LRTest:
    """A likelihood-ratio test of a nested model (``restricted``) against a fuller one.

    ``restricted`` and ``unrestricted`` are the two models as written (the command or formula
    they were fitted from); ``restricted_name`` and ``unrestricted_name`` are what the printed
    form calls them (``lrtest(..., names=...)``; the models as written by default).
    ``print(test)`` shows it as Stata's ``lrtest`` does; ``repr`` shows the fields.
    """

    chi2: float
    df: int
    p_value: float
    restricted: str
    unrestricted: str
    note: str | None = None
    restricted_name: str | None = None
    unrestricted_name: str | None = None

    def __str__(self) -> str:
        """Stata's layout: the title, the assumption, ``LR chi2(df)`` to 2 decimals and
        ``Prob > chi2`` to 4, the labels and values aligned on ``=``, and the boundary note."""
        small = self.restricted_name if self.restricted_name is not None else self.restricted
        big = self.unrestricted_name if self.unrestricted_name is not None else self.unrestricted
        labels = (f"LR chi2({self.df})", "Prob > chi2")
        values = (f"{self.chi2:.2f}", f"{self.p_value:.4f}")
        lw = max(map(len, labels))
        vw = max(map(len, values))
        lines = ["Likelihood-ratio test", f"Assumption: {small} nested within {big}", ""]
        lines += [f"{lab:>{lw}} = {val:>{vw}}" for lab, val in zip(labels, values, strict=True)]
        if self.note is not None:
            lines += ["", *(_NOTE_LINES if self.note == BOUNDARY_NOTE else (f"Note: {self.note}",))]
        return "\n".join(lines)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:  # IPython shows the printed form
        p.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        """The test as an HTML table in Jupyter (:mod:`hlmbridge.results.html`)."""
        from hlmbridge.results.html import lrtest_html

        return lrtest_html(self)


def _written(res: FitResult) -> str:
    """A model as the user wrote it (the command or formula it was fitted from)."""
    spec = res.spec
    if spec._source is not None:
        return spec._source.strip()
    if spec.formula is not None:
        return spec.to_lme4().formula
    return spec.to_stata()


def lrtest(a: FitResult, b: FitResult, *, names: tuple[str, str] | None = None) -> LRTest:
    """Stata's ``lrtest a b``: LR chi2 with the difference in df, and the boundary note.

    The model with fewer parameters is taken as nested in the other, as Stata does.
    ``names`` labels ``a`` and ``b`` in the printed form (Stata's ``estimates store`` names);
    by default each model is shown as written.

    Examples
    --------
    >>> import hlmbridge
    >>> df = hlmbridge.datasets.hsb()
    >>> m1 = hlmbridge.fit("mixed mathach ses || id:", df, engine="statsmodels")
    >>> m2 = hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", df, engine="statsmodels")
    >>> print(lrtest(m2, m1, names=("m2", "m1")))
    Likelihood-ratio test
    Assumption: m1 nested within m2
    <BLANKLINE>
     LR chi2(2) =   4.54
    Prob > chi2 = 0.1035
    <BLANKLINE>
    Note: The reported degrees of freedom assumes the null hypothesis is not on the boundary of the
          parameter space. If this is not true, then the reported test is conservative.
    >>> lrtest(m1, m2).df
    2
    """
    if names is not None and (not isinstance(names, (tuple, list)) or len(names) != 2
                              or not all(isinstance(n, str) and n.strip() for n in names)):
        raise UsageError(f"names must be two non-empty strings, one per model; got {names!r}")
    if a.nobs != b.nobs:
        raise UsageError(f"the models were fitted on different samples ({a.nobs} vs {b.nobs} observations)")
    if a.method != b.method:
        raise UsageError("the models were fitted with different methods (ML vs REML)")
    if a.spec.family != b.spec.family:
        raise UsageError(f"the models have different families ({a.spec.family} vs {b.spec.family}): not nested")
    if (a.spec.intmethod, a.spec.intpoints) != (b.spec.intmethod, b.spec.intpoints):
        raise UsageError("the models' likelihoods integrate the random effects differently "
                         f"({a.spec.intmethod}, {a.spec.intpoints} points vs {b.spec.intmethod}, {b.spec.intpoints}): "
                         "their log likelihoods are not comparable")
    small, big = (a, b) if a.df <= b.df else (b, a)
    if a.method == "reml" and list(small.fixed["term"]) != list(big.fixed["term"]):
        raise UsageError("REML likelihoods are not comparable across different fixed effects; refit with ML")
    if small.df == big.df:
        raise UsageError("the models have the same number of parameters: not nested")
    chi2 = max(0.0, 2.0 * (big.loglik - small.loglik))
    df = big.df - small.df
    n_var_small = len(small.random_rows)
    n_var_big = len(big.random_rows)
    note = BOUNDARY_NOTE if n_var_small != n_var_big else None
    from hlmbridge.inference.tails import chi2_sf  # scipy.stats.chi2.sf without importing scipy

    label = {id(a): names[0], id(b): names[1]} if names is not None else {}
    return LRTest(chi2, df, chi2_sf(chi2, df), _written(small), _written(big), note,
                  label.get(id(small)), label.get(id(big)))


@dataclass(frozen=True)
class VarianceExplained:
    """Proportional reduction in variance from ``base`` to ``model`` (Raudenbush & Bryk).

    ``by_level`` maps each grouping level (and ``Residual``) to its reduction.
    """

    level2: float
    level1: float
    total: float
    by_level: dict[str, float] = field(default_factory=dict)


def variance_explained(base: FitResult, model: FitResult) -> VarianceExplained:
    """Reduction of the intercept variances and the residual variance, and of their sum."""
    def parts(res: FitResult) -> dict[str, float]:
        rnd = res.random
        out = {}
        for g in res.groups:
            out[g.group] = float(rnd["estimate"].iloc[_index(rnd, g.group, "var(_cons)")])
        out["Residual"] = float(rnd["estimate"].iloc[_index(rnd, "Residual", "var(Residual)")])
        return out

    pb, pm = parts(base), parts(model)
    if set(pb) != set(pm):
        raise UsageError("the two models have different grouping levels")
    by = {k: (pb[k] - pm[k]) / pb[k] for k in pb}
    total = (sum(pb.values()) - sum(pm.values())) / sum(pb.values())
    return VarianceExplained(by[base.groups[0].group], by["Residual"], total, by)


def random_sd(res: FitResult) -> pd.DataFrame:
    """The random part on the sd/corr scale with Stata's CIs (log sd, atanh corr)."""
    rnd = res.random
    theta = rnd["estimate"].to_numpy()
    V = _vcov(res)
    rows = []
    for i, row in enumerate(rnd.itertuples(index=False)):
        inner = row.stata_term[4:-1]
        if row.kind == "var":
            sd = float(np.sqrt(theta[i]))
            se = float(np.sqrt(V[i, i]) / (2 * sd)) if sd > 0 else float("nan")
            half = _Z * se / sd if sd > 0 else float("nan")
            rows.append((row.group, "sd", f"sd({inner})", sd, se, sd * np.exp(-half), sd * np.exp(half)))
        else:
            a, b = (inner.split(",") + [None])[:2] if "," in inner else (inner, None)
            ia = _index(rnd, row.group, f"var({a})") if b else _index(rnd, row.group, f"var({inner})")
            ib = _index(rnd, row.group, f"var({b})") if b else ia
            va, vb, c = theta[ia], theta[ib], theta[i]
            r = c / np.sqrt(va * vb)
            grad = np.zeros(len(theta))
            grad[i] = 1 / np.sqrt(va * vb)
            grad[ia] += -0.5 * r / va
            grad[ib] += -0.5 * r / vb
            se = float(np.sqrt(grad @ V @ grad))
            if abs(r) < 1:
                half = _Z * se / (1 - r**2)
                lo, hi = np.tanh(np.arctanh(r) - half), np.tanh(np.arctanh(r) + half)
            else:
                lo = hi = float("nan")
            rows.append((row.group, "corr", f"corr({inner})", float(r), se, float(lo), float(hi)))
    return pd.DataFrame(rows, columns=["group", "kind", "stata_term", "estimate", "std_error", "conf_low", "conf_high"])


_EFFECTS = ("fixed", "ran_pars", "ran_vals")


def tidy(res: FitResult, effects: str | tuple[str, ...] | list[str] = ("fixed", "ran_pars")) -> pd.DataFrame:
    """A long table in broom.mixed's vocabulary: ``fixed`` rows, ``ran_pars`` on the sd/cor
    scale, and on request ``ran_vals`` (the random effects: ``group``, ``level``, ``term``,
    ``estimate``, ``std_error`` = conditional SD, and the interval), as broom.mixed's
    ``tidy(fit, effects = ...)``. A ``level`` column is added when ``ran_vals`` is asked for."""
    wanted = (effects,) if isinstance(effects, str) else tuple(effects)
    bad = [e for e in wanted if e not in _EFFECTS]
    if bad or not wanted:
        raise UsageError(f"effects must be among {', '.join(_EFFECTS)}; got {effects!r}")
    cols = ["effect", "group", "term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]
    rows = []
    if "fixed" in wanted:
        rows += [
            ("fixed", None, r.term, r.estimate, r.std_error, r.statistic, r.p_value, r.conf_low, r.conf_high)
            for r in res.fixed.itertuples(index=False)
        ]
    if "ran_pars" in wanted:
        sd = random_sd(res)
        rnd = res.random
        for r, s in zip(rnd.itertuples(index=False), sd.itertuples(index=False), strict=True):
            if r.group == "Residual":
                term = "sd__Observation"
            elif r.kind == "var":
                term = f"sd__{r.term1}"
            else:
                term = f"cor__{r.term1}.{r.term2}"
            rows.append(("ran_pars", r.group, term, s.estimate, s.std_error, np.nan, np.nan, s.conf_low,
                         s.conf_high))
    out = pd.DataFrame(rows, columns=cols)
    if "ran_vals" not in wanted:
        return out
    re = res.ranef()
    vals = pd.DataFrame({"effect": "ran_vals", "group": re["group"], "level": re["level"], "term": re["term"],
                         "estimate": re["estimate"], "std_error": re["std_error"], "statistic": np.nan,
                         "p_value": np.nan, "conf_low": re["conf_low"], "conf_high": re["conf_high"]})
    out.insert(2, "level", None)
    return pd.concat([out, vals], ignore_index=True) if len(out) else vals
