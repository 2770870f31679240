"""The sparse Stata-parity inference of crossed designs (hlmbridge.inference.sparse) against
the dense closed forms (stata_parity._dense_evaluate, one block as wide as all the effects).

Everything is computed: simulated crossed data, both paths at the same estimates. The
sparse path's log likelihood, GLS coefficients and (X'V^-1X)^-1 are exact. Its information
is exact too on the block path (the largest level eliminated first, the rest dense: agreement
to rounding, checked at 1e-10); on the factorization path, taken where the rest is too wide,
the trace term comes from a Richardson-extrapolated numerical Hessian of the exact sparse log
determinant, so it must agree with the dense closed form to 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hlmbridge.design.build import build_design
from hlmbridge.inference import stata_parity
from hlmbridge.inference import sparse
from hlmbridge.inference.sparse import is_crossed, sparse_evaluate
from hlmbridge.spec.model import ModelSpec


def _crossed(n: int = 400, ga: int = 30, gb: int = 18, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, ga, n), rng.integers(0, gb, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(size=ga)[a] + 0.6 * rng.normal(size=ga)[a] * x + 0.7 * rng.normal(size=gb)[b]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": rng.integers(0, 7, n),
                         "w": rng.uniform(0.5, 2.0, n)})


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _assert_same_evaluation(d: object, beta: list[float], theta: list[float], reml: bool,
                            information_rtol: float) -> tuple[object, object]:
    """The sparse evaluation at (beta, theta) equals the dense closed form: log likelihood,
    GLS coefficients and their covariance exactly, the information to ``information_rtol``."""
    dense = stata_parity._dense_evaluate(d, np.array(beta), np.array(theta), reml=reml)
    got = sparse_evaluate(d, np.array(beta), np.array(theta), reml=reml)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.beta_gls, got.beta_gls) < 1e-10
    assert _rel(dense.fixed_vcov, got.fixed_vcov) < 1e-10
    assert _rel(dense.information, got.information) < information_rtol
    return dense, got


CASES = [
    # (formula, beta, theta in variance_parameters order: here b's level comes first), near
    # the simulated values
    ("y ~ x + (1 | a) + (1 | b)", [1.0, 0.5], [1.1, 0.45, 0.95]),
    ("y ~ x + (x | a) + (1 | b)", [1.0, 0.5], [0.45, 0.35, 0.9, 0.1, 1.0]),
    ("y ~ x + (x || a) + (1 | b)", [1.0, 0.5], [0.45, 0.35, 0.9, 1.0]),
    ("y ~ x + (1 | a) + (1 | b) + (1 | c)", [1.0, 0.5], [1.1, 0.45, 0.2, 0.95]),
    ("y ~ x + (1 | a) + (1 | b)", [1.0, 0.5], [1.1, 0.0, 0.95]),  # a variance at the boundary
    ("y ~ x + (x | a) + (1 | b)", [1.0, 0.5], [0.0, 0.35, 0.9, 0.1, 1.0]),
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,beta,theta", CASES)
def test_sparse_matches_dense_closed_form(formula: str, beta: list[float], theta: list[float], reml: bool) -> None:
    d = build_design(ModelSpec.from_lme4(formula, reml=reml), _crossed())
    assert is_crossed(d)
    _assert_same_evaluation(d, beta, theta, reml, information_rtol=1e-6)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,start", [("y ~ x + (1 | a) + (1 | b)", [1.1, 0.45, 0.95]),
                                           ("y ~ x + (x | a) + (1 | b)", [0.45, 0.35, 0.9, 0.1, 1.0])])
def test_sparse_standard_errors_at_the_optimum(formula: str, start: list[float], reml: bool) -> None:
    """At the optimum (where the information is positive definite, as after a fit) the
    covariance of the variance parameters agrees too."""
    from scipy.optimize import minimize

    from hlmbridge.inference.optimum import profiled_loglik

    d = build_design(ModelSpec.from_lme4(formula, reml=reml), _crossed())
    fit = minimize(lambda t: -profiled_loglik(d, t), np.array(start), method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20_000, "maxfev": 20_000})
    theta = fit.x
    beta = stata_parity._dense_evaluate(d, np.zeros(2), theta, reml=reml).beta_gls
    dense = stata_parity._dense_evaluate(d, beta, theta, reml=reml)
    sparse = sparse_evaluate(d, beta, theta, reml=reml)
    assert np.linalg.eigvalsh(dense.information).min() > 0
    assert _rel(dense.information, sparse.information) < 1e-6
    assert _rel(dense.random_vcov, sparse.random_vcov) < 1e-6
    se_dense, se_sparse = np.sqrt(np.diag(dense.random_vcov)), np.sqrt(np.diag(sparse.random_vcov))
    np.testing.assert_allclose(se_sparse, se_dense, rtol=1e-6)


def test_sparse_with_weights_matches_dense() -> None:
    df = _crossed()
    d = build_design(ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)", reml=False), df, weights="w")
    assert d.weights is not None
    theta = np.array([1.1, 0.45, 0.95])
    for reml in (False, True):
        dense = stata_parity._dense_evaluate(d, np.array([1.0, 0.5]), theta, reml=reml)
        sparse = sparse_evaluate(d, np.array([1.0, 0.5]), theta, reml=reml)
        assert sparse.loglik == pytest.approx(dense.loglik, rel=1e-12)
        assert _rel(dense.fixed_vcov, sparse.fixed_vcov) < 1e-10
        assert _rel(dense.information, sparse.information) < 1e-6


def test_evaluate_dispatch() -> None:
    """evaluate() keeps the dense closed forms for nested designs and small crossed ones
    (bit for bit) and uses the sparse path for larger crossed ones."""
    df = _crossed(n=600, ga=120, gb=60)
    theta = np.array([1.1, 0.45, 0.95])
    big = build_design(ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)"), df)
    assert sum(ld.n_groups for ld in big.levels) > stata_parity._DENSE_CROSSED_MAX
    via = stata_parity.evaluate(big, np.array([1.0, 0.5]), theta)
    direct = sparse_evaluate(big, np.array([1.0, 0.5]), theta, reml=True)
    assert via.loglik == direct.loglik
    np.testing.assert_array_equal(via.information, direct.information)
    small = build_design(ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)"), _crossed())
    nested = build_design(ModelSpec.from_lme4("y ~ x + (x | a)"), _crossed())
    for d, th in ((small, theta), (nested, np.array([0.35, 0.9, 0.2, 1.0]))):
        a = stata_parity.evaluate(d, np.array([1.0, 0.5]), th)
        b = stata_parity._dense_evaluate(d, np.array([1.0, 0.5]), th, reml=True)
        assert a.loglik == b.loglik
        np.testing.assert_array_equal(a.information, b.information)
        np.testing.assert_array_equal(a.fixed_vcov, b.fixed_vcov)


def test_sparse_refuses_nonpositive_residual() -> None:
    from hlmbridge.errors import FitError

    d = build_design(ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)"), _crossed())
    with pytest.raises(FitError, match="residual variance"):
        sparse_evaluate(d, np.array([1.0, 0.5]), np.array([1.0, 1.0, 0.0]), reml=True)


EXACT_CASES = CASES + [
    # the largest level (b: 18 groups x 2 effects) has two uncorrelated effects
    ("y ~ x + (1 | a) + (x || b)", [1.0, 0.5], [1.1, 0.45, 0.2, 0.95]),
    # a correlated pair outside the largest level, and a third crossed level
    ("y ~ x + (1 | a) + (x | b) + (1 | c)", [1.0, 0.5], [1.1, 0.45, 0.1, 0.2, 0.3, 0.95]),
    ("y ~ 1 + (1 | a) + (1 | b)", [1.0], [1.1, 0.45, 0.95]),  # no slope in X: p = 1
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,beta,theta", EXACT_CASES)
def test_block_path_is_exact(formula: str, beta: list[float], theta: list[float], reml: bool,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The block path (no numerical derivative anywhere) equals the dense closed form to rounding."""
    d = build_design(ModelSpec.from_lme4(formula, reml=reml), _crossed())
    assert sparse._prepare(d).blocks is not None

    def no_differences(*args: object, **kwargs: object) -> None:
        raise AssertionError("the block path must not take numerical derivatives")

    monkeypatch.setattr(sparse, "_hessian", no_differences)
    dense, got = _assert_same_evaluation(d, beta, theta, reml, information_rtol=1e-10)
    assert _rel(dense.score, got.score) < 1e-9
    assert _rel(dense.random_vcov, got.random_vcov) < 1e-9


