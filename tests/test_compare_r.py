"""Model comparison checked against R: lme4's ``anova(m0, m1, ...)``, lmerTest's ``ranova`` and
``drop1``, pbkrtest's ``KRmodcomp`` and ``SATmodcomp`` (:mod:`hlmbridge.results.compare`).

R's numbers come from ``r/tests/compare_reference.R`` (with ``df_reference.R`` and
``anova_reference.R``), sourced into a private rpy2 environment. ``anova`` and ``ranova`` compare
optima (R's fits with tight bobyqa settings, refits included, against each engine's own fits and
hlmbridge's ML refit of a REML fit); ``drop1``, ``KRmodcomp`` and ``SATmodcomp`` are computed in R
on an lmer fit evaluated at the variance components each engine estimated, so both sides work at
the same point (as ``tests/test_anova_r.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hlmbridge
from tests.r_reference import RScripts
from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.results.compare import REFIT_NOTE, anova, drop1, kr_modcomp, ranova, sat_modcomp

REPO = Path(__file__).resolve().parents[1]
R_FILES = tuple(REPO / "r" / "tests" / f for f in ("df_reference.R", "anova_reference.R", "glmm_exact.R",
                                                   "compare_reference.R"))
RTOL = 1e-6
# Two optima (R's tight bobyqa and an engine's) agree in the log likelihood to about 1e-10 absolute (measured: at most 6e-11);
# a chi-square is a difference of two of them.
LL_ATOL = 1e-8


class _R(RScripts):
    def __init__(self) -> None:
        super().__init__(R_FILES)

    def at(self, res: hlmbridge.FitResult):
        return self.variance_rows(res)

    def call(self, fn: str, *args) -> dict:
        return self.arrays(self.env[fn](*args))


@pytest.fixture(scope="module")
def rref() -> _R:
    try:
        return _R()
    except Exception as exc:  # a package missing: say what to install
        pytest.fail(f"R reference unavailable ({exc}); install r-cran-lmertest r-cran-pbkrtest r-cran-mlmrev")


# (id, package, data set, the large model, the small model (fewer fixed effects), Kenward-Roger too)
MODELS = [
    ("sleepstudy", "lme4", "sleepstudy", "Reaction ~ Days * cut(Days, c(-1, 2, 5, 9)) + (Days | Subject)",
     "Reaction ~ Days + (Days | Subject)", True),
    ("orthodont", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)",
     "distance ~ age + Sex + (age | Subject)", True),
    ("cake", "lme4", "cake", "angle ~ recipe * temperature + (1 | recipe:replicate)",
     "angle ~ recipe + temperature + (1 | recipe:replicate)", True),
    ("oats", "nlme", "Oats", "yield ~ Variety * factor(nitro) + (1 | Block/Variety)",
     "yield ~ Variety + factor(nitro) + (1 | Block/Variety)", True),
    ("machines", "nlme", "Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)",
     "score ~ 1 + (1 | Worker) + (1 | Worker:Machine)", True),
    ("exam", "mlmRev", "Exam", "normexam ~ standLRT * sex + schgend + (1 | school)",
     "normexam ~ standLRT + sex + schgend + (1 | school)", False),
]
ENGINES = ("lme4", "statsmodels")
CASES = [(m[0], e) for m in MODELS for e in ENGINES]
_BY_ID = {m[0]: m for m in MODELS}


def _close(actual, expected, what: str, rtol: float = RTOL, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol,
                               err_msg=what)


_FITS: dict = {}


def _fit(rref: _R, mid: str, which: str, engine: str, reml: bool) -> hlmbridge.FitResult:
    key = (mid, which, engine, reml)
    if key not in _FITS:
        _, pkg, name, large, small, _ = _BY_ID[mid]
        _FITS[key] = hlmbridge.fit(large if which == "large" else small, rref.data(pkg, name)[1], engine=engine,
                                   reml=reml)
    return _FITS[key]


# ---- anova(m0, m1) --------------------------------------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
@pytest.mark.parametrize("reml", [True, False])
def test_anova_of_two_models_matches_lme4(rref: _R, mid: str, engine: str, reml: bool) -> None:
    _, pkg, name, large, small, _ = _BY_ID[mid]
    big, sm = _fit(rref, mid, "large", engine, reml), _fit(rref, mid, "small", engine, reml)
    got = anova(big, sm, names=("m1", "m2"))  # the large model first: rows come back by npar
    ref = rref.call("compare_reference_anova", rref.data(pkg, name)[0], rref.ro.StrVector([large, small]), reml)
    what = f"{mid}/{engine}/{'REML' if reml else 'ML'}"
    assert got["model"].tolist() == list(ref["models"]), what
    want = np.atleast_2d(ref["table"])  # npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)
    _close(got["npar"], want[:, 0], f"{what}: npar", 0)
    _close(got[["aic", "bic", "loglik", "deviance"]].to_numpy(), want[:, 1:5], f"{what}: AIC BIC logLik deviance",
           RTOL, LL_ATOL)
    _close(got["chisq"].iloc[1], want[1, 5], f"{what}: Chisq", RTOL, 2 * LL_ATOL)
    _close(got["df"].iloc[1], want[1, 6], f"{what}: Df", 0)
    _close(got["p_value"].iloc[1], want[1, 7], f"{what}: Pr(>Chisq)", 1e-5, 1e-12)
    assert np.isnan(got["chisq"].iloc[0]) and np.isnan(got["p_value"].iloc[0])
    assert got.attrs["notes"] == ((REFIT_NOTE,) if reml else ()), what
    assert (str(ref["message"][0]) == REFIT_NOTE) == reml


@pytest.mark.requires_r
def test_anova_of_three_models_and_refit_false(rref: _R) -> None:
    """Three sleepstudy models in any order come back sorted by npar, each tested against the one
    before it; ``refit=False`` keeps the REML criteria (here: the same fixed effects)."""
    d_r, d = rref.data("lme4", "sleepstudy")
    forms = ["Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject)",
             "Reaction ~ Days + I(Days^2) + (Days | Subject)"]
    fits = [hlmbridge.fit(f, d, engine="lme4") for f in forms]
    got = anova(*fits, names=("m1", "m2", "m3"))
    ref = rref.call("compare_reference_anova", d_r, rref.ro.StrVector(forms), True)
    assert got["model"].tolist() == list(ref["models"]) == ["m2", "m1", "m3"]
    want = np.atleast_2d(ref["table"])
    _close(got[["aic", "bic", "loglik", "deviance"]].to_numpy(), want[:, 1:5], "three models", RTOL, LL_ATOL)
    _close(got["chisq"].iloc[1:], want[1:, 5], "three models: Chisq", RTOL, 2 * LL_ATOL)
    _close(got["p_value"].iloc[1:], want[1:, 7], "three models: p", 1e-5, 1e-12)
    same = anova(fits[1], fits[0], refit=False)
    assert same.attrs["notes"] == ()
    _close(same["loglik"], [fits[1].loglik, fits[0].loglik], "refit=False: the REML criteria", 0)


def test_anova_refuses_different_rows_and_takes_one_model_as_lmertest() -> None:
    ss = hlmbridge.datasets.sleepstudy()
    m1 = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine="statsmodels")
    m0 = hlmbridge.fit("Reaction ~ 1 + (1 | Subject)", ss.iloc[:170], engine="statsmodels")
    with pytest.raises(UsageError, match="same observations"):
        anova(m1, m0)
    shuffled = ss.assign(Reaction=ss["Reaction"].sample(frac=1.0, random_state=1).to_numpy())
    m2 = hlmbridge.fit("Reaction ~ 1 + (1 | Subject)", shuffled, engine="statsmodels")
    with pytest.raises(UsageError, match="different rows or responses"):
        anova(m1, m2)
    with pytest.raises(UsageError, match="takes refit= and names= only"):
        anova(m1, m1, ddf="Satterthwaite")
    with pytest.raises(UsageError, match="names must be 2"):
        anova(m1, m1, names=("a",))
    m0 = hlmbridge.fit("Reaction ~ 1 + (1 | Subject)", ss, engine="statsmodels")
    assert anova(m1, m0)["model"].tolist() == ["Reaction ~ 1 + (1 | Subject)", "Reaction ~ Days + (1 | Subject)"]
    assert anova(m1, m1)["model"].tolist() == ["MODEL1", "MODEL2"]  # lme4's generic names for equal ones
    one = hlmbridge.anova(m1)  # lmerTest's anova(m): the type III table
    assert one["term"].tolist() == ["Days"]
    assert one.attrs["heading"] == "Type III Analysis of Variance Table with Satterthwaite's method"
    assert hlmbridge.anova(m1, ddf="Kenward-Roger")["df_method"].tolist() == ["kenward-roger"]


# ---- drop1 ---------------------------------------------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_drop1_matches_lmertest(rref: _R, mid: str, engine: str) -> None:
    _, pkg, name, large, _, kr = _BY_ID[mid]
    res = _fit(rref, mid, "large", engine, True)
    for ddf in ("Satterthwaite", "Kenward-Roger") if kr else ("Satterthwaite",):
        got = res.drop1(ddf)
        ref = rref.call("compare_reference_drop1", rref.data(pkg, name)[0], large, True, rref.at(res), ddf)
        what = f"{mid}/{engine}: drop1 {ddf}"
        assert got["term"].tolist() == list(ref["terms"]), what
        want = np.atleast_2d(ref["table"])
        _close(got[["sum_sq", "mean_sq", "num_df", "den_df", "f_value"]].to_numpy(), want[:, :5], what)
        _close(got["p_value"], want[:, 5], f"{what}: p", RTOL, 1e-12)
        assert got.attrs["heading"].startswith("Single term deletions using")


# ---- KRmodcomp / SATmodcomp ---------------------------------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_kr_and_sat_modcomp_match_pbkrtest(rref: _R, mid: str, engine: str) -> None:
    _, pkg, name, large, small, kr = _BY_ID[mid]
    big, sm = _fit(rref, mid, "large", engine, True), _fit(rref, mid, "small", engine, True)
    ref = rref.call("compare_reference_modcomp", rref.data(pkg, name)[0], large, small, rref.at(big))
    what = f"{mid}/{engine}"
    sat = sat_modcomp(big, sm)
    _close(sat[["f_value", "ndf", "ddf"]].to_numpy()[0], ref["sat"][:3], f"{what}: SATmodcomp F, ndf, ddf")
    _close(sat["p_value"], ref["sat"][3:], f"{what}: SATmodcomp p", RTOL, 1e-12)
    # the same hypothesis: L spans pbkrtest's rows (equal projections onto the row space)
    L, R = sat.attrs["L"], np.atleast_2d(ref["L"])
    _close(L.T @ np.linalg.pinv(L.T), R.T @ np.linalg.pinv(R.T), f"{what}: the restriction's row space", 0, 1e-8)
    if kr:
        k = kr_modcomp(sm, big)  # either order, as pbkrtest
        _close(k[["f_value", "ndf", "ddf", "f_scaling"]].to_numpy()[0], ref["kr"][:4], f"{what}: KRmodcomp")
        _close(k["p_value"], ref["kr"][4:], f"{what}: KRmodcomp p", RTOL, 1e-12)


def test_modcomp_refuses_ml_and_non_nested() -> None:
    ss = hlmbridge.datasets.sleepstudy()
    big = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine="statsmodels", reml=False)
    sm = hlmbridge.fit("Reaction ~ 1 + (1 | Subject)", ss, engine="statsmodels", reml=False)
    with pytest.raises(UsageError, match="REML fit"):
        kr_modcomp(big, sm)
    a = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine="statsmodels")
    b = hlmbridge.fit("Reaction ~ I(Days^2) + (1 | Subject)", ss, engine="statsmodels")
    with pytest.raises(UsageError, match="not nested"):
        sat_modcomp(a, b)


# ---- ranova --------------------------------------------------------------------------------------
RANOVA = [
    ("sleepstudy", "lme4", "sleepstudy", "Reaction ~ Days * cut(Days, c(-1, 2, 5, 9)) + (Days | Subject)", True),
    ("sleepstudy_ml", "lme4", "sleepstudy", "Reaction ~ Days + (Days | Subject)", False),
    # the reduced model is the linear model: R's logLik.lm, ML here, REML in the whole-term test below
    ("sleep_intercept_ml", "lme4", "sleepstudy", "Reaction ~ Days * cut(Days, c(-1, 2, 5, 9)) + (1 | Subject)",
     False),
    ("sleep_uncorr", "lme4", "sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", True),
    ("sleep_dbar", "lme4", "sleepstudy", "Reaction ~ Days + (Days || Subject)", True),
    ("orthodont", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", True),
    ("cake", "lme4", "cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", True),
    ("oats", "nlme", "Oats", "yield ~ Variety * factor(nitro) + (1 | Block/Variety)", True),
    ("machines", "nlme", "Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", True),
    ("exam", "mlmRev", "Exam", "normexam ~ standLRT * sex + schgend + (1 | school)", True),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", RANOVA, ids=[c[0] for c in RANOVA])
def test_ranova_matches_lmertest(rref: _R, case, engine: str) -> None:
    mid, pkg, name, formula, reml = case
    d_r, d = rref.data(pkg, name)
    res = hlmbridge.fit(formula, d, engine=engine, reml=reml)
    got = res.ranova(d)
    ref = rref.call("compare_reference_ranova", d_r, formula, reml, True)
    what = f"{mid}/{engine}: ranova"
    assert got["term"].tolist() == list(ref["terms"]), what
    want = np.atleast_2d(ref["table"])  # npar, logLik, AIC, LRT, Df, Pr(>Chisq)
    _close(got["npar"], want[:, 0], f"{what}: npar", 0)
    _close(got[["loglik", "aic"]].to_numpy(), want[:, 1:3], f"{what}: logLik, AIC", RTOL, LL_ATOL)
    _close(got["lrt"].iloc[1:], want[1:, 3], f"{what}: LRT", RTOL, 2 * LL_ATOL)
    _close(got["df"].iloc[1:], want[1:, 4], f"{what}: Df", 0)
    _close(got["p_value"].iloc[1:], want[1:, 5], f"{what}: p", 1e-5, 1e-12)
    one = got["df"] == 1
    _close(got.loc[one, "p_chibar2"], 0.5 * got.loc[one, "p_value"], f"{what}: chibar2(01)", 1e-15)
    assert got.loc[~one, "p_chibar2"].isna().all()
    assert any("boundary" in n for n in got.attrs["notes"]) == bool((got["df"].iloc[1:] > 1).any())


@pytest.mark.requires_r
def test_ranova_whole_terms_and_refusals(rref: _R) -> None:
    d_r, d = rref.data("lme4", "sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    res = hlmbridge.fit(formula, d, engine="lme4")
    got = ranova(res, d, reduce_terms=False)  # the whole term goes: the linear model's REML logLik
    ref = rref.call("compare_reference_ranova", d_r, formula, True, False)
    assert got["term"].tolist() == list(ref["terms"]) == ["<none>", "(Days | Subject)"]
    want = np.atleast_2d(ref["table"])
    _close(got[["npar", "loglik", "aic", "lrt", "df", "p_value"]].to_numpy()[1], want[1], "whole term", RTOL,
           LL_ATOL)
    with pytest.raises(UsageError, match="needs data="):
        ranova(res, None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="rows"):
        ranova(res, d.iloc[:10])
    w = hlmbridge.fit(formula, d, engine="lme4", weights=np.ones(len(d)))
    with pytest.raises(UnsupportedSpecError, match="weights="):
        ranova(w, d)
    with pytest.raises(UsageError, match="ddf must be"):
        drop1(res, "lme4")


# ---- a Stata command: the same comparisons through R's reading of the same model ----------------------
STATA_LARGE = "mixed mathach ib2.g3##c.ses i.sector || id:, reml"
STATA_SMALL = "mixed mathach ib2.g3 c.ses i.sector || id:, reml"
R_LARGE = "mathach ~ g3 * ses + sector + (1 | id)"  # hlmbridge translate's lme4 form
R_SMALL = "mathach ~ g3 + ses + sector + (1 | id)"


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_stata_command_comparisons_match_r(rref: _R, hsb_combined, engine: str) -> None:
    import pandas as pd

    df = hsb_combined[["mathach", "ses", "sector", "meanses", "id"]].copy()
    df["g3"] = pd.qcut(df["meanses"], 3, labels=False).astype("int64")
    rdf = rref.conv(pd.DataFrame({
        "mathach": df["mathach"], "ses": df["ses"],
        "g3": pd.Categorical(df["g3"].astype(str), categories=["2", "0", "1"]),
        "sector": pd.Categorical(df["sector"].astype(int).astype(str), categories=["0", "1"]),
        "id": df["id"].astype(int).astype(str),
    }), True)
    big, sm = hlmbridge.fit(STATA_LARGE, df, engine=engine), hlmbridge.fit(STATA_SMALL, df, engine=engine)
    what = f"Stata command/{engine}"
    for ddf in ("Satterthwaite", "Kenward-Roger"):
        got = big.drop1(ddf)
        ref = rref.call("compare_reference_drop1", rdf, R_LARGE, True, rref.at(big), ddf)
        assert got["term"].tolist() == ["i.sector", "ib2.g3#c.ses"] and list(ref["terms"]) == ["sector", "g3:ses"]
        want = np.atleast_2d(ref["table"])
        _close(got[["sum_sq", "mean_sq", "num_df", "den_df", "f_value"]].to_numpy(), want[:, :5], f"{what}: drop1")
        _close(got["p_value"], want[:, 5], f"{what}: drop1 p", RTOL, 1e-12)
    ref = rref.call("compare_reference_modcomp", rdf, R_LARGE, R_SMALL, rref.at(big))
    _close(sat_modcomp(big, sm)[["f_value", "ndf", "ddf", "p_value"]].to_numpy()[0], ref["sat"], f"{what}: SAT")
    _close(kr_modcomp(big, sm)[["f_value", "ndf", "ddf", "f_scaling", "p_value"]].to_numpy()[0], ref["kr"],
           f"{what}: KR")
    got = anova(sm, big, names=("m1", "m2"))
    ref = rref.call("compare_reference_anova", rdf, rref.ro.StrVector([R_SMALL, R_LARGE]), True)
    assert got["model"].tolist() == list(ref["models"]) == ["m1", "m2"]
    want = np.atleast_2d(ref["table"])
    _close(got[["aic", "bic", "loglik", "deviance"]].to_numpy(), want[:, 1:5], f"{what}: anova", RTOL, LL_ATOL)
    _close(got["chisq"].iloc[1], want[1, 5], f"{what}: anova Chisq", RTOL, 2 * LL_ATOL)


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_anova_refits_a_singular_reml_fit_by_ml(rref: _R, engine: str) -> None:
    """Dyestuff2's batch variance is 0: Newton steps cannot refit it by ML, the bounded search
    does; the table is still lme4's."""
    d = rref.data("lme4", "Dyestuff2")[1].copy()
    d["x"] = np.arange(len(d)) % 5 - 2.0
    forms = ["Yield ~ 1 + (1 | Batch)", "Yield ~ x + (1 | Batch)"]
    fits = [hlmbridge.fit(f, d, engine=engine) for f in forms]
    assert fits[0].singular
    got = anova(*fits, names=("m1", "m2"))
    ref = rref.call("compare_reference_anova", rref.conv(d, True), rref.ro.StrVector(forms), True)
    want = np.atleast_2d(ref["table"])
    _close(got[["aic", "bic", "loglik", "deviance"]].to_numpy(), want[:, 1:5], f"Dyestuff2/{engine}", RTOL, LL_ATOL)
    _close(got["chisq"].iloc[1], want[1, 5], f"Dyestuff2/{engine}: Chisq", RTOL, 2 * LL_ATOL)
    assert got.attrs["notes"] == (REFIT_NOTE,)


