"""Tables only a GLMM has: Stata's ``or``/``irr`` display and ``xtlogit``'s ancillary rows.

Both are transformations of the result's own estimates and covariances (no refit):

- :func:`eform_table`: exp(b), SE exp(b) se(b) (the delta method, as Stata), z and p of b,
  the CI exp(b -+ 1.96 se(b));
- :func:`xt_parameters`: ``/lnsig2u`` = log var(_cons) with SE se(var)/var and a normal CI;
  ``sigma_u`` = exp(lnsig2u / 2) and ``rho`` = var / (var + v) (the latent intra-class
  correlation; v the variance of the latent residual: pi^2/3 for the logit, 1 for the probit,
  pi^2/6 for the cloglog, as xtlogit, xtprobit and xtcloglog print it), their SEs by the delta
  method from ``/lnsig2u`` and their CIs the transformed ``/lnsig2u`` bounds;
- :func:`latent_icc`: Stata's ``estat icc`` after ``melogit``/``meprobit``/``mecloglog``: at
  each nested level, the sum of the random-intercept variances at and above it over that sum
  plus v; its SE by the delta method from the variances' covariance, and its CI the
  back-transformed logit(rho) -+ 1.96 se / (rho (1 - rho)), as ``estat icc`` after ``mixed``
  (Stata's manual, [ME] estat icc; for one level the interval is xtlogit's rho interval).

Examples
--------
>>> round(LATENT_VARIANCE["logit"], 6), LATENT_VARIANCE["probit"]   # logistic and normal variances
(3.289868, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UnsupportedSpecError

__all__ = ["ENGINE_RANEF_SOURCE", "LATENT_VARIANCE", "LOGISTIC_VARIANCE", "eform_table", "engine_ranef_frame", "latent_icc",
           "xt_parameters"]

#: What a GLMM's ranef() frame holds (its ``attrs["source"]``).
ENGINE_RANEF_SOURCE = ("glmer's ranef(condVar = TRUE): conditional modes and conditional SDs, as the lme4 engine "
                       "returns them (not Stata's empirical Bayes means, predict, reffects ebmeans)")

#: The variance of the standard logistic distribution, the latent residual of a logit model.
LOGISTIC_VARIANCE = math.pi**2 / 3
#: The latent residual's variance by link: logistic (pi^2/3), standard normal (1) and the
#: standard minimum extreme-value distribution of the cloglog (pi^2/6).
LATENT_VARIANCE: dict[str, float] = {"logit": LOGISTIC_VARIANCE, "probit": 1.0, "cloglog": math.pi**2 / 6}
_Z_95 = 1.959963984540054


def _require_glmm(res: Any, what: str) -> None:
    if not res.spec.is_glmm:
        raise UnsupportedSpecError(what, res.engine, message=f"{what} belongs to a GLMM (family binomial or poisson); "
                                   "this is a linear mixed model.")


def eform_table(res: Any) -> pd.DataFrame:
    """Stata's ``or`` (binomial, logit) / ``irr`` (Poisson) table, one row per fixed effect."""
    _require_glmm(res, "eform()")
    if res.spec.link == "probit":
        raise UnsupportedSpecError("eform()", res.engine, message=(
            "eform() exponentiates coefficients on the log-odds (logit), log-rate (Poisson) or cloglog scale; a "
            "probit coefficient's exponential means nothing (Stata's meprobit has no or/eform option)."))
    fx = res.fixed
    b = fx["estimate"].to_numpy()
    se = fx["std_error"].to_numpy()
    eb = np.exp(b)
    return pd.DataFrame({
        "term": fx["term"], "stata_term": fx["stata_term"],
        "estimate": eb, "std_error": eb * se, "statistic": fx["statistic"], "p_value": fx["p_value"],
        "conf_low": np.exp(fx["conf_low"].to_numpy()), "conf_high": np.exp(fx["conf_high"].to_numpy()),
    })


def xt_parameters(res: Any) -> pd.DataFrame:
    """``/lnsig2u``, ``sigma_u`` and ``rho`` of a random-intercept binomial model (``xtlogit``,
    ``xtprobit``, ``xtcloglog ..., re``); rho on the latent scale of the link (:data:`LATENT_VARIANCE`)."""
    _require_glmm(res, "xt_parameters()")
    rnd = res.random
    if res.spec.family != "binomial" or len(rnd) != 1 or rnd["stata_term"].iloc[0] != "var(_cons)":
        raise UnsupportedSpecError("xt_parameters()", res.engine, message=(
            "xt_parameters() gives xtlogit's (xtprobit's, xtcloglog's) /lnsig2u, sigma_u and rho, which belong to a "
            "random-intercept binomial model with one grouping level."))
    latent = LATENT_VARIANCE[res.spec.link]
    var = float(rnd["estimate"].iloc[0])
    se_var = float(rnd["std_error"].iloc[0])
    ln = math.log(var)
    se_ln = se_var / var
    lo, hi = ln - _Z_95 * se_ln, ln + _Z_95 * se_ln
    sigma = math.exp(ln / 2)

    def rho_of(x: float) -> float:
        return math.exp(x) / (math.exp(x) + latent)

    rho = rho_of(ln)
    rows = [
        ("/lnsig2u", ln, se_ln, lo, hi),
        ("sigma_u", sigma, sigma * se_ln / 2, math.exp(lo / 2), math.exp(hi / 2)),
        ("rho", rho, rho * (1 - rho) * se_ln, rho_of(lo), rho_of(hi)),
    ]
    return pd.DataFrame(rows, columns=["stata_term", "estimate", "std_error", "conf_low", "conf_high"])


