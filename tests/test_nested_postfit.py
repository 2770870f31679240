"""Post-fit quantities of nested designs by the block-recursive algebra (hlmbridge.inference.nested)
against the dense per-block computations: random effects (conditional modes and covariances) and
the df methods' derivatives of ``(X'V^-1X)^-1`` (Satterthwaite, Kenward-Roger).

Everything is computed: simulated nested data (2 and 3 levels, random slopes, unbalanced groups,
weights, variances at the boundary), both paths at the same estimates; the recursion is exact, so
they agree to rounding. A design too wide for the dense blocks is checked against a direct sparse
computation (scipy) of the same formulas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hlmbridge.design.build import build_design
from hlmbridge.inference import df_methods, nested, stata_parity
from hlmbridge.results import random_effects
from hlmbridge.spec.model import ModelSpec
from tests.test_nested_inference import FORMULAS, _nested_data, _theta, wide_nested_design


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _designs(formula: str, weighted: bool, reml: bool = True, seeds: int = 3):
    for seed in range(seeds):
        rng = np.random.default_rng(200 + seed)
        df = _nested_data(seed + 11, n=int(rng.integers(300, 700)), schools=int(rng.integers(6, 14)), classes=4,
                          students=3)
        d = build_design(ModelSpec.from_lme4(formula, reml=reml), df, weights="w" if weighted else None)
        assert nested.is_nested_chain(d) and (d.weights is not None) == weighted
        yield d, rng


def _check_effects(d: object, beta: np.ndarray, theta: np.ndarray) -> None:
    """Both paths' modes and covariances agree to rounding on the scale of each level (a level
    whose variance is 0 on the scale of all levels: the recursion gives exact zeros there, the
    dense path rounding noise)."""
    dense = random_effects.dense_conditional_effects(d, beta, theta)
    got = nested.nested_conditional_effects(d, beta, theta)
    assert len(got) == len(dense) == len(d.levels)
    m_all = max(np.abs(dm).max() for dm, _ in dense)
    c_all = max(np.abs(dc).max() for _, dc in dense)
    for ld, (dm, dc), (gm, gc) in zip(d.levels, dense, got):
        assert gm.shape == dm.shape == (ld.n_groups, ld.Z.shape[1]) and gc.shape == dc.shape
        m_scale = np.abs(dm).max() if np.abs(dc).max() > 1e-8 * c_all else m_all
        c_scale = max(np.abs(dc).max(), 1e-8 * c_all)
        assert np.abs(dm - gm).max() < 1e-10 * m_scale
        assert np.abs(dc - gc).max() < 1e-10 * c_scale


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("formula", FORMULAS)
def test_nested_random_effects_match_dense(formula: str, weighted: bool) -> None:
    for d, rng in _designs(formula, weighted):
        _check_effects(d, rng.normal(size=d.n_fixed), _theta(d, rng))


def test_nested_random_effects_at_a_boundary() -> None:
    """A level's covariance singular (a variance and its covariances at 0): zero modes with zero
    variance there, and the other levels as the dense path has them."""
    df = _nested_data(7, n=500, schools=10, classes=4, students=3)
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | s) + (1 | s:c) + (1 | s:c:t)"), df)
    params = stata_parity.variance_parameters(d)
    for zero in [k for k, p in enumerate(params) if p.kind == "var" and p.level is not None]:
        theta = _theta(d, np.random.default_rng(zero), zero=zero)
        theta[[k for k, p in enumerate(params) if p.kind == "cov" and params[zero].level == p.level]] = 0.0
        _check_effects(d, np.array([1.0, 0.5]), theta)


def test_wide_nested_design_routes_random_effects_to_the_recursion() -> None:
    """Few outer groups holding many inner ones: conditional_effects (ranef, coef, fitted ...)
    takes the block-recursive path, with the dense path's numbers."""
    d = wide_nested_design()
    assert stata_parity._path(d) == "nested"
    theta = np.array([0.9, 0.4, 0.1, 0.8, 0.3, -0.1, 1.0])
    beta = np.array([0.1, 1.0])
    got = random_effects.conditional_effects(d, beta, theta)
    for le, (dm, dc) in zip(got, random_effects.dense_conditional_effects(d, beta, theta)):
        assert _rel(dm, le.modes) < 1e-10 and _rel(dc, le.cond_cov) < 1e-10


