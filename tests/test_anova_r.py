"""ANOVA tables (types I-III), linear combinations, glance and augment, checked against R.

R's numbers come from ``r/tests/anova_reference.R`` (with ``df_reference.R``), sourced into a
private rpy2 environment: lmerTest's ``anova(type = 1|2|3, ddf = ...)`` and ``show_tests``,
``contest(joint = FALSE)`` and lme4's ``logLik``/``AIC``/``BIC``/``fitted``/``residuals``/
``predict(re.form = NA)`` on an lmer fit evaluated (``optimizer = NULL``) at the variance
components each hlmbridge engine estimated, so both sides work at the same point. hlmbridge's
numbers come from its own design and estimates (:mod:`hlmbridge.results.anova`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from tests.r_reference import RScripts

REPO = Path(__file__).resolve().parents[1]
R_FILES = (REPO / "r" / "tests" / "df_reference.R", REPO / "r" / "tests" / "anova_reference.R")
RTOL = 1e-6
P_ATOL = 1e-12  # a p-value's relative error is its F's times about F (tiny p-values)


class _R(RScripts):
    def __init__(self) -> None:
        super().__init__(R_FILES)

    def fit(self, package: str, name: str, formula: str, reml: bool, at: hlmbridge.FitResult,
            contrasts: dict[str, str] | None, Lc: np.ndarray | None) -> dict:
        return self.fit_frame(self.data(package, name)[0], formula, reml, at, contrasts, Lc)

    def fit_frame(self, data, formula: str, reml: bool, at: hlmbridge.FitResult,
                  contrasts: dict[str, str] | None = None, Lc: np.ndarray | None = None) -> dict:
        """As :meth:`fit`, on an R data frame or a pandas one."""
        ro = self.ro
        if isinstance(data, pd.DataFrame):
            data = self.conv(data, True)
        where = self.variance_rows(at)
        rc = ro.NULL if not contrasts else ro.ListVector({k: v for k, v in contrasts.items()})
        rL = ro.NULL if Lc is None else ro.r["matrix"](ro.FloatVector(Lc.ravel(order="F")), nrow=Lc.shape[0])
        return self.arrays(self.env["anova_reference_fit"](data, formula, reml, where, rc, rL))


@pytest.fixture(scope="module")
def rref() -> _R:
    try:
        return _R()
    except Exception as exc:  # a package missing: say what to install
        pytest.fail(f"R reference unavailable ({exc}); install r-cran-lmertest r-cran-pbkrtest r-cran-mlmrev")


# (id, package, data set, formula, REML, contrasts, Kenward-Roger too)
MODELS = [
    ("cake", "lme4", "cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", True, None, True),
    ("cake_sum_temp", "lme4", "cake", "angle ~ recipe * temp + (1 | recipe:replicate)", True,
     {"recipe": "contr.sum"}, True),
    # I(2 * temp) is dropped (rank deficient): lmerTest gives it a row of NA
    ("cake_dropped", "lme4", "cake", "angle ~ recipe * temp + I(2 * temp) + (1 | recipe:replicate)", True, None,
     False),
    ("orthodont", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", True, None, True),
    ("orthodont_ml", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", False, None, False),
    ("orthodont_noint", "nlme", "Orthodont", "distance ~ 0 + Sex + Sex:age + (age | Subject)", True, None, True),
    # Sex only inside the interaction (R codes it by indicators there: not "contained")
    ("orthodont_nomain", "nlme", "Orthodont", "distance ~ age + age:Sex + (age | Subject)", True, None, True),
    # a matrix variable (R's dataClass nmatrix.2, which lmerTest's containment treats as a factor)
    ("orthodont_poly", "nlme", "Orthodont", "distance ~ poly(age, 2) * Sex + (1 | Subject)", True, None, True),
    ("oats", "nlme", "Oats", "yield ~ Variety * factor(nitro) + (1 | Block/Variety)", True, None, True),
    ("machines", "nlme", "Machines", "score ~ Machine + (1 | Worker/Machine)", True, None, True),
    ("sleep_cut", "lme4", "sleepstudy", "Reaction ~ Days * cut(Days, c(-1, 2, 5, 9)) + (1 | Subject)", True,
     None, True),
    ("exam", "mlmRev", "Exam", "normexam ~ standLRT * sex + schgend + (1 | school)", True, None, False),
]
ENGINES = ("lme4", "statsmodels")


def _lincom_matrix(p: int) -> np.ndarray:
    L = np.zeros((2, p))
    L[0, 1] = 1.0
    L[1, 0], L[1, p - 1] = 1.0, -2.0
    return L


@pytest.fixture(scope="module")
def fits(rref: _R) -> dict:
    out = {}
    for mid, pkg, name, formula, reml, contrasts, kr in MODELS:
        df = rref.data(pkg, name)[1]
        for engine in ENGINES:
            res = hlmbridge.fit(formula, df, engine=engine, reml=reml, contrasts=contrasts)
            Lc = _lincom_matrix(len(res.fixed_rows))
            out[(mid, engine)] = (res, rref.fit(pkg, name, formula, reml, res, contrasts, Lc), kr, Lc)
    return out


def _close(actual, expected, what: str, rtol: float = RTOL, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol,
                               err_msg=what)


CASES = [(m[0], e) for m in MODELS for e in ENGINES]


@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
@pytest.mark.parametrize("type_", [1, 2, 3])
def test_anova_matches_lmertest(fits, mid: str, engine: str, type_: int) -> None:
    res, ref, kr, _ = fits[(mid, engine)]
    _close([r[2] for r in res.fixed_rows], ref["beta"], f"{mid}/{engine}: beta at the same point", 1e-7, 1e-10)
    methods = [("satterthwaite", "sat")] + ([("kenward-roger", "kr")] if kr else [])
    for method, key in methods:
        got, tests = res.anova(method, type=type_, show_tests=True)
        what = f"{mid}/{engine}: type {type_} {method}"
        assert got["term"].tolist() == list(ref[f"t{type_}_{key}_terms"]), what
        want = np.atleast_2d(ref[f"t{type_}_{key}"])
        cols = ["sum_sq", "mean_sq", "num_df", "den_df", "f_value"]
        _close(got[cols].to_numpy(), want[:, :5], f"{what}: Sum Sq, Mean Sq, NumDF, DenDF, F")
        _close(got["p_value"], want[:, 5], f"{what}: p", RTOL, P_ATOL)
        assert got.attrs["heading"].startswith(f"Type {'I' * type_} Analysis of Variance Table")
        if key == "sat":
            assert sorted(tests) == sorted(got["term"])
            for term, L in tests.items():
                R = np.atleast_2d(ref[f"L{type_}:{term}"])
                if L.shape[0] == 0:  # a term without columns: lmerTest's matrix has no rows
                    assert np.size(ref[f"L{type_}:{term}"]) == 0, f"{what}: {term}"
                    continue
                assert list(L.columns) == list(ref["names"])
                _close(L.to_numpy(), R, f"{what}: hypothesis matrix of {term}", 0, 1e-9)


@pytest.mark.requires_r
def test_type3_was_refused_before_and_residual_ddf(fits) -> None:
    """The residual-df table: the same F as lmerTest's, n - p denominator df."""
    res, ref, _, _ = fits[("cake", "lme4")]
    got = res.anova("residual", type=3)
    _close(got["f_value"], np.atleast_2d(ref["t3_sat"])[:, 4], "cake: residual-df F (the Wald F)")
    assert set(got["den_df"]) == {res.nobs - len(res.fixed_rows)}
    assert got.attrs["heading"] == "Type III Analysis of Variance Table with residual df method"


