"""Differential tests of the nlme engine (issue 25) against ``nlme::lme`` run directly in R.

Each case is one model written two ways, a Stata command and an lme4 formula with fit()'s
``residuals=`` keyword, on data built in R from nlme's Orthodont, BodyWeight and Ovary
(``r/tests/nlme_reference.R``, exported as CSV at 17 digits). R fits the model itself with
``nlme::lme`` (the call written out here, not hlmbridge's rendering; the same tight tolerances)
and returns its log likelihood, fixed effects and the variance parameters on Stata's scale.
Checked: hlmbridge's own likelihood at nlme's estimates equals nlme's logLik to 1e-8; the
result's log likelihood equals it to 1e-8 (the Newton polish only finishes nlme's optimum);
fixed effects and variance parameters within 1e-5 of their SE (only where the parameters are
identified). Where the models overlap, the nlme engine equals the lme4 engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, SpecError, UnsupportedSpecError, UsageError

pytestmark = pytest.mark.requires_r

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "r" / "tests" / "nlme_reference.R"


class _R:
    """nlme_reference.R sourced into a private R environment (never R's global one)."""

    def __init__(self) -> None:
        from hlmbridge.engines.r_session import session

        self.s = session()
        with self.s.lock, self.s.converting():
            ro = self.s.ro
            self.env = ro.r("new.env(parent = globalenv())")
            ro.r["sys.source"](str(SCRIPT), envir=self.env)

    def export(self, outdir: Path) -> None:
        with self.s.lock, self.s.converting():
            self.env["hb_nlme_export"](str(outdir))

    def direct(self, data: str, call: str, params: str) -> dict:
        with self.s.lock, self.s.converting():
            ro = self.s.ro
            frames = self.env["hb_nlme_data"]()
            d = frames.rx2(data)
            out = self.env["hb_nlme_direct"](d, call, params)
            fixef = out.rx2("fixef")
            return {"loglik": float(out.rx2("loglik")[0]),
                    "fixef": dict(zip([str(n) for n in fixef.names], [float(x) for x in fixef])),
                    "params": np.array([float(x) for x in out.rx2("params")])}


@pytest.fixture(scope="module")
def r() -> _R:
    return _R()


@pytest.fixture(scope="module")
def frames(r: _R, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("nlme_data")
    r.export(out)
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("orth", "bw", "ovary", "ovary_gaps")}


_CONS = "nlme::getVarCov(fit)[1, 1]"
_COR = "coef(fit$modelStruct$corStruct, unconstrained = FALSE)"
_S2 = "fit$sigma^2"

# name: (data, Stata command, (formula, residuals=, reml), R's lme call, R's parameters, identified)
CASES = {
    "ar1_ml": ("orth", "mixed distance age || id:, residuals(ar 1, t(occ))",
               ("distance ~ age + (1 | id)", "ar1(occ | id)", False),
               "nlme::lme(distance ~ age, random = ~ 1 | id, correlation = nlme::corAR1(form = ~ occ | id), "
               "method = 'ML', data = d, control = ctl)", f"c({_CONS}, {_COR}, {_S2})", True),
    "ar2_reml": ("ovary", "mixed follicles s c || mare:, residuals(ar 2, t(idx)) reml",
                 ("follicles ~ s + c + (1 | mare)", "ar2(idx | mare)", True),
                 "nlme::lme(follicles ~ s + c, random = ~ 1 | mare, correlation = nlme::corARMA(form = ~ idx | "
                 "mare, p = 2), method = 'REML', data = d, control = ctl)", f"c({_CONS}, {_COR}, {_S2})", True),
    "ma2_ml": ("ovary", "mixed follicles s c || mare:, residuals(ma 2, t(idx))",
               ("follicles ~ s + c + (1 | mare)", "ma2(idx | mare)", False),
               "nlme::lme(follicles ~ s + c, random = ~ 1 | mare, correlation = nlme::corARMA(form = ~ idx | mare, "
               "q = 2), method = 'ML', data = d, control = ctl)", f"c({_CONS}, {_COR}, {_S2})", True),
    "exponential_reml": ("bw", "mixed weight Time || rat: Time, cov(un) residuals(exponential, t(Time)) reml",
                         ("weight ~ Time + (Time | rat)", "exponential(Time | rat)", True),
                         "nlme::lme(weight ~ Time, random = ~ Time | rat, correlation = nlme::corCAR1(form = ~ Time "
                         "| rat), method = 'REML', data = d, control = ctl)",
                         "c(nlme::getVarCov(fit)[2, 2], nlme::getVarCov(fit)[1, 1], nlme::getVarCov(fit)[1, 2], "
                         f"{_COR}, {_S2})", True),
    "exchangeable_ml": ("orth", "mixed distance age || id: age, noconstant residuals(exchangeable)",
                        ("distance ~ age + (0 + age | id)", "exchangeable(1 | id)", False),
                        "nlme::lme(distance ~ age, random = list(id = nlme::pdIdent(~ age - 1)), correlation = "
                        "nlme::corCompSymm(form = ~ 1 | id), method = 'ML', data = d, control = ctl)",
                        f"c({_CONS}, {_S2}, {_S2} * {_COR})", True),
    "independent_by_ml": ("orth", "mixed distance age || id:, residuals(independent, by(male))",
                          ("distance ~ age + (1 | id)", "independent(by = male)", False),
                          "nlme::lme(distance ~ age, random = ~ 1 | id, weights = nlme::varIdent(form = ~ 1 | male), "
                          "method = 'ML', data = d, control = ctl)",
                          f"c({_CONS}, {_S2} * coef(fit$modelStruct$varStruct, unconstrained = FALSE, "
                          "allCoef = TRUE)[c('0', '1')]^2)", True),
    # var(_cons) trades against the unstructured residual covariances: only the likelihood and
    # the fixed effects are identified, so the parameters are not compared.
    "unstructured_reml": ("orth", "mixed distance age || id:, residuals(unstructured, t(occ)) reml",
                          ("distance ~ age + (1 | id)", "unstructured(occ | id)", True),
                          "nlme::lme(distance ~ age, random = ~ 1 | id, correlation = nlme::corSymm(form = ~ occ | "
                          "id), weights = nlme::varIdent(form = ~ 1 | occ), method = 'REML', data = d, "
                          "control = ctl)", _S2, False),
    "nested_ar1_ml": ("orth", "mixed distance age || male: || id:, residuals(ar 1, t(occ))",
                      ("distance ~ age + (1 | male/id)", "ar1(occ | id)", False),
                      "nlme::lme(distance ~ age, random = list(male = ~ 1, id = ~ 1), correlation = "
                      "nlme::corAR1(form = ~ occ | male/id), method = 'ML', data = d, control = ctl)",
                      f"c(sapply(nlme::pdMatrix(fit$modelStruct$reStruct), function(m) m[1, 1]) * {_S2}, "
                      f"{_COR}, {_S2})", True),
    # corAR1/corARMA's lag is the time difference: Ovary without every fourth day (lags 1 and 2), and
    # BodyWeight's days 1, 8, 15, ..., 43, 44, 50, ... (lags 1 and 7). (Not AR(1) on BodyWeight: rho is
    # 0.9998 there, and var(_cons) sits on a ridge where the log likelihood is convex: no SEs.)
    "ar1_gaps_reml": ("ovary_gaps", "mixed follicles s c || mare:, residuals(ar 1, t(idx)) reml",
                      ("follicles ~ s + c + (1 | mare)", "ar1(idx | mare)", True),
                      "nlme::lme(follicles ~ s + c, random = ~ 1 | mare, correlation = nlme::corAR1(form = ~ idx | "
                      "mare), method = 'REML', data = d, control = ctl)", f"c({_CONS}, {_COR}, {_S2})", True),
    "ma1_gaps_ml": ("bw", "mixed weight Time || rat:, residuals(ma 1, t(Time))",
                    ("weight ~ Time + (1 | rat)", "ma1(Time | rat)", False),
                    "nlme::lme(weight ~ Time, random = ~ 1 | rat, correlation = nlme::corARMA(form = ~ Time | rat, "
                    "q = 1), method = 'ML', data = d, control = ctl)", f"c({_CONS}, {_COR}, {_S2})", True),
    "identity_ml": ("orth", "mixed distance age || id: age, cov(identity)", None,
                    "nlme::lme(distance ~ age, random = list(id = nlme::pdIdent(~ age)), method = 'ML', data = d, "
                    "control = ctl)", f"c({_CONS}, {_S2})", True),
    "exchangeable_cov_reml": ("orth", "mixed distance age || id: age, cov(exchangeable) reml", None,
                              "nlme::lme(distance ~ age, random = list(id = nlme::pdCompSymm(~ age)), method = "
                              "'REML', data = d, control = ctl)",
                              f"c({_CONS}, nlme::getVarCov(fit)[1, 2], {_S2})", True),
}


def _check(fit_it, ref: dict, identified: bool) -> None:
    """nlme's own optimum (the engine with polish=False) equals R's: log likelihood to 1e-8,
    estimates within 1e-5 of their SE; the polished fit is never below it, and above it only by
    what the Newton polish finds where nlme stopped short (measured: 6e-8 on the MA(2) case)."""
    res = fit_it(polish=False)
    assert abs(res.loglik - ref["loglik"]) < 1e-8, (res.loglik, ref["loglik"])
    for name, value in ref["fixef"].items():
        row = res.fixed[res.fixed["term"] == name].iloc[0]
        assert abs(row["estimate"] - value) <= 1e-5 * row["std_error"], (name, row["estimate"], value)
    if identified:
        rnd = res.random
        assert len(rnd) == len(ref["params"])
        for (_, row), value in zip(rnd.iterrows(), ref["params"]):
            assert abs(row["estimate"] - value) <= 1e-5 * row["std_error"], (row["stata_term"], row["estimate"],
                                                                             value, row["std_error"])
    polished = fit_it()
    assert -1e-8 < polished.loglik - ref["loglik"] < 1e-6, (polished.loglik, ref["loglik"])
    assert not [w for w in polished.warnings if "nlme's logLik" in w]


@pytest.mark.parametrize("name", list(CASES))
def test_stata_command_equals_nlme(name: str, r: _R, frames: dict) -> None:
    data, command, _, call, params, identified = CASES[name]
    ref = r.direct(data, call, params)
    _check(lambda **kw: hlmbridge.fit(command, frames[data], engine="nlme", **kw), ref, identified)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] is not None])
