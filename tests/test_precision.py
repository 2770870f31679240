"""hlmbridge's own likelihood keeps its digits when y or X is shifted or scaled (issue 12 item 3).

Before: with the response shifted by 1e8 the Stata-parity log likelihood moved by 0.29
(ML) while lme4's stayed put. The likelihood of y + c at beta + c e_0 equals that of y at
beta exactly; scaling y by s adds -n log s; shifting or scaling a predictor reparametrizes
beta. Each is checked on hlmbridge's evaluation directly, at the same variance parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.design.build import build_design
from hlmbridge.inference.stata_parity import evaluate
from hlmbridge.spec.model import ModelSpec


@pytest.fixture(scope="module")
def base():
    ss = hlmbridge.datasets.sleepstudy()
    res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", ss, engine="statsmodels", reml=False)
    theta = res.random["estimate"].to_numpy()
    beta = res.fixed["estimate"].to_numpy()  # (Intercept), Days
    return ss, beta, theta


def _ll(df: pd.DataFrame, beta: np.ndarray, theta: np.ndarray, reml: bool) -> float:
    spec = ModelSpec.from_lme4("Reaction ~ Days + (Days | Subject)", reml=reml)
    return evaluate(build_design(spec, df), beta, theta).loglik


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("shift", [1e3, 1e6, 1e8, -1e8])
def test_shift_of_y(base, reml, shift):
    ss, beta, theta = base
    ref = _ll(ss, beta, theta, reml)
    df = ss.assign(Reaction=ss["Reaction"] + shift)
    assert _ll(df, beta + np.array([shift, 0.0]), theta, reml) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("scale", [1e-4, 1e4, 1e8])
def test_scale_of_y(base, reml, scale):
    ss, beta, theta = base
    ref = _ll(ss, beta, theta, reml)
    df = ss.assign(Reaction=ss["Reaction"] * scale)
    k = theta.copy()
    k *= scale**2  # every variance and covariance scales with s^2
    got = _ll(df, beta * scale, k, reml)
    n, p = len(ss), 2
    m = n - p if reml else n
    assert got == pytest.approx(ref - m * np.log(scale), abs=1e-6)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("scale", [1e3, 1e-5])
def test_scale_of_x(base, reml, scale):
    ss, beta, theta = base
    ref = _ll(ss, beta, theta, reml)
    # Days' = scale * Days: slope b/scale. The random slope is on Days' too, so its variance
    # and covariance rescale with it. (A shift of a random-slope variable is another
    # random-effects model; shifts are checked on a fixed-only predictor below.)
    df = ss.assign(Days=ss["Days"] * scale)
    a, b = beta
    k = theta.copy()
    k[0] = theta[0] / scale**2  # var(Days)
    k[2] = theta[2] / scale  # cov(Days,_cons)
    got = _ll(df, np.array([a, b / scale]), k, reml)
    # REML has -log|X'V^-1X|/2, which moves by -log(scale^2)/2 under this reparametrization.
    expected = ref - (np.log(scale**2) / 2 if reml else 0.0)
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shift", [1e4, 1e6])
def test_shift_of_a_fixed_only_predictor(shift):
    ss = hlmbridge.datasets.sleepstudy()
    spec = ModelSpec.from_lme4("Reaction ~ Days + (1 | Subject)", reml=False)
    res = hlmbridge.fit(spec, ss, engine="statsmodels")
    beta, theta = res.fixed["estimate"].to_numpy(), res.random["estimate"].to_numpy()
    ref = evaluate(build_design(spec, ss), beta, theta).loglik
    df = ss.assign(Days=ss["Days"] + shift)
    got = evaluate(build_design(spec, df), np.array([beta[0] - beta[1] * shift, beta[1]]), theta).loglik
    assert got == pytest.approx(ref, abs=1e-6)


@pytest.mark.requires_r
def test_lme4_engine_log_likelihood_agrees_with_lme4_at_a_large_mean():
    ss = hlmbridge.datasets.sleepstudy()
    df = ss.assign(Reaction=ss["Reaction"] + 1e8)
    for reml in (False, True):
        res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", df, engine="lme4", reml=reml)
        assert res.loglik == pytest.approx(res.engine_loglik, abs=1e-6)