@pytest.mark.requires_r
def test_anova_of_two_glmms_matches_lme4(rref: _R) -> None:
    """GLMMs (glmer, Laplace) are ML fits: no refit, lme4's table as it is, at each fit's exact
    Laplace optimum (glmer's own log likelihood depends on its PIRLS path: r/tests/glmm_exact.R)."""
    import pandas as pd

    from hlmbridge.datasets import resource_path

    hosp = pd.read_csv(resource_path("fixtures", "glmm", "hospital.csv"))
    forms = ["hosp ~ loginc + distance + (1 | mother)", "hosp ~ loginc + distance + dropout + college + (1 | mother)"]
    fits = [hlmbridge.fit(f, hosp, family="binomial") for f in forms]
    got = anova(fits[1], fits[0], names=("m2", "m1"))
    ref = rref.call("compare_reference_glmer_anova", rref.conv(hosp, True), rref.ro.StrVector(forms))
    assert got["model"].tolist() == list(ref["models"]) == ["m1", "m2"]
    want = np.atleast_2d(ref["table"])
    _close(got[["aic", "bic", "loglik", "deviance"]].to_numpy(), want[:, 1:5], "glmer anova", RTOL, 1e-6)
    _close(got["chisq"].iloc[1], want[1, 5], "glmer anova: Chisq", RTOL, 2e-6)
    _close(got["p_value"].iloc[1], want[1, 7], "glmer anova: p", 1e-5, 1e-12)
    assert got.attrs["notes"] == ()
    quad = hlmbridge.fit(forms[0], hosp, family="binomial", nagq=5)
    with pytest.raises(UsageError, match="integrate the random effects differently"):
        anova(quad, fits[1])


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_drop1_of_a_rank_deficient_fit_matches_lmertest(rref: _R, engine: str) -> None:
    """I(2 * temp) is dropped (collinear with temp): lmerTest rebuilds each reduced model matrix;
    the collinear term tests nothing (a row of NA), the interaction its own columns."""
    formula = "angle ~ recipe * temp + I(2 * temp) + (1 | recipe:replicate)"
    d_r, d = rref.data("lme4", "cake")
    res = hlmbridge.fit(formula, d, engine=engine)
    assert res.dropped_columns == ("I(2 * temp)",)
    for ddf in ("Satterthwaite", "Kenward-Roger"):
        got = res.drop1(ddf)
        ref = rref.call("compare_reference_drop1", d_r, formula, True, rref.at(res), ddf)
        assert got["term"].tolist() == ["I(2 * temp)", "recipe:temp"] == list(ref["terms"])
        want = np.atleast_2d(ref["table"])
        _close(got[["sum_sq", "mean_sq", "num_df", "den_df", "f_value"]].to_numpy()[1:], want[1:, :5], ddf)
        _close(got["p_value"].iloc[1:], want[1:, 5], f"{ddf}: p", RTOL, 1e-12)
        assert got.iloc[0, 1:7].isna().all() and np.isnan(want[0]).all()