def _too_wide_for_dense_blocks() -> tuple[object, pd.DataFrame]:
    """Two schools of 5,100 classes each: dense blocks of width 5,102 (2 x 5102^2 > 50M numbers,
    which the dense path refuses)."""
    rng = np.random.default_rng(12)
    schools, classes = 2, 5100
    n = 3 * schools * classes
    cls = np.repeat(np.arange(schools * classes), 3)
    s = cls // classes
    x = rng.normal(size=n)
    y = (1 + x + rng.normal(size=schools)[s] + 0.4 * rng.normal(size=schools)[s] * x
         + 0.7 * rng.normal(size=schools * classes)[cls] + rng.normal(size=n))
    df = pd.DataFrame({"y": y, "x": x, "s": s, "c": cls, "w": rng.uniform(0.5, 2.0, n)})
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | s) + (1 | s:c)"), df, weights="w")
    return d, df


def _sparse_parts(d: object, theta: np.ndarray) -> tuple[sp.csc_matrix, sp.csc_matrix, np.ndarray, np.ndarray]:
    """The whole-sample ``Z`` (weighted rows), the block-diagonal ``D^-1`` of every random
    effect (positive definite level covariances), and the weighted ``X`` and ``y``, by scipy.sparse."""
    sw = np.sqrt(d.weights)
    blocks, dblocks = [], []
    covs = stata_parity.level_covariances(d, theta)
    n = d.nobs
    for ld, G in zip(d.levels, covs):
        q = ld.Z.shape[1]
        rows = np.repeat(np.arange(n), q)
        cols = (ld.codes[:, None] * q + np.arange(q)).ravel()
        blocks.append(sp.csc_matrix(((ld.Z * sw[:, None]).ravel(), (rows, cols)), shape=(n, ld.n_groups * q)))
        dblocks.append(sp.block_diag([np.linalg.inv(G)] * ld.n_groups))
    return sp.hstack(blocks).tocsc(), sp.block_diag(dblocks).tocsc(), d.X * sw[:, None], d.y_fit * sw


def test_design_too_wide_for_dense_blocks_gets_random_effects() -> None:
    """Before the recursion such a design raised "too large for Stata-parity inference"; now its
    modes and conditional covariances match the sparse posterior ``(Z'Z / s2 + D^-1)^-1``."""
    d, _ = _too_wide_for_dense_blocks()
    assert stata_parity._path(d) == "nested"
    theta = np.array([0.8, 0.1, 0.2, 0.5, 1.1])  # var(x), var(_cons), cov at s; var(_cons) at c; residual
    beta = np.array([0.9, 1.1])
    got = random_effects.conditional_effects(d, beta, theta)
    Z, Dinv, X, y = _sparse_parts(d, theta)
    s2 = theta[-1]
    prec = (Z.T @ Z / s2 + Dinv).tocsc()
    lu = spla.splu(prec)
    mode = lu.solve(Z.T @ (y - X @ beta) / s2)
    q0 = d.levels[0].Z.shape[1]
    n0 = d.levels[0].n_groups * q0
    assert _rel(mode[:n0].reshape(-1, q0), got[0].modes) < 1e-9
    assert _rel(mode[n0:].reshape(-1, 1), got[1].modes) < 1e-9
    # Covariances: the posterior covariance's columns for both schools and a few classes.
    picks = list(range(n0)) + [n0 + j for j in (0, 17, 5099, 5100, 10199)]
    E = np.zeros((prec.shape[0], len(picks)))
    E[picks, np.arange(len(picks))] = 1.0
    cols = lu.solve(E)
    assert _rel(cols[:n0, :n0].reshape(2, q0, 2, q0)[[0, 1], :, [0, 1], :], got[0].cond_cov) < 1e-9
    cls_var = cols[picks[n0:], np.arange(n0, len(picks))]
    assert _rel(cls_var, got[1].cond_cov[[0, 17, 5099, 5100, 10199], 0, 0]) < 1e-9


