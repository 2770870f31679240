"""lmer's row arguments (weights=, offset=, subset=, na_action=) are applied, the same way in
both engines, and equal lmer's own fit in R (issue 9, deliver 4; bug 4 reproduction).

R's reference: lme4's own ``sleepstudy`` in R, fitted by ``lmer`` with the argument written as
an R user writes it (r/tests/differential_reference.R, ``diffref_lmer``), never through
hlmbridge's data path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, UsageError
from r_reference import REFERENCE_FIT_SCRIPT

ROOT = Path(__file__).resolve().parents[1]
ENGINES = [pytest.param("lme4", marks=pytest.mark.requires_r), "statsmodels"]
FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def ss() -> pd.DataFrame:
    return hlmbridge.datasets.sleepstudy()


@pytest.fixture(scope="module")
def r_lmer():
    """diffref_lmer on lme4's sleepstudy, in a private R environment."""
    import rpy2.robjects as ro

    env = ro.r("new.env(parent = globalenv())")
    ro.r["sys.source"](str(REFERENCE_FIT_SCRIPT), envir=env)
    ro.r["sys.source"](str(ROOT / "r" / "tests" / "differential_reference.R"), envir=env)
    data = ro.r("lme4::sleepstudy")
    fn = env["diffref_lmer"]

    def run(reml: bool, **args: str) -> dict:
        out = fn(data, FORMULA, reml, *(args.get(k, ro.NULL) for k in ("weights", "offset", "subset", "na_action")))
        names = list(out.names)
        assert "error" not in names, out
        return {n: np.asarray(out[names.index(n)]) for n in ("loglik", "fixef", "se", "nobs", "vc_vcov")}

    return run


CASES = {
    # bug 4: weights=ss.Days + 1 returned the unweighted fit (R: -895.84 REML).
    "weights": ({"weights": "Days + 1"}, lambda ss: {"weights": ss["Days"] + 1}),
    "offset": ({"offset": "Days / 10"}, lambda ss: {"offset": ss["Days"].to_numpy() / 10}),
    "subset": ({"subset": "Days != 3"}, lambda ss: {"subset": (ss["Days"] != 3).to_numpy()}),
    "all three": ({"weights": "Days + 1", "offset": "Days / 10", "subset": "Days > 0"},
                  lambda ss: {"weights": "Days", "offset": ss["Days"] / 10, "subset": ss["Days"] > 0}),
}


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_row_arguments_equal_lmer(ss, r_lmer, engine, reml, case):
    r_args, py_args = CASES[case]
    kwargs = py_args(ss)
    if case == "all three":
        kwargs["weights"] = ss["Days"] + 1
    ref = r_lmer(reml, **r_args)
    res = hlmbridge.fit(FORMULA, ss, engine=engine, reml=reml, **kwargs)
    assert res.nobs == int(ref["nobs"][0])
    # statsmodels reaches the same optimum less tightly (Powell); 1e-6 on the log likelihood
    # is far below what would change a conclusion (LR chi2 moves by 2e-6).
    tol = 1e-8 if engine == "lme4" else 1e-6
    assert res.loglik == pytest.approx(float(ref["loglik"][0]), rel=tol)
    se = ref["se"]
    np.testing.assert_allclose((res.fixed["estimate"].to_numpy() - ref["fixef"]) / se, 0,
                               atol=1e-6 if engine == "lme4" else 1e-3)
    np.testing.assert_allclose(res.fixed["std_error"].to_numpy(), se, rtol=1e-6 if engine == "lme4" else 1e-3)


def test_weights_change_the_fit(ss):
    plain = hlmbridge.fit(FORMULA, ss, engine="statsmodels")
    weighted = hlmbridge.fit(FORMULA, ss, engine="statsmodels", weights=ss["Days"] + 1)
    assert abs(plain.loglik - weighted.loglik) > 1.0


def test_na_action(ss):
    df = ss.copy()
    df.loc[[3, 50], "Reaction"] = np.nan
    omit = hlmbridge.fit(FORMULA, df, engine="statsmodels", na_action="na.omit")
    assert omit.nobs == len(df) - 2 and omit.n_dropped == 2
    exclude = hlmbridge.fit(FORMULA, df, engine="statsmodels", na_action="na.exclude")
    assert exclude.loglik == pytest.approx(omit.loglik, abs=1e-9)
    with pytest.raises(DataError, match="na.fail"):
        hlmbridge.fit(FORMULA, df, engine="statsmodels", na_action="na.fail")
    with pytest.raises(UsageError, match="na_action"):
        hlmbridge.fit(FORMULA, df, engine="statsmodels", na_action="drop")
    with pytest.raises(UsageError, match="na_action="):
        hlmbridge.fit(FORMULA, df, engine="statsmodels", **{"na.action": "na.omit"})


@pytest.mark.parametrize("bad, match", [
    ({"weights": [1.0, 2.0]}, "one value per row"),
    ({"weights": "nosuchcolumn"}, "not in the data"),
    ({"subset": "Days"}, "boolean mask"),
    ({"subset": np.zeros(180, dtype=bool)}, "selects no rows"),
    ({"weights": np.zeros(180)}, "positive"),
    ({"offset": np.full(180, np.inf)}, "infinite"),
])
def test_bad_row_arguments_are_clear(ss, bad, match):
    with pytest.raises(hlmbridge.HlmbridgeError, match=match) as info:
        hlmbridge.fit(FORMULA, ss, engine="statsmodels", **bad)
    assert "\n" not in str(info.value)


def test_caller_frame_untouched(ss):
    before = ss.copy()
    hlmbridge.fit(FORMULA, ss, engine="statsmodels", weights=ss["Days"] + 1, subset=ss["Days"] > 0)
    pd.testing.assert_frame_equal(ss, before)


@pytest.mark.requires_r
def test_r_side_runs_alone():
    out = subprocess.run(["Rscript", str(ROOT / "r" / "tests" / "test_hlmbridge.R")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "all checks passed" in out.stdout