def test_formula_keyword_equals_nlme(name: str, r: _R, frames: dict) -> None:
    data, _, (formula, residuals, reml), call, params, identified = CASES[name]
    ref = r.direct(data, call, params)
    _check(lambda **kw: hlmbridge.fit(formula, frames[data], engine="nlme", residuals=residuals, reml=reml, **kw),
           ref, identified)


@pytest.mark.parametrize("name", list(CASES))
def test_own_likelihood_at_nlme_estimates(name: str, frames: dict) -> None:
    """hlmbridge's likelihood (residual_structures, or stata_parity without a structure) at
    nlme's own estimates, before any polish, equals nlme's logLik to 1e-8."""
    from hlmbridge.design.build import build_design
    from hlmbridge.engines import get_engine
    from hlmbridge.fit import as_spec

    data, command = CASES[name][0], CASES[name][1]
    spec = as_spec(command)
    design = build_design(spec, frames[data][list(spec.variables)])
    est = get_engine("nlme").fit_design(design, data=frames[data], polish=False)
    assert abs(est.extra["own_loglik_at_nlme"] - est.extra["nlme_loglik"]) < 1e-8


@pytest.mark.parametrize("command", ["mixed distance age || id: age, cov(unstructured)",
                                     "mixed distance age || id: age, cov(independent) reml",
                                     "mixed distance age || id:",
                                     "mixed distance age || male: || id:",
                                     "distance ~ age + (1 | id) + (0 + age | id)",  # pdDiag
                                     "distance ~ age + (1 + age | id) + (0 + occ2 | id)",  # pdBlocked
                                     "distance ~ age + (1 | male/id)"])