@pytest.mark.requires_r
def test_nested_path_random_effects_equal_lme4() -> None:
    """On a design the recursion handles (5 schools of 150 classes, slopes at both levels), the
    lme4 engine's random effects and whole conditional covariances equal lme4's
    ``ranef(condVar = TRUE)`` (the checks of tests/test_postfit.py, same optimizer both sides)."""
    import hlmbridge
    from tests.test_postfit import SAME_OPTIMIZER, _check_ranef, _R

    rng = np.random.default_rng(21)
    n, schools, classes = 3000, 5, 150
    cls = rng.integers(0, schools * classes, n)
    x = rng.normal(size=n)
    s = cls // classes
    y = (x + rng.normal(size=schools)[s] + 0.5 * rng.normal(size=schools)[s] * x
         + rng.normal(size=schools * classes)[cls] + 0.4 * rng.normal(size=schools * classes)[cls] * x
         + rng.normal(size=n))
    df = pd.DataFrame({"y": y, "x": x, "s": [f"s{v}" for v in s], "c": [f"c{v}" for v in cls]})
    formula = "y ~ x + (x | s) + (x | s:c)"
    res = hlmbridge.fit(formula, df, engine="lme4", **SAME_OPTIMIZER)
    assert stata_parity._path(res.design) == "nested"
    R = _R()
    rfit = R.lmer(R.from_pandas(df), formula, True)
    assert _check_ranef(res, R, rfit) == 2 * (schools + df["c"].nunique())


# ---------------------------------------------------------------------------- df methods
def _analyses(d: object, beta: np.ndarray, theta: np.ndarray, reml: bool) -> list[df_methods.DfAnalysis]:
    out = [df_methods.df_analysis(d, beta, theta, "satterthwaite"),
           df_methods.df_analysis(d, beta, theta, "satterthwaite", information="expected")]
    if reml:
        out.append(df_methods.df_analysis(d, beta, theta, "kenward-roger"))
    return out


def _same_analysis(a: df_methods.DfAnalysis, b: df_methods.DfAnalysis) -> None:
    assert a.method == b.method
    assert _rel(a.vcov, b.vcov) < 1e-9
    assert _rel(a.vcov_adjusted, b.vcov_adjusted) < 1e-9
    assert _rel(a.jacobian, b.jacobian) < 1e-9
    for x, y in ((a.vcov_varpar, b.vcov_varpar), (a.kr_P, b.kr_P), (a.kr_W, b.kr_W)):
        assert (x is None) == (y is None)
        if x is not None:
            assert _rel(x, y) < 1e-9
    assert _rel(a.df, b.df) < 1e-9
    L = np.eye(a.beta.size)
    ta, tb = a.test(L), b.test(L)
    assert tb.f_value == pytest.approx(ta.f_value, rel=1e-9) and tb.ddf == pytest.approx(ta.ddf, rel=1e-9)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("formula", FORMULAS)
