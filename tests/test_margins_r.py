"""Stata's ``margins`` after ``mixed`` (:mod:`hlmbridge.results.margins`), checked two ways:

* against R's emmeans where it computes the same quantity (the module docstring's table):
  predictive margins = ``emmeans(..., counterfactuals = f)``, a factor's ``dydx`` = their
  ``trt.vs.ctrl`` contrasts, ``atmeans`` = ``emmeans(..., weights = "outer")``, a covariate's
  ``dydx`` = ``emtrends(..., weights = "proportional")``; all with ``lmer.df = "asymptotic"``
  (Stata's z), on an lmer fit evaluated at each hlmbridge engine's variance components;
* against a direct computation: the mean of ``predict(newdata, re_form="~0")`` on the fit's
  data with the variables set (no R; the same for a Stata-syntax model on HSB).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.results.margins import margins
from tests.test_emmeans_r import _R, _close

RTOL = 1e-6

# (id, package, data set, formula, REML, factor, covariate or None, the factor the covariate
# interacts with when not the first, or a second factor)
MODELS = [
    ("orthodont", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", True, "Sex", "age", None),
    ("cake_temp", "lme4", "cake", "angle ~ recipe * temp + (1 | recipe:replicate)", True, "recipe", "temp", None),
    ("bodyweight", "nlme", "BodyWeight", "weight ~ Time * Diet + (Time | Rat)", True, "Diet", "Time", None),
    ("exam", "mlmRev", "Exam", "normexam ~ standLRT * sex + schgend + (1 | school)", False, "schgend", "standLRT",
     "sex"),
    ("oats", "nlme", "Oats", "yield ~ Variety * factor(nitro) + (1 | Block/Variety)", True, "Variety", None, "nitro"),
]
ENGINES = ("lme4", "statsmodels")
CASES = [(m[0], e) for m in MODELS for e in ENGINES]
_BY_ID = {m[0]: m for m in MODELS}


@pytest.fixture(scope="module")
def rref() -> _R:
    try:
        return _R()
    except Exception as exc:
        pytest.fail(f"R reference unavailable ({exc}); install r-cran-emmeans r-cran-lmertest r-cran-pbkrtest")


def _compare(got: pd.DataFrame, col: str, want: np.ndarray, what: str) -> None:
    # emmeans: estimate, SE, df (Inf), lower, upper, z, p
    assert np.isinf(want[:, 2]).all(), what
    _close(got[[col, "std_error", "statistic", "conf_low", "conf_high"]].to_numpy(), want[:, [0, 1, 5, 3, 4]],
           what, RTOL, 1e-10)
    _close(got["p_value"], want[:, 6], f"{what}: p", RTOL, 1e-12)


@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_margins_match_emmeans(rref, mid: str, engine: str) -> None:
    _, pkg, name, formula, reml, f, x, g = _BY_ID[mid]
    rd, df = rref.data(pkg, name)
    res = hlmbridge.fit(formula, df, engine=engine, reml=reml)
    rfit = rref.model(rd, formula, reml, res)
    what = f"{mid}/{engine}"
    ref = rref.emmeans(rfit, dict(specs=[f], counterfactuals=f, df="asymptotic", method="trt.vs.ctrl",
                                  adjust="none"))
    got = margins(res, f)
    assert [str(v) for v in got.table[f]] == [str(s) for s in ref["emm_labels"]], what
    _compare(got.table, "margin", ref["emm"], f"{what}: margins {f}")
    eff = margins(res, dydx=f)
    _compare(eff.table, "dydx", ref["con"], f"{what}: margins, dydx({f})")
    ref = rref.emmeans(rfit, dict(specs=[f], weights="outer", df="asymptotic"))
    _compare(margins(res, f, atmeans=True).table, "margin", ref["emm"], f"{what}: margins {f}, atmeans")
    if x is not None:
        out = rref.env["emmeans_reference_trend"](rfit, "1", x)
        want = np.array(out[0], dtype=float).reshape(tuple(rref.ro.r["dim"](out[0])), order="F")
        _compare(margins(res, dydx=x).table, "dydx", want, f"{what}: margins, dydx({x})")
        # within the groups of the factor x interacts with, the slope is emtrends' by that factor
        xf = g or f
        out = rref.env["emmeans_reference_trend"](rfit, xf, x)
        want = np.array(out[0], dtype=float).reshape(tuple(rref.ro.r["dim"](out[0])), order="F")
        _compare(margins(res, dydx=x, over=xf).table, "dydx", want, f"{what}: margins, dydx({x}) over({xf})")


def _set(df: pd.DataFrame, var: str, value) -> pd.DataFrame:
    out = df.copy()
    col = df[var]
    if isinstance(col.dtype, pd.CategoricalDtype):
        out[var] = pd.Categorical([value] * len(df), categories=col.cat.categories, ordered=col.cat.ordered)
    else:
        out[var] = value
    return out


def _mean_prediction(res, df: pd.DataFrame) -> float:
    return float(np.nanmean(res.predict(df, re_form="~0").to_numpy()))


@pytest.mark.parametrize("engine", ENGINES)
def test_margins_equal_mean_predictions_stata_model(engine: str) -> None:
    """``margins sector, at(ses=(-1 0 1)) over(himinty)`` on HSB = mean of predict() on set data."""
    hsb = hlmbridge.datasets.hsb()
    res = hlmbridge.fit("mixed mathach i.sector##c.ses i.himinty || id: ses", hsb, engine=engine)
    got = margins(res, "sector", at={"ses": [-1.0, 0.0, 1.0]}, over="himinty").table
    assert len(got) == 2 * 3 * 2
    for row in got.itertuples(index=False):
        sub = hsb[hsb["himinty"] == row.himinty]
        want = _mean_prediction(res, _set(_set(sub, "sector", row.sector), "ses", row.ses))
        _close(row.margin, want, f"{engine}: sector={row.sector} ses={row.ses} over himinty={row.himinty}", 1e-10)
    eff = margins(res, dydx=["sector", "ses"]).table
    d_sector = _mean_prediction(res, _set(hsb, "sector", 1.0)) - _mean_prediction(res, _set(hsb, "sector", 0.0))
    h = 1e-3
    d_ses = (_mean_prediction(res, hsb.assign(ses=hsb["ses"] + h))
             - _mean_prediction(res, hsb.assign(ses=hsb["ses"] - h))) / (2 * h)
    _close(eff["dydx"], [d_sector, d_ses], f"{engine}: dydx(sector ses)", 1e-9)
    assert eff["term"].tolist() == ["sector: 1 vs 0", "ses"]
    # z and the CI as Stata prints them: from the delta-method SE of the same combination
    L = margins(res, "sector").L
    V = np.asarray(res.fixed_vcov)
    _close(margins(res, "sector").table["std_error"], np.sqrt(np.einsum("ij,jk,ik->i", L, V, L)), "SE", 1e-12)


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_margins_with_transformed_variable_need_data(rref, engine: str) -> None:
    """poly(age, 2): margins at ages (data= given) = mean of predict() on set data; without data an error."""
    _, df = rref.data("nlme", "Orthodont")
    res = hlmbridge.fit("distance ~ poly(age, 2) * Sex + (1 | Subject)", df, engine=engine)
    with pytest.raises(hlmbridge.UsageError, match="pass data="):
        margins(res, "Sex")
    got = margins(res, "Sex", at={"age": [9.0, 12.5]}, data=df).table
    for row in got.itertuples(index=False):
        want = _mean_prediction(res, _set(_set(df, "Sex", row.Sex), "age", row.age))
        _close(row.margin, want, f"{engine}: Sex={row.Sex} age={row.age}", 1e-10)