def test_independent_residuals_nlme_equals_lme4(command: str, frames: dict) -> None:
    data = frames["orth"].assign(occ2=(frames["orth"]["occ"] - 2.5) ** 2)
    a = hlmbridge.fit(command, data, engine="nlme")
    b = hlmbridge.fit(command, data, engine="lme4")
    assert abs(a.loglik - b.loglik) < 1e-8
    for ta, tb in ((a.fixed, b.fixed), (a.random, b.random)):
        assert list(ta["stata_term"]) == list(tb["stata_term"])
        assert np.all(np.abs(ta["estimate"].to_numpy() - tb["estimate"].to_numpy())
                      <= 1e-5 * tb["std_error"].to_numpy())
        assert np.allclose(ta["std_error"], tb["std_error"], rtol=1e-4)


def test_stata_rows_and_lr_test(frames: dict) -> None:
    res = hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ))", frames["orth"], engine="nlme")
    assert list(res.random["stata_term"]) == ["var(_cons)", "rho", "var(e)"]
    assert list(res.random["group"]) == ["id", "Residual", "Residual"]
    row = res.random.iloc[1]
    z = np.arctanh(row["estimate"])
    half = 1.959963984540054 * row["std_error"] / (1 - row["estimate"] ** 2)
    assert np.isclose(row["conf_low"], np.tanh(z - half)) and np.isclose(row["conf_high"], np.tanh(z + half))
    assert res.lr_df == 2 and res.lr_kind == "chi2"
    assert np.isclose(res.lr_chi2, 2 * (res.loglik - res.loglik_linear))
    by = hlmbridge.fit("mixed distance age || id:, residuals(independent, by(male))", frames["orth"], engine="nlme")
    assert list(by.random["stata_term"]) == ["var(_cons)", "0: var(e)", "1: var(e)"]
    text = by.summary()
    assert "Residual: Independent,       |\n    by male                  |\n" in text
    assert "0: var(e)" in text and "1: var(e)" in text
    assert "Residual: AR(1)              |\n                         rho |" in res.summary()


