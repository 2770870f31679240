"""Population-averaged quantities of a GLMM: the random effects integrated out.

A GLMM's coefficients are conditional on the random effects; averaged over them, the mean of a
row with linear predictor ``eta`` (fixed part and offset) is

    E[y] = integral linkinv(eta + z' b) N(b; 0, D) db = integral linkinv(eta + s t) phi(t) dt,

a one-dimensional integral for any random part, since ``z' b`` is normal with variance
``s^2 = sum over grouping factors of z' D z`` (the factors are independent). It is computed by
Gauss-Hermite quadrature with ``k`` points (for one scalar random intercept this is the sum
Stata's ``predict, marginal`` and the hospital page's ``mata`` block compute; for random slopes
it is the integral Stata's k^q-point product rule approximates, reduced exactly to one dimension,
so at equal k the two approximations differ by their quadrature errors, not in what they compute). The rule is not
adaptive (there are no responses to adapt to): for a large random-intercept SD it needs many
points (logit, SD 3: 12 points are 1e-3 off the integral, 60 points 5e-8).

- :func:`marginal_predict`: Stata's ``predict, marginal`` (population-averaged probabilities
  or rates), on the fit's rows or on new data;
- :func:`population_averaged_ratio`: the population-averaged odds ratio (binomial) or rate
  ratio (Poisson) between two covariate settings;
- :func:`manifest_association`: ``xtrho``'s measures of intra-class manifest association
  (Rodriguez and Elo 2003, Stata Journal 3(1), st0031) of a random-intercept binary model:
  for two members of a group with linear predictor ``m`` (by default the median over the fit's
  rows), the marginal probability ``p = E[pi]``, the joint probability ``p11 = E[pi^2]``, the
  odds ratio ``p11 p00 / (p10 p01)``, Pearson's r ``(p11 - p^2) / (p (1 - p))`` and Yule's Q
  ``(OR - 1) / (OR + 1)``; each CI is the measure at the bounds of the CI of ``log var(u)``
  (xtlogit's ``/lnsig2u``), as xtrho prints them. The median is over the fit's rows (births in
  the hospital data, not mothers: that is the median reproducing xtrho's table).

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> round(float(marginal_mean(family("binomial").link, np.array([0.0]), np.array([4.0]), 12)[0]), 12)  # symmetric
0.5
>>> import math   # xtrho's hospital table at xtlogit's printed /lnsig2u and median linear predictor
>>> m = manifest_measures(family("binomial").link, -1.4877935, math.exp(0.4372018 / 2), 100)
>>> [round(v, 6) for v in m]   # printed: .239252 .093807 2.72847 .200894 .463586
[0.239252, 0.093807, 2.728466, 0.200894, 0.463586]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.families import Link

__all__ = ["MANIFEST_MEASURES", "XTRHO_POINTS", "manifest_association", "manifest_measures", "marginal_mean",
           "marginal_predict", "normal_quadrature", "population_averaged_ratio", "row_variances"]

#: xtrho's rows, in its order.
MANIFEST_MEASURES = ("Marginal prob.", "Joint prob.", "Odds ratio", "Pearson's r", "Yule's Q")
#: Points for xtrho's integrals. Its printed numbers are those of the exact integral: at xtlogit's
#: printed estimates 60 points reproduce every printed digit of the hospital table, 12 points are
#: 1.8e-4 relative off the odds ratio's upper bound (4.284898 against 4.28414), 24 points 1e-5.
XTRHO_POINTS = 100


def normal_quadrature(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``points``-point Gauss-Hermite quadrature for the standard normal:
    ``E g(t) ~ sum w g(t)`` (nodes ``sqrt(2) x``, weights ``w / sqrt(pi)``, as the mata block).

    >>> t, w = normal_quadrature(5)
    >>> round(float(w @ t**2), 12)
    1.0
    """
    from hlmbridge.results.eb_means import gauss_hermite

    x, w = gauss_hermite(points)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def marginal_mean(link: Link, eta: np.ndarray, variance: np.ndarray, points: int) -> np.ndarray:
    """``E linkinv(eta + s t)``, ``t ~ N(0, 1)``, ``s^2 = variance``, by ``points``-point Gauss-Hermite."""
    t, w = normal_quadrature(points)
    eta = np.asarray(eta, dtype=float)
    s = np.sqrt(np.asarray(variance, dtype=float))
    return link.linkinv(eta[:, None] + s[:, None] * t[None, :]) @ w


def _require_glmm(res: Any, what: str) -> None:
    if not res.spec.is_glmm:
        raise UnsupportedSpecError(what, res.engine, message=(
            f"{what} integrates a GLMM's random effects out; a linear model's population average is its "
            "fixed part (predict(re_form='~0'))."))


def row_variances(res: Any, Zs: list[np.ndarray]) -> np.ndarray:
    """``sum_l z_l' D_l z_l`` per row: the variance of the random part of each row's linear predictor."""
    from hlmbridge.results.glmm_predict import level_covariances

    return sum((np.einsum("ij,jk,ik->i", Z, D, Z) for Z, D in zip(Zs, level_covariances(res), strict=True)),
               start=np.zeros(Zs[0].shape[0]))


def _points(res: Any, points: int | None) -> int:
    from hlmbridge.results.eb_means import _points as fit_points

    return fit_points(res, points)