@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_lincom_matches_contest(fits, mid: str, engine: str) -> None:
    res, ref, kr, Lc = fits[(mid, engine)]
    methods = [("satterthwaite", "sat")] + ([("kenward-roger", "kr")] if kr else [])
    for method, key in methods:
        got = res.lincom(Lc, df_method=method)
        want = np.atleast_2d(ref[f"lincom_{key}"])  # Estimate, SE, df, t, lower, upper, p
        what = f"{mid}/{engine}: lincom {method}"
        _close(got[["estimate", "std_error", "df", "statistic", "conf_low", "conf_high"]].to_numpy(),
               want[:, :6], what, RTOL, 1e-10)
        _close(got["p_value"], want[:, 6], f"{what}: p", RTOL, P_ATOL)
        assert set(got["df_method"]) == {method}
    # The same combination written with the coefficients' names, lme4's and Stata's.
    lme4, stata = res.fixed["term"].tolist(), res.fixed["stata_term"].tolist()
    one = res.lincom(f"{lme4[0]} - 2*{lme4[-1]}", df_method="satterthwaite")
    two = res.lincom(f"_b[{stata[0]}] - {stata[-1]}*2", df_method="satterthwaite")
    vec = res.lincom(Lc[1], df_method="satterthwaite")
    for other in (one, two):
        _close(other[["estimate", "std_error", "df"]].to_numpy(), vec[["estimate", "std_error", "df"]].to_numpy(),
               f"{mid}/{engine}: lincom by name", 1e-12)