def test_polish_keeps_the_random_effects_covariance_positive_semidefinite() -> None:
    """sleepstudy's slope and intercept are perfectly correlated at nlme's optimum: the Newton polish
    must not leave the parameter space (before: it moved to a 'correlation' of 42, 0.23 above nlme)."""
    sleep = hlmbridge.datasets.sleepstudy()
    command = "mixed Reaction Days || Subject: Days, cov(un) residuals(ar 1, t(Days))"
    res = hlmbridge.fit(command, sleep, engine="nlme")
    raw = hlmbridge.fit(command, sleep, engine="nlme", polish=False)
    v_days, v_cons, cov = res.random["estimate"].iloc[:3]
    assert cov ** 2 <= v_days * v_cons * (1 + 1e-8)
    assert -1e-8 < res.loglik - raw.loglik < 1e-6


# ----------------------------------------------------------------------- bad input
def test_bad_times_are_data_errors(frames: dict) -> None:
    d = frames["orth"].assign(half=frames["orth"]["occ"] / 2, same=1.0)
    with pytest.raises(DataError, match="whole-number times"):
        hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(half))", d, engine="nlme")
    with pytest.raises(DataError, match="repeats within a group"):
        hlmbridge.fit("mixed distance age || id:, residuals(exponential, t(same))", d, engine="nlme")
    with pytest.raises(DataError, match="one level"):
        hlmbridge.fit("mixed distance age || id:, residuals(independent, by(same))", d, engine="nlme")