def test_block_path_with_weights_is_exact() -> None:
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | a) + (1 | b)", reml=False), _crossed(), weights="w")
    assert sparse._prepare(d).blocks is not None
    theta = np.array([0.45, 0.35, 0.9, 0.1, 1.0])
    for reml in (False, True):
        dense = stata_parity._dense_evaluate(d, np.array([1.0, 0.5]), theta, reml=reml)
        got = sparse_evaluate(d, np.array([1.0, 0.5]), theta, reml=reml)
        assert got.loglik == pytest.approx(dense.loglik, rel=1e-12)
        assert _rel(dense.information, got.information) < 1e-10


@pytest.mark.parametrize("formula,beta,theta", [CASES[0], CASES[1], CASES[4]])
def test_factorization_path_where_the_rest_is_too_wide(formula: str, beta: list[float], theta: list[float],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the block path's size limit the SuperLU path with numerical second derivatives
    is taken, and still agrees with the dense closed form to 1e-6."""
    monkeypatch.setattr(sparse, "_BLOCK_MAX_REST", 10)  # b has 18 groups: too wide now
    d = build_design(ModelSpec.from_lme4(formula), _crossed())
    assert sparse._prepare(d).blocks is None
    dense = stata_parity._dense_evaluate(d, np.array(beta), np.array(theta), reml=True)
    got = sparse_evaluate(d, np.array(beta), np.array(theta), reml=True)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.information, got.information) < 1e-6


def test_block_factor_only_on_the_feasible_set() -> None:
    """A covariance that is not positive semidefinite gets no block factor (the SuperLU
    path's pivoted LU takes it, as finite-difference steps past a boundary need)."""
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | a) + (1 | b)"), _crossed())
    sd = sparse._prepare(d)
    # (var b, var x, var _cons, cov(x, _cons)): a cov of 0.9 > sqrt(0.35 * 0.9)
    assert sparse._block_factor(sd, np.array([0.45, 0.35, 0.9, 0.9])) is None
    assert sparse._block_factor(sd, np.array([0.45, 0.35, 0.9, 0.1])) is not None
    dense = stata_parity._dense_evaluate(d, np.array([1.0, 0.5]), np.array([0.45, 0.35, 0.9, 0.9, 1.0]), reml=True)
    got = sparse_evaluate(d, np.array([1.0, 0.5]), np.array([0.45, 0.35, 0.9, 0.9, 1.0]), reml=True)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-10)