@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_glance_and_augment_match_lme4(fits, mid: str, engine: str) -> None:
    res, ref, _, _ = fits[(mid, engine)]
    reml = res.spec.reml
    g = res.glance()
    dev = "REMLcrit" if reml else "deviance"
    assert list(g.columns) == ["nobs", "sigma", "logLik", "AIC", "BIC", dev, "df.residual"]
    want = dict(zip(["nobs", "sigma", "logLik", "AIC", "BIC", "deviance", "REMLcrit", "df.residual"],
                    ref["glance"]))
    what = f"{mid}/{engine}: glance"
    assert g["nobs"][0] == want["nobs"] and g["df.residual"][0] == want["df.residual"], what
    _close(g["sigma"], [want["sigma"]], f"{what} sigma", 1e-8)
    # log likelihoods on the absolute scale (the project's rule: a relative one grows with n)
    for col in ("logLik", "AIC", "BIC", dev):
        _close(g[col], [want[col]], f"{what} {col}", 0, 1e-6)
    a = res.augment()
    assert list(a.columns[-9:]) == [".fitted", ".resid", ".fixed", ".mu", ".offset", ".sqrtXwt", ".sqrtrwt",
                                    ".weights", ".wtres"]
    scale = float(np.std(ref["fitted"]))
    _close(a[".fitted"], ref["fitted"], f"{mid}/{engine}: .fitted", 0, 1e-7 * scale)
    _close(a[".resid"], ref["resid"], f"{mid}/{engine}: .resid", 0, 1e-7 * scale)
    _close(a[".fixed"], ref["fixed"], f"{mid}/{engine}: .fixed", 0, 1e-7 * scale)
    assert a.columns[0] == res.spec.formula.response.deparse()


# ---- Stata-command fits: the same construction through R's reading of the same model -----------
STATA_CMD = "mixed mathach ib2.g3##c.ses i.sector || id:, reml"
STATA_AS_R = "mathach ~ g3 * ses + sector + (1 | id)"  # hlmbridge translate's lme4 form


@pytest.fixture(scope="module")
def hsb_g3(hsb_combined: pd.DataFrame) -> pd.DataFrame:
    """HSB with a three-level school factor (terciles of meanses)."""
    df = hsb_combined[["mathach", "ses", "sector", "meanses", "id"]].copy()
    df["g3"] = pd.qcut(df["meanses"], 3, labels=False).astype("int64")
    return df


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_stata_command_anova_matches_lmertest(rref: _R, hsb_g3: pd.DataFrame, engine: str) -> None:
    res = hlmbridge.fit(STATA_CMD, hsb_g3, engine=engine)
    rdf = pd.DataFrame({
        "mathach": hsb_g3["mathach"], "ses": hsb_g3["ses"],
        "g3": pd.Categorical(hsb_g3["g3"].astype(str), categories=["2", "0", "1"]),
        "sector": pd.Categorical(hsb_g3["sector"].astype(int).astype(str), categories=["0", "1"]),
        "id": hsb_g3["id"].astype(int).astype(str),
    })
    ref = rref.fit_frame(rdf, STATA_AS_R, True, res)
    for type_ in (1, 2, 3):
        for method, key in (("satterthwaite", "sat"), ("kenward-roger", "kr")):
            got = res.anova(method, type=type_)
            what = f"Stata command/{engine}: type {type_} {method}"
            assert got["term"].tolist() == ["ib2.g3", "ses", "i.sector", "ib2.g3#c.ses"], what
            assert list(ref[f"t{type_}_{key}_terms"]) == ["g3", "ses", "sector", "g3:ses"], what
            want = np.atleast_2d(ref[f"t{type_}_{key}"])
            _close(got[["sum_sq", "mean_sq", "num_df", "den_df", "f_value"]].to_numpy(), want[:, :5], what)
            _close(got["p_value"], want[:, 5], f"{what}: p", RTOL, P_ATOL)
            if key == "sat":  # the hypothesis matrices: R's columns in the fit's order (its lme4 names are R's)
                _, tests = res.anova(method, type=type_, show_tests=True)
                order = [list(ref["names"]).index(n) for n in res.fixed["term"]]
                for (term, L), rterm in zip(tests.items(), ["g3", "ses", "sector", "g3:ses"]):
                    assert list(L.columns) == list(res.fixed["stata_term"])
                    R = np.atleast_2d(ref[f"L{type_}:{rterm}"])[:, order]
                    _close(L.to_numpy(), R, f"{what}: hypothesis matrix of {term}", 0, 1e-9)