def test_refusals_name_the_engine(frames: dict) -> None:
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'"):
        hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ))", frames["orth"], engine="lme4")
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'"):
        hlmbridge.fit("mixed distance age || id: age, cov(identity)", frames["orth"], engine="lme4")
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'"):
        hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ))", frames["orth"], engine="statsmodels")
    with pytest.raises(UnsupportedSpecError, match="engine='lme4'"):
        hlmbridge.fit("mixed distance age || _all: R.male || id:", frames["orth"], engine="nlme")
    with pytest.raises(UnsupportedSpecError, match="Toeplitz"):
        hlmbridge.fit("mixed distance age || id:, residuals(toeplitz 1, t(occ))", frames["orth"], engine="nlme")
    with pytest.raises(UnsupportedSpecError, match="banded"):
        hlmbridge.fit("mixed distance age || id:, residuals(banded 1, t(occ))", frames["orth"], engine="nlme")
    with pytest.raises(UnsupportedSpecError, match="own correlation"):
        hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ) by(male))", frames["orth"], engine="nlme")
    with pytest.raises(UsageError, match="already"):
        hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ))", frames["orth"], engine="nlme",
                      residuals="ar1(occ | id)")
    with pytest.raises(SpecError, match="innermost"):
        hlmbridge.fit("distance ~ age + (1 | id)", frames["orth"], engine="nlme", residuals="ar1(occ | male)")


def test_post_estimation_that_assumes_independent_residuals_is_refused(frames: dict) -> None:
    """(ranef, fitted, residuals, predict, tidy, glance, random_sd and estat wcorrelation after a
    residual structure: tests/test_nlme_postfit.py.)"""
    res = hlmbridge.fit("mixed distance age || id:, residuals(ar 1, t(occ))", frames["orth"], engine="nlme")
    for call in (res.icc, res.profile_ci, lambda: res.with_df("satterthwaite"),
                 lambda: res.bootstrap(frames["orth"], n=2)):
        with pytest.raises(UnsupportedSpecError, match=r"residuals\(ar 1, t\(occ\)\)"):
            call()
    assert float(res.recov()["id"].iloc[0, 0]) == pytest.approx(res.random["estimate"].iloc[0])
    assert res.lincom("age")["estimate"].iloc[0] == pytest.approx(res.fixed["estimate"].iloc[0])
    ic = res.ic()
    assert int(ic["df"].iloc[0]) == 5 and ic["aic"].iloc[0] == pytest.approx(-2 * res.loglik + 10)
    back = hlmbridge.results.fit_result.FitResult.from_dict(res.to_dict())
    assert back.spec == res.spec


def test_missing_times_drop_rows_as_stata_does(frames: dict) -> None:
    """A missing t() or by() value drops the row (Stata's listwise deletion), for a Stata command
    and for the residuals= keyword alike: the same fit as on the data without those rows."""
    d = frames["orth"].copy()
    d.loc[[3, 17, 40], "occ"] = np.nan
    d["sex"] = np.where(d["male"] == 1, "boy", "girl")  # text: a factor for the formula's by =
    d.loc[[50], "sex"] = None
    for model, kw, column in (("mixed distance age || id:, residuals(ar 1, t(occ))", {}, "occ"),
                              ("distance ~ age + (1 | id)", {"residuals": "ar1(occ | id)", "reml": False}, "occ"),
                              ("distance ~ age + (1 | id)", {"residuals": "independent(by = sex)"}, "sex")):
        kept = d.dropna(subset=[column])
        a = hlmbridge.fit(model, d, engine="nlme", **kw)
        b = hlmbridge.fit(model, kept, engine="nlme", **kw)
        assert a.nobs == b.nobs == len(kept) < len(d)
        assert a.n_dropped == len(d) - len(kept)
        assert abs(a.loglik - b.loglik) < 1e-8


def test_row_order_does_not_matter(frames: dict) -> None:
    """nlme sorts the rows by group internally; the design check (R's X beta against hlmbridge's, row by
    row) and the time structure must hold on shuffled rows too."""
    d = frames["orth"]
    shuffled = d.sample(frac=1.0, random_state=3)
    command = "mixed distance age || male: || id:, residuals(ar 1, t(occ))"
    a = hlmbridge.fit(command, d, engine="nlme")
    b = hlmbridge.fit(command, shuffled, engine="nlme")
    assert abs(a.loglik - b.loglik) < 1e-8