# ------------------------------------------------------------------ the lme4 engine on crossed designs


@pytest.mark.requires_r
@pytest.mark.parametrize("reml", [True, False])
def test_lme4_crossed_fit_polished_equals_lmer_tight(reml: bool) -> None:
    """A crossed design on the block path is fitted by lmer's default optimizer and the Newton
    polish (issue 13); its numbers equal lmer's own with bobyqa to rhoend 1e-12 (computed in
    the same run) to 1e-6, the estimates to 1e-6 of a standard error."""
    import hlmbridge

    df = _crossed(n=1500, ga=150, gb=60, seed=11)
    formula = "y ~ x + (1 | a) + (1 | b)"
    polished = hlmbridge.fit(formula, df, engine="lme4", reml=reml)
    d = polished.design
    assert stata_parity.uses_sparse_algebra(d) and sparse.has_exact_derivatives(d)
    assert "Newton polish" in polished.optimizer, polished.optimizer
    tight = hlmbridge.fit(formula, df, engine="lme4", reml=reml, rhoend=1e-12)
    assert "bobyqa" in tight.optimizer and "polish" not in tight.optimizer
    assert polished.loglik == pytest.approx(tight.loglik, rel=1e-12, abs=1e-8)
    for a, b in zip(polished.fixed_rows, tight.fixed_rows, strict=True):
        assert a[:2] == b[:2]
        assert abs(a[2] - b[2]) <= 1e-6 * b[3]  # coefficient, within 1e-6 of its SE
        assert a[3] == pytest.approx(b[3], rel=1e-6)
    for a, b in zip(polished.random_rows, tight.random_rows, strict=True):
        assert a[:5] == b[:5]
        assert a[5] == pytest.approx(b[5], rel=1e-6)  # the variance component itself
        assert a[6] == pytest.approx(b[6], rel=1e-5)  # its standard error