def test_nested_df_methods_match_dense(formula: str, weighted: bool, reml: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Satterthwaite (observed and expected information) and Kenward-Roger from the recursion's
    derivatives equal those from the dense blocks: the derivatives themselves (``Q_kl`` up to
    its symmetric part, the only part the methods use) and every df, covariance and F test."""
    for d, rng in _designs(formula, weighted, reml=reml, seeds=2):
        theta = _theta(d, rng)
        beta = rng.normal(size=d.n_fixed)
        dense = df_methods._dense_derivatives(d, theta)
        got = df_methods._nested_derivatives(d, theta)
        assert _rel(dense.phi, got.phi) < 1e-10 and _rel(dense.C, got.C) < 1e-10 and _rel(dense.S, got.S) < 1e-10
        assert _rel(0.5 * (dense.Q + dense.Q.transpose(1, 0, 2, 3)), got.Q) < 1e-10
        # The whole analyses, with df_analysis's derivatives taken from one path and then the other.
        monkeypatch.setattr(df_methods, "_derivatives", df_methods._dense_derivatives)
        want = _analyses(d, beta, theta, reml)
        monkeypatch.setattr(df_methods, "_derivatives", df_methods._nested_derivatives)
        for a, b in zip(want, _analyses(d, beta, theta, reml), strict=True):
            _same_analysis(a, b)
        monkeypatch.undo()


def test_design_too_wide_for_dense_blocks_gets_df_methods() -> None:
    """Before the recursion Satterthwaite and Kenward-Roger refused such a design ("too large for
    Stata-parity inference"); now ``Phi = (X'V^-1X)^-1`` and ``C_k = X'V^-1 V_k V^-1 X`` equal a
    direct sparse computation (Woodbury with ``(Z'Z / s2 + D^-1)^-1`` by scipy's LU)."""
    d, _ = _too_wide_for_dense_blocks()
    theta = np.array([0.8, 0.1, 0.2, 0.5, 1.1])
    beta = np.array([0.9, 1.1])
    assert stata_parity._path(d) == "nested"
    kr = df_methods.df_analysis(d, beta, theta, "kenward-roger")
    sat = df_methods.df_analysis(d, beta, theta, "satterthwaite")
    Z, Dinv, X, _ = _sparse_parts(d, theta)
    s2 = theta[-1]
    lu = spla.splu((Z.T @ Z / s2 + Dinv).tocsc())
    VX = (X - Z @ lu.solve(Z.T @ X) / s2) / s2  # V^-1 X
    phi = np.linalg.inv(X.T @ VX)
    assert _rel(phi, kr.vcov) < 1e-9 and _rel(phi, sat.vcov) < 1e-9
    params = stata_parity.variance_parameters(d)
    ZVX = Z.T @ VX
    for k, prm in enumerate(params):
        if prm.level is None:
            C = VX.T @ VX
        else:
            E = sp.block_diag([sp.csr_matrix((ld.n_groups * ld.Z.shape[1],) * 2) if li != prm.level else
                               sp.block_diag([prm.pattern] * ld.n_groups) for li, ld in enumerate(d.levels)])
            C = ZVX.T @ (E @ ZVX)
        assert _rel(-C, kr.kr_P[k]) < 1e-9
    assert np.all(np.diag(kr.vcov_adjusted) > np.diag(kr.vcov)) and np.all(np.isfinite(kr.df))
    assert np.all(np.isfinite(sat.df)) and np.all(sat.df > 1)


def test_the_last_recursion_is_reused_and_read_only() -> None:
    """After a fit, evaluate() (Satterthwaite's Hessian) and the df methods' derivatives at the
    same estimates share one recursion; another theta recomputes, and the shared arrays cannot
    be changed by a caller."""
    df = _nested_data(5, n=500, schools=10, classes=4, students=3)
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | s) + (1 | s:c)"), df)
    theta = _theta(d, np.random.default_rng(1))
    first = nested.nested_derivatives(d, theta)
    assert list(nested._last_recursion(d)) == [theta.tobytes()]
    again = nested.nested_derivatives(d, theta.copy())
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    with pytest.raises(ValueError):
        first[0][0, 0] = 1.0
    other = theta * 1.1
    moved = nested.nested_derivatives(d, other)
    assert list(nested._last_recursion(d)) == [other.tobytes()] and not np.allclose(moved[1], first[1])


# ---------------------------------------------------------------------------- profile likelihood
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("formula", FORMULAS)
def test_nested_ml_parts_match_dense(formula: str, weighted: bool) -> None:
    """The profile likelihood's points (ML log likelihood at the GLS fixed effects, those and
    their covariance) from the recursion without derivatives equal the dense blocks' numbers."""
    from hlmbridge.inference import profile

    for d, rng in _designs(formula, weighted, reml=False):
        theta = _theta(d, rng)
        ll, b, v = profile._ml_parts(d, theta)
        ll2, b2, v2 = nested.nested_ml_parts(d, theta)
        assert ll2 == pytest.approx(ll, rel=1e-12, abs=1e-9)
        assert _rel(b, b2) < 1e-10 and _rel(v, v2) < 1e-10


@pytest.mark.requires_r
def test_nested_path_profile_matches_lme4() -> None:
    """A design the recursion handles (8 schools of 120 classes, ML): every profile point is
    the recursion's likelihood, and the intervals equal lme4's ``confint(method = "profile")``
    (the checks and tolerance of tests/test_profile.py)."""
    from hlmbridge.inference.profile import _Profiler, profile_ci
    from tests.test_profile import _check, _R as _ProfileR

    rng = np.random.default_rng(31)
    n, schools, classes = 2500, 8, 120
    cls = rng.integers(0, schools * classes, n)
    s = cls // classes
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(size=schools)[s] + 0.8 * rng.normal(size=schools * classes)[cls] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "s": pd.Categorical([f"s{v}" for v in s]),
                       "c": pd.Categorical([f"c{v}" for v in cls])})
    formula = "y ~ x + (1 | s) + (1 | s:c)"
    import hlmbridge

    res = hlmbridge.fit(formula, df, engine="lme4", reml=False)
    assert _Profiler(res.design, np.array([r[5] for r in res.random_rows])).nested
    theirs, _ = _ProfileR().confint(df, formula, False)
    _check(profile_ci(res), theirs, "nested-8x120", res)
