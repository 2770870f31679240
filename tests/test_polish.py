"""The lme4 engine's default path: lmer's default optimizer, then a Newton polish on the
analytic score (hlmbridge/inference/polish.py), with its fallbacks.

The score is checked against central differences of hlmbridge's own log likelihood (whose
values tests/test_differential_r.py checks against lmer's); the polished optimum against
lmer with bobyqa to rhoend 1e-12 (the engine's tight path): the same optimum, and never a
lower log likelihood.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.design.build import build_design
from hlmbridge.errors import HlmbridgeError
from hlmbridge.inference.polish import newton_polish
from hlmbridge.inference.sparse import sparse_evaluate
from hlmbridge.inference.stata_parity import evaluate, variance_parameters

MODEL2 = "mixed mathach ses || id: ses, cov(unstructured)"


def _central_score(design, theta: np.ndarray, fun) -> np.ndarray:
    out = np.empty(len(theta))
    for k in range(len(theta)):
        h = 1e-5 * max(1.0, abs(theta[k]))
        e = np.zeros(len(theta))
        e[k] = h
        out[k] = (fun(theta + e) - fun(theta - e)) / (2 * h)
    return out


@pytest.mark.parametrize("reml", [False, True])
def test_dense_score_is_the_gradient_of_the_log_likelihood(hsb_combined: pd.DataFrame, reml: bool) -> None:
    d = build_design(hlmbridge.ModelSpec.from_lme4("mathach ~ ses + (ses | id)", reml=reml), hsb_combined)
    theta = np.array([2.0, 0.1, 0.3, 36.0])
    assert len(theta) == len(variance_parameters(d))
    score = evaluate(d, None, theta).score
    fd = _central_score(d, theta, lambda t: evaluate(d, None, t).loglik)
    np.testing.assert_allclose(score, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reml", [False, True])
def test_sparse_score_equals_the_dense_one(reml: bool) -> None:
    rng = np.random.default_rng(3)
    a, b, x = rng.integers(0, 40, 800), rng.integers(0, 30, 800), rng.normal(size=800)
    df = pd.DataFrame({"y": rng.normal(size=800) + rng.normal(size=40)[a] + rng.normal(size=30)[b] + x,
                       "a": a, "b": b, "x": x})
    d = build_design(hlmbridge.ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)", reml=reml), df)
    theta = np.array([0.8, 1.3, 1.1])
    sparse = sparse_evaluate(d, None, theta, reml=reml).score
    dense = evaluate(d, None, theta).score  # 70 random effects: the dense closed form
    np.testing.assert_allclose(sparse, dense, rtol=1e-8)
    fd = _central_score(d, theta, lambda t: sparse_evaluate(d, None, t, reml=reml).loglik)
    np.testing.assert_allclose(sparse, fd, rtol=1e-6)


def test_polish_refuses_a_boundary_start(hsb_combined: pd.DataFrame) -> None:
    d = build_design(hlmbridge.ModelSpec.parse(MODEL2), hsb_combined)
    assert newton_polish(d, np.array([0.0, 0.0, 0.0, 36.0])) is None


@pytest.mark.requires_r
@pytest.mark.parametrize("model", [MODEL2, "mixed mathach ses sector || id:", "mixed mathach ses || id: ses, reml"])
def test_polished_optimum_is_lmers_tight_optimum(hsb_combined: pd.DataFrame, model: str) -> None:
    polished = hlmbridge.fit(model, hsb_combined, engine="lme4")
    tight = hlmbridge.fit(model, hsb_combined, engine="lme4", rhoend=1e-12)
    assert "Newton polish" in polished.optimizer and "nloptwrap" in polished.optimizer
    assert "bobyqa" in tight.optimizer and "Newton" not in tight.optimizer
    assert polished.loglik >= tight.loglik - 1e-10
    # Both at the optimum: within 1e-5 relative (bobyqa's own stopping error on this flat
    # likelihood is up to 5.7e-6) and, on the statistical scale, 1e-4 of a standard error.
    for a, b in ((polished.fixed, tight.fixed), (polished.random, tight.random)):
        est_a, est_b = a["estimate"].to_numpy(), b["estimate"].to_numpy()
        assert np.all(np.abs(est_a - est_b) <= 1e-4 * b["std_error"].to_numpy())
        np.testing.assert_allclose(est_a, est_b, rtol=1e-5)
    # The polish leaves nothing to gain: one more Newton step would move nothing.
    d = build_design(polished.spec, hsb_combined)
    inf = evaluate(d, None, polished.random["estimate"].to_numpy())
    step = np.linalg.solve(inf.information, inf.score)
    assert 0.5 * float(inf.score @ step) < 1e-12


@pytest.mark.requires_r
@pytest.mark.parametrize("model", ["mixed mathach c.ses##i.sector || id: ses, cov(unstr)",
                                   "mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)"])
def test_boundary_fit_is_polished_in_lme4_parameters(hsb_combined: pd.DataFrame, model: str) -> None:
    # The ML optimum has corr(ses,_cons) = +1: G is singular, the polish runs in lme4's
    # Cholesky parameters with the zero pivot held at zero.
    res = hlmbridge.fit(model, hsb_combined, engine="lme4")
    tight = hlmbridge.fit(model, hsb_combined, engine="lme4", rhoend=1e-12)
    assert res.singular and tight.singular and "on the boundary" in res.optimizer
    assert res.loglik >= tight.loglik - 1e-10
    for a, b in ((res.fixed, tight.fixed), (res.random, tight.random)):
        est_a, est_b = a["estimate"].to_numpy(), b["estimate"].to_numpy()
        assert np.all(np.abs(est_a - est_b) <= 1e-4 * b["std_error"].to_numpy())
        np.testing.assert_allclose(est_a, est_b, rtol=1e-5)


def test_boundary_polish_refuses_a_boundary_that_is_not_the_optimum(hsb_combined: pd.DataFrame) -> None:
    # mathach ~ ses + (ses | id) has an interior ML optimum; a start with corr = 1 is on a
    # boundary that moving the zero pivot off zero improves, so the boundary polish declines.
    d = build_design(hlmbridge.ModelSpec.parse(MODEL2), hsb_combined)
    var_ses, var_cons = 0.7, 8.0
    start = np.array([var_ses, var_cons, np.sqrt(var_ses * var_cons), 36.8])
    assert [p.stata_term for p in variance_parameters(d)] == ["var(ses)", "var(_cons)", "cov(ses,_cons)",
                                                              "var(Residual)"]
    from hlmbridge.inference.polish import newton_polish_boundary

    assert newton_polish_boundary(d, start) is None


@pytest.mark.requires_r
def test_unidentified_variances_refit_tight_and_warn() -> None:
    df = hlmbridge.datasets.sleepstudy().assign(late=lambda d: d["Days"] > 4)
    model = "Reaction ~ Days + (Days | Subject) + (0 + late | Subject)"  # lateFALSE + lateTRUE = intercept
    res = hlmbridge.fit(model, df, engine="lme4")
    tight = hlmbridge.fit(model, df, engine="lme4", rhoend=1e-12)
    assert "refit: the Newton polish did not converge" in res.optimizer
    np.testing.assert_array_equal(res.random["estimate"], tight.random["estimate"])
    assert any("not all identified" in w for w in res.warnings)
    assert res.random["std_error"].isna().all()


@pytest.mark.requires_r
@pytest.mark.parametrize("bad", [0.0, 2.0, "1e-12", -1e-8])
def test_rhoend_out_of_range_is_refused(hsb_combined: pd.DataFrame, bad: object) -> None:
    with pytest.raises(HlmbridgeError, match="rhoend"):
        hlmbridge.fit(MODEL2, hsb_combined, engine="lme4", rhoend=bad)