@pytest.mark.requires_r
def test_lme4_crossed_fit_without_exact_derivatives_uses_bobyqa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the sparse algebra would take numerical second derivatives (a dozen
    factorizations a Newton step), the engine takes bobyqa to 1e-12 instead of the polish."""
    import hlmbridge

    monkeypatch.setattr(sparse, "_BLOCK_MAX_REST", 10)
    df = _crossed(n=1500, ga=150, gb=60, seed=11)
    fit = hlmbridge.fit("y ~ x + (1 | a) + (1 | b)", df, engine="lme4")
    assert not sparse.has_exact_derivatives(fit.design)
    assert "bobyqa, rhoend=1e-12" in fit.optimizer and "polish" not in fit.optimizer


# ------------------------------------------------------------------ the block path's variants


def _assert_block_path_exact(d: object, beta: list[float], theta: list[float], reml: bool) -> None:
    dense = stata_parity._dense_evaluate(d, np.array(beta), np.array(theta), reml=reml)
    got = sparse_evaluate(d, np.array(beta), np.array(theta), reml=reml)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.information, got.information) < 1e-10
    assert _rel(dense.score, got.score) < 1e-9


def _spy_paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bool]]:
    """Record, per evaluation, whether C12 was left unformed (the shortcut of a diagonal L2)
    and whether the largest level's terms were taken by rows (through V = U J)."""
    taken: dict[str, list[bool]] = {"shortcut": [], "by_rows": []}
    rest_blocks, by_rows = sparse._rest_blocks, sparse._terms_by_rows

    def spy_rest(*args: object) -> object:
        rb = rest_blocks(*args)
        taken["shortcut"].append(rb.C12 is None)
        return rb

    def spy_rows(*args: object) -> bool:
        out = by_rows(*args)
        taken["by_rows"].append(out)
        return out

    monkeypatch.setattr(sparse, "_rest_blocks", spy_rest)
    monkeypatch.setattr(sparse, "_terms_by_rows", spy_rows)
    return taken


