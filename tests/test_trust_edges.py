"""Engine edge cases that used to be silent or crash (issue 26).

1. ``singular`` means lme4's ``isSingular`` for every engine: some pivot of a relative
   covariance factor below 1e-4, computed by hlmbridge from the estimates. A 3x3 block of
   rank 2 (every correlation inside (-1, 1)) used to be "not singular" in the statsmodels
   engine while lme4 said it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hlmbridge


# ---------------------------------------------------------------------------- 1. singular
@pytest.fixture(scope="module")
def exam(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """mlmRev's Exam, exported by the committed R script and read back with R's classes."""
    from tests.r_reference import export_datasets, load_dataset

    out = tmp_path_factory.mktemp("r_datasets")
    export_datasets(out)
    return load_dataset(out, "Exam")


def _r_is_singular(formula: str, reml: bool) -> bool:
    """lme4's own isSingular of lmer (its defaults) on mlmRev's Exam, in a private R env."""
    import rpy2.robjects as ro

    fun = ro.r("function(f, reml) suppressMessages(suppressWarnings(lme4::isSingular("
               "lme4::lmer(stats::as.formula(f), data = mlmRev::Exam, REML = reml))))")
    return bool(fun(formula, reml)[0])


#: On Exam: a 3x3 block of rank 2 (lme4's last pivot 0 under REML and ML; no correlation at
#: +-1, no variance at 0), and a 3x3 block whose smallest pivot is 0.029 (not singular).
SINGULAR_CASES = [
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", True),
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", False),
    ("normexam ~ standLRT + (standLRT + I(standLRT^2) | school)", False),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("formula,reml", SINGULAR_CASES)
def test_singular_is_lme4s_is_singular_for_both_engines(exam: pd.DataFrame, formula: str, reml: bool) -> None:
    expected = _r_is_singular(formula, reml)
    for engine in ("lme4", "statsmodels"):
        res = hlmbridge.fit(formula, exam, engine=engine, reml=reml)
        assert res.singular is expected, (engine, formula, reml)
    if formula.startswith("normexam ~ standLRT + sex"):
        assert expected  # the case is what it claims: lme4 says singular


# ---------------------------------------------------------------------------- 2. tiny weights
HSB_MODEL = "mathach ~ ses + (ses | id)"


def _r_lmer_unweighted(hsb: pd.DataFrame) -> dict[str, Any]:
    """lmer in R (tight bobyqa, ML) of HSB_MODEL on hsb's columns, without weights."""
    import rpy2.robjects as ro

    fun = ro.r("""function(y, x, g) {
      d <- data.frame(mathach = y, ses = x, id = factor(g))
      f <- lme4::lmer(mathach ~ ses + (ses | id), d, REML = FALSE,
                      control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12)))
      vc <- as.data.frame(lme4::VarCorr(f))
      list(loglik = as.numeric(stats::logLik(f)), fixef = unname(lme4::fixef(f)), vcov = vc$vcov)
    }""")
    out = fun(ro.FloatVector(hsb["mathach"].to_numpy(float)), ro.FloatVector(hsb["ses"].to_numpy(float)),
              ro.StrVector(hsb["id"].astype(str).tolist()))
    return {k: np.array(out.rx2(k), dtype=float) for k in ("loglik", "fixef", "vcov")}


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ["lme4", "statsmodels"])
def test_constant_tiny_weights_fit_the_same_model(hsb_combined: pd.DataFrame, engine: str) -> None:
    """Constant weights c are the same model with the residual variance times c: the fit must be
    lmer's unweighted one (lme4's engine stopped at the linear model, 230 units short, with
    converged=True and no warning; the statsmodels engine likewise)."""
    c = 1e-16
    ref = _r_lmer_unweighted(hsb_combined)
    res = hlmbridge.fit(HSB_MODEL, hsb_combined, engine=engine, reml=False,
                        weights=np.full(len(hsb_combined), c))
    assert res.converged and not res.warnings
    assert abs(res.loglik - ref["loglik"][0]) < 1e-6
    # as.data.frame(VarCorr): var((Intercept)), var(ses), cov, residual
    var = {r[4]: r[5] for r in res.random_rows}
    got = np.array([var["var(_cons)"], var["var(ses)"], var["cov(ses,_cons)"], var["var(Residual)"] / c])
    np.testing.assert_allclose(got, ref["vcov"], rtol=1e-5)
    fixed = res.fixed.set_index("term")["estimate"]
    np.testing.assert_allclose(fixed[["(Intercept)", "ses"]].to_numpy(), ref["fixef"], rtol=1e-7)


@pytest.mark.requires_r
def test_lme4_fallback_that_stops_short_is_not_converged(hsb_combined: pd.DataFrame,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """hlmbridge turns off lmer's gradient check (calc.derivs = FALSE) and checks the fallback's
    answer itself: with the weights' rescaling turned off, lmer stops at the linear model for
    weights of 1e-16, and the fit says so instead of converged=True with no warning."""
    import hlmbridge.engines.lme4 as lme4_engine

    monkeypatch.setattr(lme4_engine, "weight_scale", lambda weights: 1.0, raising=False)
    res = hlmbridge.fit(HSB_MODEL, hsb_combined, engine="lme4", reml=False,
                        weights=np.full(len(hsb_combined), 1e-16))
    assert not res.converged
    assert any("still rises" in w and "not the optimum" in w for w in res.warnings), res.warnings