def _eta_and_variance(res: Any, newdata: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, pd.Index, np.ndarray]:
    from hlmbridge.results.random_effects import estimates_of, require_design

    design = require_design(res, "population-averaged predictions")
    beta, _ = estimates_of(res)
    if newdata is None:
        eta = design.X @ beta
        if design.offset is not None:
            eta = eta + design.offset
        return eta, row_variances(res, [ld.Z for ld in design.levels]), pd.Index(design.rows, name="row"), \
            np.zeros(len(eta), dtype=bool)
    from hlmbridge.design.newdata import new_design

    slopes = any(ld.Z.shape[1] > 1 or not np.all(ld.Z == 1) for ld in design.levels)
    nd = new_design(design, newdata, random=slopes)  # random slopes need their columns on the new rows
    with np.errstate(invalid="ignore"):
        eta = nd.X @ beta
    if nd.offset is not None:
        eta = eta + nd.offset
    Zs = [np.nan_to_num(lv.Z) for lv in nd.levels] if slopes else [np.ones((len(eta), 1)) for _ in design.levels]
    return np.nan_to_num(eta), row_variances(res, Zs), newdata.index, nd.missing


def marginal_predict(res: Any, newdata: pd.DataFrame | None = None, points: int | None = None) -> Any:
    """Stata's ``predict, marginal``: each row's mean with the random effects integrated out
    (response scale), on the fit's rows or ``newdata``; ``points`` defaults to the fit's
    integration points (Laplace fits must name it). A
    :class:`~hlmbridge.results.prediction.Prediction` (NaN where a needed value is missing)."""
    from hlmbridge.results.glmm_predict import result_family
    from hlmbridge.results.prediction import Prediction

    _require_glmm(res, "marginal_predict()")
    k = _points(res, points)
    eta, var, index, missing = _eta_and_variance(res, newdata)
    mu = np.where(missing, np.nan, marginal_mean(result_family(res).link, eta, var, k))
    return Prediction(pd.Series(mu, index=index, name="marginal"), 0, int(missing.sum()))


def population_averaged_ratio(res: Any, at0: Mapping[str, Any], at1: Mapping[str, Any],
                              points: int | None = None) -> dict[str, float]:
    """The population-averaged odds ratio (binomial) or rate ratio (Poisson) of covariate
    setting ``at1`` against ``at0`` (each a value for every fixed-part variable): the two
    marginal means ``mu0``, ``mu1`` (:func:`marginal_predict`) and their ratio."""
    _require_glmm(res, "population_averaged_ratio()")
    for name, at in (("at0", at0), ("at1", at1)):
        if not isinstance(at, Mapping):
            raise UsageError(f"{name} must be a mapping of variable names to values, got {type(at).__name__}")
    frame = pd.DataFrame([dict(at0), dict(at1)], index=["at0", "at1"])
    mu = marginal_predict(res, frame, points).values
    if mu.isna().any():
        raise UsageError("at0 and at1 need a value for every variable of the model's fixed part")
    mu0, mu1 = float(mu["at0"]), float(mu["at1"])
    if res.spec.family == "binomial":
        return {"mu0": mu0, "mu1": mu1, "odds_ratio": (mu1 / (1 - mu1)) / (mu0 / (1 - mu0))}
    return {"mu0": mu0, "mu1": mu1, "rate_ratio": mu1 / mu0}


def manifest_measures(link: Link, eta: float, sigma: float, points: int) -> tuple[float, float, float, float, float]:
    """xtrho's five measures at linear predictor ``eta`` and random-intercept SD ``sigma``."""
    t, w = normal_quadrature(points)
    pi = link.linkinv(eta + sigma * t)
    p = float(pi @ w)
    p11 = float(pi**2 @ w)
    odds = p11 * (1 - 2 * p + p11) / (p - p11) ** 2
    return p, p11, odds, (p11 - p * p) / (p * (1 - p)), (odds - 1) / (odds + 1)


def manifest_association(res: Any, at: float | None = None, points: int = XTRHO_POINTS,
                         level: float = 0.95) -> pd.DataFrame:
    """``xtrho``: the manifest intra-class measures of a random-intercept binary GLMM at the
    linear predictor ``at`` (None: the median of the fit's rows' fixed part, xtrho's default),
    with CIs from the bounds of ``log var(u)``'s normal CI at ``level``."""
    from hlmbridge.results.glmm_predict import result_family
    from hlmbridge.results.random_effects import estimates_of, require_design

    _require_glmm(res, "xtrho()")
    design = require_design(res, "xtrho()")
    rnd = res.random
    if res.spec.family != "binomial" or len(design.levels) != 1 or len(rnd) != 1 \
            or rnd["stata_term"].iloc[0] != "var(_cons)":
        raise UnsupportedSpecError("xtrho()", res.engine, message=(
            "xtrho() measures the association of two binary responses of one group: it needs a binomial "
            "model with one random intercept at one grouping level."))
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1, got {level!r}")
    if at is None:
        beta, _ = estimates_of(res)
        eta = design.X @ beta
        if design.offset is not None:
            eta = eta + design.offset
        at = float(np.median(eta))
    elif isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise UsageError(f"at must be a linear-predictor value (a finite number) or None, got {at!r}")
    var = float(rnd["estimate"].iloc[0])
    se_ln = float(rnd["std_error"].iloc[0]) / var
    z = NormalDist().inv_cdf(0.5 + level / 2)
    link = result_family(res).link
    est = manifest_measures(link, float(at), math.sqrt(var), points)
    bounds = [manifest_measures(link, float(at), math.exp((math.log(var) + sgn * z * se_ln) / 2), points)
              for sgn in (-1, 1)]
    out = pd.DataFrame({"measure": MANIFEST_MEASURES, "estimate": est,
                        "conf_low": np.minimum(bounds[0], bounds[1]), "conf_high": np.maximum(bounds[0], bounds[1])})
    out.attrs["linear_predictor"] = float(at)
    out.attrs["points"] = points
    return out