PATH_CASES = [
    # (formula, theta, L2 diagonal (the shortcut applies), a single-effect largest level (by rows applies))
    ("y ~ x + (1 | a) + (1 | b)", [1.1, 0.45, 0.95], True, True),  # L2 = l I
    ("y ~ x + (1 | a) + (1 | b) + (1 | c)", [0.2, 0.45, 1.1, 0.95], True, True),  # two rest levels, two l's
    ("y ~ x + (1 | a) + (x || c)", [0.35, 0.9, 1.1, 0.95], True, True),  # a rest level of two effects
    ("y ~ x + (1 | a) + (x | c)", [0.35, 0.9, 0.1, 1.1, 0.95], False, True),  # correlated: L2 not diagonal
    ("y ~ x + (1 | a) + (x || b)", [1.1, 0.45, 0.2, 0.95], True, False),  # the largest level has two effects
]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("allow_shortcut", [True, False])
@pytest.mark.parametrize("allow_rows", [True, False])
@pytest.mark.parametrize("formula,theta,diagonal,single", PATH_CASES)
def test_block_path_variants_are_exact(formula: str, theta: list[float], diagonal: bool, single: bool,
                                       allow_shortcut: bool, allow_rows: bool, reml: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way through the block path (C22 and C12 by triangular solves or, for a diagonal
    L2, as scalings of S^-1; the largest level's terms through J U'U or through U J) equals
    the dense closed form to rounding, and each is taken exactly where it applies."""
    if not allow_shortcut:
        monkeypatch.setattr(sparse, "_SHORTCUT_MIN_DIFF", np.inf)
    monkeypatch.setattr(sparse, "_SPARSE_MAC", 0.0 if allow_rows else np.inf)
    taken = _spy_paths(monkeypatch)
    d = build_design(ModelSpec.from_lme4(formula, reml=reml), _crossed())
    assert sparse._prepare(d).blocks is not None
    _assert_block_path_exact(d, [1.0, 0.5], theta, reml)
    assert taken["shortcut"] == [allow_shortcut and diagonal]
    assert taken["by_rows"] == [allow_rows and single]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("rest_variance,shortcut", [(0.0, False), (1e-9, False), (1e-2, True), (50.0, True)])
def test_shortcut_only_where_it_keeps_its_digits(rest_variance: float, shortcut: bool, reml: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At a zero (L2 not invertible) or nearly zero variance outside the largest level, C22's
    diagonal (1 - S^-1_ii) / l_i^2 would lose its digits to cancellation: the general path is
    taken there. Both agree with the dense closed form, a large variance included."""
    taken = _spy_paths(monkeypatch)
    d = build_design(ModelSpec.from_lme4("y ~ x + (1 | a) + (1 | b)", reml=reml), _crossed())
    _assert_block_path_exact(d, [1.0, 0.5], [rest_variance, 0.45, 0.95], reml)
    assert taken["shortcut"] == [shortcut]


def test_block_helpers() -> None:
    """The in-place helpers: triangle filling, a thin update, the row-blocked ||U V'||^2."""
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    A = rng.normal(size=(150, 150))
    lower = np.tril(A)
    for order in ("C", "F"):
        M = np.array(lower, order=order)
        sparse._fill_upper(M, block=16)
        np.testing.assert_array_equal(M, lower + np.tril(A, -1).T)
    X, Y = rng.normal(size=(150, 2)), rng.normal(size=(150, 2))
    for C in (np.array(A, order="C"), np.array(A, order="F"), A[:, :120]):
        expect = C - X @ Y[:C.shape[1]].T
        sparse._subtract_outer(C, X, Y[:C.shape[1]])
        np.testing.assert_allclose(C, expect, rtol=1e-14, atol=1e-13)
    U = sp.random(40, 25, density=0.2, random_state=6, format="csr")
    V = rng.normal(size=(40, 25))
    expect = float(np.sum((U @ V.T) ** 2))
    for chunk in (1, 100, 1 << 22):
        assert sparse._sum_squares_product(U, V, chunk_entries=chunk) == pytest.approx(expect, rel=1e-13)
    np.testing.assert_allclose(sparse._row_quadratics(U, V), np.einsum("ij,ij->i", U.toarray(), V), rtol=1e-13)


def _wide_nested(schools: int = 4, classes: int = 60, n: int = 3000, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, schools * classes, n)
    school = cls // classes
    x = rng.normal(size=n)
    t = rng.integers(0, 5, n)  # crossed with the classes within each school
    y = (1 + 0.5 * x + rng.normal(size=schools)[school] + 0.7 * rng.normal(size=schools * classes)[cls]
         + 0.4 * rng.normal(size=schools * classes)[cls] * x + 0.5 * rng.normal(size=schools * 5)[school * 5 + t]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "school": school, "cls": cls, "t": t})


@pytest.mark.parametrize("reml", [True, False])
def test_wide_nested_blocks_take_the_sparse_block_path(reml: bool) -> None:
    """A nested design whose inner levels are not nested in one another (classes and t crossed
    within schools: no chain for the block-recursive path) with few outer groups holding many
    inner ones (4 dense blocks 141 wide) is cheaper on the sparse block path; evaluate() takes
    it and agrees with the dense form."""
    d = build_design(ModelSpec.from_lme4("y ~ x + (1 | school) + (1 | school:t) + (x | school:cls)", reml=reml),
                     _wide_nested())
    assert not is_crossed(d)
    assert stata_parity.uses_sparse_algebra(d) and sparse.has_exact_derivatives(d)
    params = stata_parity.variance_parameters(d)
    theta = np.array([{"var": 0.6, "cov": 0.05}[p.kind] for p in params])
    beta = np.array([1.0, 0.5])
    dense = stata_parity._dense_evaluate(d, beta, theta, reml=reml)
    got = stata_parity.evaluate(d, beta, theta, reml=reml)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.information, got.information) < 1e-10
    assert _rel(dense.score, got.score) < 1e-9