def latent_icc(res: Any) -> pd.DataFrame:
    """Stata's ``estat icc`` for a binomial GLMM: the latent-scale intra-class correlation per
    nested level (columns of :func:`hlmbridge.results.postestimation.icc`).

    The latent residual's variance is :data:`LATENT_VARIANCE` of the link. Random slopes are
    conditioned at zero (only ``var(_cons)`` enters), as Stata does; crossed factors and the
    Poisson and negative binomial families are refused (Stata's ``estat icc`` is not available
    after ``mepoisson``/``menbreg``: a count model has no latent residual variance).
    """
    from hlmbridge.errors import UsageError

    _require_glmm(res, "icc() (estat icc)")
    spec = res.spec
    if spec.family != "binomial":
        raise UnsupportedSpecError("icc() (estat icc)", res.engine, message=(
            f"estat icc is defined for a binomial GLMM on the latent scale of its link (residual variance pi^2/3, "
            f"1, pi^2/6); a {spec.family} model has no latent residual variance, and Stata's estat icc is not "
            f"available after mepoisson or menbreg."))
    if not all(lv.nested for lv in spec.levels):
        raise UnsupportedSpecError("icc() (estat icc)", res.engine, message=(
            "estat icc is for nested grouping levels; this model has crossed random effects (Stata does not "
            "compute it for crossed-effects models either)."))
    latent = LATENT_VARIANCE[spec.link]
    rnd = res.random
    theta = rnd["estimate"].to_numpy(dtype=float)
    V = np.asarray(res.random_vcov, dtype=float)
    cons = []
    for g in res.groups:
        hit = np.flatnonzero((rnd["group"] == g.group).to_numpy() & (rnd["stata_term"] == "var(_cons)").to_numpy())
        if hit.size == 0:
            raise UsageError(f"estat icc needs a random intercept at every level ({g.group!r} has none)")
        cons.append(int(hit[0]))
    from hlmbridge.results.postestimation import icc_rows

    rows = icc_rows(res.groups, theta, V, cons, cons, constant=latent)
    out = pd.DataFrame(rows, columns=["level", "estimate", "std_error", "conf_low", "conf_high"])
    has_covariates = any(t != "_cons" for t in res.fixed["stata_term"])
    out.attrs["title"] = "Residual intraclass correlation" if has_covariates else "Intraclass correlation"
    out.attrs["scale"] = f"latent ({spec.link} link: residual variance {latent:.6g})"
    return out


def engine_ranef_frame(res: Any, level: float = 0.95) -> pd.DataFrame:
    """A GLMM's random effects from the engine (glmer's ``ranef(condVar = TRUE)``), in the
    columns of :meth:`FitResult.ranef`: one row per grouping factor, level and term, the
    conditional mode, its conditional SD and the normal interval at ``level``."""
    from statistics import NormalDist

    from hlmbridge.errors import UsageError
    from hlmbridge.results.random_effects import RANEF_COLUMNS

    _require_glmm(res, "engine_ranef_frame()")
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1, got {level!r}")
    if not res.engine_ranef:
        raise UnsupportedSpecError("ranef()", res.engine, message=(
            f"this {res.spec.family} GLMM result holds no random effects from its engine."))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    df = pd.DataFrame(list(res.engine_ranef), columns=["group", "level", "term", "estimate", "std_error"])
    order = {k: i for i, k in enumerate(dict.fromkeys(df["group"]))}
    # glmer lists each factor's terms one after another, all levels each: made level-major, as ranef()
    df = df.assign(_g=df["group"].map(order), _l=df.groupby(["group", "term"]).cumcount())
    df = df.sort_values(["_g", "_l"], kind="stable").drop(columns=["_g", "_l"]).reset_index(drop=True)
    df["stata_term"] = df["term"].map(lambda t: "_cons" if t == "(Intercept)" else t)
    df["conf_low"] = df["estimate"] - z * df["std_error"]
    df["conf_high"] = df["estimate"] + z * df["std_error"]
    out = df[list(RANEF_COLUMNS)]
    out.attrs["source"] = ENGINE_RANEF_SOURCE
    return out
