"""``FitResult.confint(method=...)`` (lme4's ``confint.merMod``) checked against lme4 in R
(issue 27, item 4).

R's numbers come from ``r/tests/predict_reference.R``'s ``confint_reference``
(``confint(fit, method, level, oldNames = FALSE)``): the Wald intervals on an lmer fit evaluated
(``optimizer = NULL``) at the variance components hlmbridge estimated (both sides at the same
point: 1e-7), the profile intervals on lmer's own fit (lme4 interpolates a spline through its
profile, hlmbridge finds the crossing on the exact profile: 1e-4 relative, as
``tests/test_profile.py``). Rows are matched by lme4's names, and every name of each side must
be on the other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from hlmbridge.inference.bootstrap import BootstrapResult
from tests.test_predict_r import _R

pytestmark = pytest.mark.requires_r

# (id, package, data set, formula, REML, engines)
MODELS = [
    ("sleep", "lme4", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True, ("lme4", "statsmodels")),
    ("orthodont_ml", "nlme", "Orthodont", "distance ~ age * Sex + (1 | Subject)", False, ("lme4", "statsmodels")),
    ("pastes_nested", "lme4", "Pastes", "strength ~ 1 + (1 | batch/cask)", False, ("lme4",)),
]


@pytest.fixture(scope="module")
def rref() -> _R:
    return _R()


@pytest.fixture(scope="module")
def fits(rref: _R) -> dict:
    out = {}
    for mid, pkg, name, formula, reml, engines in MODELS:
        rdata, df = rref.data(pkg, name)
        for engine in engines:
            res = hlmbridge.fit(formula, df, engine=engine, reml=reml)
            out[(mid, engine)] = (res, rref.model(rdata, formula, reml, res), rref.model(rdata, formula, reml, None))
    return out


def _r_ci(rref: _R, fit, method: str, level: float) -> pd.DataFrame:
    out = rref.env["confint_reference"](fit, method, level)
    d = dict(zip(out.names, out))
    return pd.DataFrame({"low": np.array(d["low"], dtype=float), "high": np.array(d["high"], dtype=float)},
                        index=list(d["names"]))


CASES = [(m[0], e) for m in MODELS for e in m[5]]


@pytest.mark.parametrize("level", [0.95, 0.8])
@pytest.mark.parametrize("mid,engine", CASES)
def test_wald_matches_lme4(rref: _R, fits, mid: str, engine: str, level: float) -> None:
    res, at_fit, _ = fits[(mid, engine)]
    got = res.confint("Wald", level=level).set_index("term")
    want = _r_ci(rref, at_fit, "Wald", level)
    assert sorted(got.index) == sorted(want.index), f"{mid}: lme4 names"
    want = want.loc[got.index]
    fixed = [str(r[0]) for r in res.fixed_rows]
    np.testing.assert_allclose(got.loc[fixed, ["conf_low", "conf_high"]].to_numpy(),
                               want.loc[fixed].to_numpy(), rtol=1e-7, err_msg=f"{mid}/{engine}")
    random = [t for t in got.index if t not in fixed]
    assert got.loc[random, ["conf_low", "conf_high"]].isna().all().all()  # lme4: NA
    assert want.loc[random].isna().all().all()
    assert set(got["method"]) == {"Wald"} and set(got["level"]) == {level}


@pytest.mark.parametrize("mid,engine", [c for c in CASES if c[1] == "lme4"])
def test_profile_matches_lme4(rref: _R, fits, mid: str, engine: str) -> None:
    res, _, own_fit = fits[(mid, engine)]
    got = res.confint("profile").set_index("term")
    want = _r_ci(rref, own_fit, "profile", 0.95)
    assert sorted(got.index) == sorted(want.index), f"{mid}: lme4 names"
    want = want.loc[got.index]
    np.testing.assert_allclose(got[["conf_low", "conf_high"]].to_numpy(), want.to_numpy(), rtol=1e-4,
                               atol=1e-6, err_msg=f"{mid}: profile")
    assert set(got["method"]) == {"profile"}
    # another level: the profile's own intervals (lme4's spline is coarser away from 95%, see test_profile)
    from hlmbridge.inference.profile import profile_ci

    at90 = res.confint("profile", level=0.9)
    pd.testing.assert_frame_equal(at90[["term", "estimate", "conf_low", "conf_high"]],
                                  profile_ci(res, 0.9)[["term", "estimate", "conf_low", "conf_high"]])


def test_boot_intervals_are_the_bootstraps(fits) -> None:
    """method='boot' reports the bootstrap's own intervals (percentile, basic, normal) for lme4's
    parameters, and names the type; a bootstrap already run can be passed."""
    res, _, _ = fits[("orthodont_ml", "statsmodels")]
    rng = np.random.default_rng(1)
    names = ["sd_(Intercept)|Subject", "sigma"] + [str(r[0]) for r in res.fixed_rows]
    from hlmbridge.inference.bootstrap import result_numbers

    est = tuple(result_numbers(res).items())
    reps = tuple(tuple(v + rng.normal() * 0.1 for _, v in est) for _ in range(50))
    boot = BootstrapResult(50, 1, res.engine, est, reps, tuple(range(50)), ())
    for kind in ("percentile", "basic", "normal"):
        got = res.confint("boot", level=0.9, boot=boot, boot_type=kind).set_index("term")
        want = boot.intervals(0.9, kind).set_index("quantity").loc[names]
        assert list(got.index) == names
        np.testing.assert_array_equal(got[["conf_low", "conf_high"]].to_numpy(),
                                      want[["conf_low", "conf_high"]].to_numpy())
        assert set(got["method"]) == {f"boot-{kind}"}


def test_confint_errors(fits) -> None:
    res, _, _ = fits[("sleep", "statsmodels")]
    with pytest.raises(UsageError, match="method must be one of"):
        res.confint("wald")
    with pytest.raises(UsageError, match="level"):
        res.confint("Wald", level=95)
    with pytest.raises(UsageError, match="needs data="):
        res.confint("boot")
    with pytest.raises(UsageError, match="method='boot' only"):
        res.confint("Wald", n=50)
    with pytest.raises(UsageError, match="unknown keyword"):
        res.confint("boot", nsim=3)
    with pytest.raises(UsageError, match="boot_type"):
        res.confint("boot", data=hlmbridge.datasets.sleepstudy(), boot_type="bca")
    other, _, _ = fits[("sleep", "lme4")]
    from hlmbridge.inference.bootstrap import result_numbers

    est = tuple(result_numbers(other).items())
    with pytest.raises(UsageError, match="another fit"):
        res.confint("boot", boot=BootstrapResult(1, 1, "lme4", est, (tuple(v for _, v in est),), (0,), ()))


def test_parm_picks_rows_as_lme4(fits) -> None:
    res, _, _ = fits[("sleep", "statsmodels")]
    full = res.confint("Wald", level=0.9)
    fixed = [str(r[0]) for r in res.fixed_rows]
    pd.testing.assert_frame_equal(res.confint("Wald", level=0.9, parm="beta_"),
                                  full[full["term"].isin(fixed)].reset_index(drop=True))
    pd.testing.assert_frame_equal(res.confint("Wald", level=0.9, parm="theta_"),
                                  full[~full["term"].isin(fixed)].reset_index(drop=True))
    prof = res.confint("profile", parm=["Days", "sigma"])
    assert prof["term"].tolist() == ["sigma", "Days"]  # the table's order
    from hlmbridge.inference.profile import profile_ci

    whole = profile_ci(res).set_index("term").loc[["sigma", "Days"]]
    np.testing.assert_allclose(prof[["conf_low", "conf_high"]].to_numpy(), whole[["conf_low", "conf_high"]].to_numpy(),
                               rtol=1e-9)
    with pytest.raises(UsageError, match="parm must be"):
        res.confint("Wald", parm=["days"])
