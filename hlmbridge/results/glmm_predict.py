"""A GLMM's fitted values, residuals and predictions, as glmer's ``fitted``, ``residuals`` and ``predict``.

The linear predictor is ``eta = X beta + offset + Z b`` with ``b`` the engine's conditional
modes (glmer's ``ranef``: the random effects the fit's PIRLS ends at; see
:func:`hlmbridge.results.glmm.engine_ranef_frame`); the mean is ``mu = linkinv(eta)``
(:mod:`hlmbridge.families`).

- :func:`glmm_fitted`: ``mu`` on the fit's rows, glmer's ``fitted(m)`` (response scale);
  ``level`` as for linear models (None every grouping factor, 0 none, k the k outermost).
- :func:`glmm_residuals`: glmer's ``residuals(m, type = kind)``: ``"response"`` ``y - mu``,
  ``"pearson"`` ``(y - mu) sqrt(w / V(mu))``, ``"deviance"`` ``sign(y - mu) sqrt(d_i)``,
  ``"working"`` ``(y - mu) / (d mu / d eta)``. glmer's default type is ``"deviance"``;
  hlmbridge's ``residuals()`` defaults to ``"response"`` for every model, so name the kind.
- :func:`glmm_predict`: glmer's ``predict(m, newdata, re.form, type, allow.new.levels = TRUE)``:
  ``type="link"`` (eta, glmer's default) or ``"response"`` (mu); ``re_form=None`` uses the
  conditional modes, ``"~0"`` sets every random effect to 0 (glmer's ``re.form = NA``: the
  conditional mean at b = 0, *not* the population average, which integrates b out: see
  :mod:`hlmbridge.results.population_averaged`). A group the fit did not see gets 0 for
  its grouping factor (``allow.new.levels = TRUE``), counted in ``n_new_levels``.

All three use the conditional modes, as glmer does: Stata's ``predict`` after ``melogit``/
``mepoisson`` uses the empirical Bayes *means* by default for ``mu``, ``pearson`` and
``deviance`` (its ``modes`` option gives these numbers); the means are
:meth:`FitResult.ebmeans() <hlmbridge.results.fit_result.FitResult.ebmeans>`.

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> fam = family("binomial")
>>> y, eta = np.array([1.0, 0.0]), np.array([0.0, 0.0])
>>> _residual(fam, "working", y, eta, None).tolist()   # (y - 1/2) / (1/4)
[2.0, -2.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hlmbridge.errors import FitError, UnsupportedSpecError, UsageError
from hlmbridge.families import Family, family

__all__ = ["RESIDUAL_KINDS", "glmm_fitted", "glmm_modes", "glmm_predict", "glmm_residuals", "level_covariances",
           "result_family"]

#: glmer's residual types (``residuals(m, type = ...)``).
RESIDUAL_KINDS = ("response", "pearson", "deviance", "working")
_TYPES = ("link", "response")
_NO_RANDOM = ("~0", "~ 0", "NA", "na")


def result_family(res: object) -> Family:
    """The :class:`~hlmbridge.families.Family` of a GLMM result (its spec's family and link)."""
    spec = res.spec  # type: ignore[attr-defined]
    if spec.family == "negative_binomial":  # its variance and density need the estimated alpha
        from hlmbridge.families import negative_binomial

        anc = {row[0]: row[1] for row in res.ancillary_rows}  # type: ignore[attr-defined]
        if "alpha" not in anc:
            raise FitError("this negative binomial result holds no dispersion (alpha)")
        return negative_binomial(float(anc["alpha"]), spec.link)
    return family(spec.family, spec.link)


def level_covariances(res: object) -> list[np.ndarray]:
    """Each grouping factor's random-effects covariance matrix D (from the result's ``random``
    table), in the design's lme4 term order."""
    rnd = res.random  # type: ignore[attr-defined]
    out = []
    for ld in res.design.levels:  # type: ignore[attr-defined]
        terms = list(ld.terms_lme4)
        D = np.zeros((len(terms), len(terms)))
        for row in rnd[rnd["group"] == ld.name].itertuples():
            i = terms.index(row.term1)
            if row.kind == "var":
                D[i, i] = row.estimate
            else:
                j = terms.index(row.term2)
                D[i, j] = D[j, i] = row.estimate
        out.append(D)
    return out


def glmm_modes(res: object) -> tuple[np.ndarray, ...]:
    """The engine's conditional modes per grouping factor of the design, ``(n_groups, q)``
    arrays in the design's group-code and lme4 term order."""
    from hlmbridge.results.random_effects import require_design

    design = require_design(res, "the random effects' predictions")
    rows = res.engine_ranef  # type: ignore[attr-defined]
    if not rows:
        raise UnsupportedSpecError("predictions with random effects", res.engine,  # type: ignore[attr-defined]
                                   message="this GLMM result holds no conditional modes from its engine.")
    table = {(str(g), str(lv), str(t)): float(m) for g, lv, t, m, _ in rows}
    out = []
    for ld in design.levels:
        modes = np.empty((ld.n_groups, len(ld.terms_lme4)))
        for i, label in enumerate(ld.group_labels):
            for j, term in enumerate(ld.terms_lme4):
                key = (ld.key, str(label), term)
                if key not in table:
                    raise FitError(f"the engine returned no conditional mode for {term} of group {label!r} of "
                                   f"{ld.key}", engine=res.engine)  # type: ignore[attr-defined]
                modes[i, j] = table[key]
        out.append(modes)
    return tuple(out)


def _eta(res: object, level: int | None) -> np.ndarray:
    """The linear predictor on the fit's rows with the conditional modes of the first ``level``
    grouping factors (every one when None)."""
    from hlmbridge.results.prediction import linear_predictor

    return linear_predictor(res, level, glmm_modes(res))


def _index(res: object) -> pd.Index:
    return pd.Index(res.design.rows, name="row")  # type: ignore[attr-defined]


def glmm_fitted(res: object, level: int | None = None) -> pd.Series:
    """glmer's ``fitted(m)``: the conditional mean ``mu`` on the fit's rows (response scale)."""
    mu = result_family(res).link.linkinv(_eta(res, level))
    return pd.Series(mu, index=_index(res), name="fitted")


def _residual(fam: Family, kind: str, y: np.ndarray, eta: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    mu = fam.link.linkinv(eta)
    if kind == "response":
        return y - mu
    if kind == "pearson":
        return fam.pearson_residuals(y, mu, weights)
    if kind == "deviance":
        return fam.deviance_residuals(y, mu, weights)
    return (y - mu) / fam.link.mu_eta(eta)


def glmm_residuals(res: object, kind: str = "response", level: int | None = None) -> pd.Series:
    """glmer's ``residuals(m, type = kind)`` (see the module docstring for the kinds)."""
    if kind not in RESIDUAL_KINDS:
        raise UsageError(f"kind must be one of {', '.join(map(repr, RESIDUAL_KINDS))} for a GLMM, got {kind!r}")
    design = res.design  # type: ignore[attr-defined]
    r = _residual(result_family(res), kind, np.asarray(design.y, dtype=float), _eta(res, level), design.weights)
    return pd.Series(r, index=_index(res), name=kind)


def glmm_predict(res: object, newdata: pd.DataFrame | None = None, re_form: str | None = None,
                 type: str = "link") -> object:
    """glmer's ``predict(m, newdata, re.form, type, allow.new.levels = TRUE)``: a
    :class:`~hlmbridge.results.prediction.Prediction` on the link (default) or response scale."""
    from hlmbridge.results.prediction import Prediction
    from hlmbridge.results.random_effects import estimates_of, require_design

    if type not in _TYPES:
        raise UsageError(f"type must be 'link' or 'response', got {type!r}")
    if re_form is not None and (not isinstance(re_form, str) or re_form.strip() not in _NO_RANDOM):
        raise UsageError(f"re_form must be None (every random effect) or '~0' (none), got {re_form!r}")
    random = re_form is None
    design = require_design(res, "predictions")
    inv = result_family(res).link.linkinv if type == "response" else (lambda e: e)
    if newdata is None:
        values = pd.Series(inv(_eta(res, None if random else 0)), index=_index(res), name="prediction")
        return Prediction(values, 0, 0)
    from hlmbridge.design.newdata import new_design

    nd = new_design(design, newdata, random=random)
    beta, _ = estimates_of(res)
    with np.errstate(invalid="ignore"):
        eta = nd.X @ beta
    if nd.offset is not None:
        eta = eta + nd.offset
    if random:
        for lv, modes in zip(nd.levels, glmm_modes(res), strict=True):
            seen = lv.codes >= 0
            b = np.where(seen[:, None], modes[np.maximum(lv.codes, 0)], 0.0)
            eta = eta + np.einsum("ij,ij->i", np.nan_to_num(lv.Z), b)
    eta = np.where(nd.missing, np.nan, eta)
    with np.errstate(invalid="ignore"):
        values = np.where(nd.missing, np.nan, inv(np.nan_to_num(eta)))
    return Prediction(pd.Series(values, index=newdata.index, name="prediction"), nd.n_new if random else 0,
                      int(nd.missing.sum()))
