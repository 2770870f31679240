"""The block-recursive inference of nested designs (hlmbridge.inference.nested) against the
dense closed forms (stata_parity._dense_evaluate, one dense block per outermost group).

Everything is computed: simulated nested data (2 and 3 levels, random slopes, unbalanced
blocks, weights, REML and ML, variances at the boundary), both paths at the same estimates.
The recursion is exact, so every quantity must agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hlmbridge.design.build import build_design
from hlmbridge.inference import nested, stata_parity
from hlmbridge.spec.model import ModelSpec


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _nested_data(seed: int, n: int, schools: int, classes: int, students: int) -> pd.DataFrame:
    """Unbalanced nested groups: each school has its own number of classes, each class of
    students, and the rows fall on them at random (some schools much larger than others)."""
    rng = np.random.default_rng(seed)
    size = rng.gamma(0.7, size=schools) + 0.05
    s = rng.choice(schools, size=n, p=size / size.sum())
    c = rng.integers(0, classes, n) % (1 + s % classes)  # schools differ in their number of classes
    t = rng.integers(0, students, n)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    cls = s * classes + c
    stu = cls * students + t
    y = (1 + 0.5 * x + rng.normal(size=schools)[s] + 0.5 * rng.normal(size=schools)[s] * x
         + 0.8 * rng.normal(size=schools * classes)[cls] + 0.3 * rng.normal(size=schools * classes)[cls] * z
         + 0.6 * rng.normal(size=schools * classes * students)[stu] + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "z": z, "s": s, "c": c, "t": t, "w": rng.uniform(0.3, 3.0, n)})


def _theta(d: object, rng: np.random.Generator, zero: int | None = None) -> np.ndarray:
    """Variance parameters near the simulated values with positive definite level matrices
    (covariances a fraction of the variances' geometric mean); ``zero``: one variance at 0
    (and its covariances)."""
    params = stata_parity.variance_parameters(d)
    var = {}
    theta = np.empty(len(params))
    for k, p in enumerate(params):
        if p.kind == "var":
            theta[k] = 0.0 if k == zero else rng.uniform(0.2, 1.5)
            var[(p.level, p.term1)] = theta[k]
    for k, p in enumerate(params):
        if p.kind == "cov":
            theta[k] = rng.uniform(-0.4, 0.4) * np.sqrt(var[(p.level, p.term1)] * var[(p.level, p.term2)])
    return theta


FORMULAS = [
    "y ~ x + (1 | s)",
    "y ~ x + (x | s)",
    "y ~ x + (1 | s/c)",
    "y ~ x + z + (x | s) + (z | s:c)",
    "y ~ x + (x || s) + (1 | s:c)",
    "y ~ x + (1 | s/c/t)",
    "y ~ x + z + (x | s) + (1 | s:c) + (z | s:c:t)",
    "y ~ 0 + x + (1 | s) + (x | s:c)",
]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", FORMULAS)
def test_nested_matches_dense_closed_form(formula: str, reml: bool, weighted: bool) -> None:
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        df = _nested_data(seed, n=int(rng.integers(300, 700)), schools=int(rng.integers(6, 14)), classes=4,
                          students=3)
        d = build_design(ModelSpec.from_lme4(formula, reml=reml), df, weights="w" if weighted else None)
        assert nested.is_nested_chain(d) and (d.weights is not None) == weighted
        theta = _theta(d, rng)
        beta = rng.normal(size=d.n_fixed)
        for b in (beta, None):
            dense = stata_parity._dense_evaluate(d, b, theta, reml=reml)
            got = nested.nested_evaluate(d, b, theta, reml=reml)
            assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
            assert _rel(dense.beta_gls, got.beta_gls) < 1e-10
            assert _rel(dense.fixed_vcov, got.fixed_vcov) < 1e-10
            assert _rel(dense.score, got.score) < 1e-10
            assert _rel(dense.information, got.information) < 1e-10


@pytest.mark.parametrize("reml", [True, False])
def test_nested_at_a_boundary(reml: bool) -> None:
    """A zero variance (a singular level covariance, as a boundary fit gives) is fine."""
    df = _nested_data(7, n=500, schools=10, classes=4, students=3)
    d = build_design(ModelSpec.from_lme4("y ~ x + (x | s) + (1 | s:c) + (1 | s:c:t)", reml=reml), df)
    params = stata_parity.variance_parameters(d)
    for zero in [k for k, p in enumerate(params) if p.kind == "var" and p.level is not None]:
        theta = _theta(d, np.random.default_rng(zero), zero=zero)
        theta[[k for k, p in enumerate(params) if p.kind == "cov" and params[zero].level == p.level]] = 0.0
        dense = stata_parity._dense_evaluate(d, None, theta, reml=reml)
        got = nested.nested_evaluate(d, None, theta, reml=reml)
        assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
        assert _rel(dense.score, got.score) < 1e-10
        assert _rel(dense.information, got.information) < 1e-10


def wide_nested_design() -> object:
    """Few outer groups holding many inner ones (egsingle's shape): 5 schools of 150 classes,
    ``y ~ x + (x | s) + (x | s:c)``."""
    rng = np.random.default_rng(4)
    n, schools, classes = 4000, 5, 150
    cls = rng.integers(0, schools * classes, n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=schools)[cls // classes] + rng.normal(size=schools * classes)[cls] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "s": cls // classes, "c": cls})
    return build_design(ModelSpec.from_lme4("y ~ x + (x | s) + (x | s:c)"), df)


def test_wide_nested_blocks_take_the_nested_path() -> None:
    """On :func:`wide_nested_design` evaluate() takes the block-recursive path, and it agrees
    with the dense closed form."""
    d = wide_nested_design()
    assert stata_parity._path(d) == "nested" and not stata_parity.uses_sparse_algebra(d)
    theta = np.array([0.9, 0.4, 0.1, 0.8, 0.3, -0.1, 1.0])
    dense = stata_parity._dense_evaluate(d, None, theta, reml=True)
    got = stata_parity.evaluate(d, None, theta, reml=True)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.information, got.information) < 1e-10


def test_many_small_blocks_keep_the_dense_path() -> None:
    """Thousands of outer groups of a few effects each: the dense closed forms are cheaper."""
    rng = np.random.default_rng(5)
    n = 18_000
    cls = rng.integers(0, 9000, n)
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "s": cls // 3, "c": cls})
    d = build_design(ModelSpec.from_lme4("y ~ x + (1 | s/c)"), df)
    assert stata_parity._path(d) == "dense"


def test_not_a_chain() -> None:
    """Two inner factors crossed within the outer groups do not form a chain."""
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"y": rng.normal(size=300), "s": rng.integers(0, 5, 300), "t": rng.integers(0, 4, 300),
                       "c": rng.integers(0, 3, 300)})
    d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | s) + (1 | s:t) + (1 | s:c)"), df)
    assert not nested.is_nested_chain(d) and nested.nested_work(d) is None


def test_chunked_elimination_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups eliminated a few at a time (as for a large design) give the same numbers."""
    df = _nested_data(3, n=600, schools=12, classes=4, students=3)
    d = build_design(ModelSpec.from_lme4("y ~ x + z + (x | s) + (1 | s:c) + (z | s:c:t)"), df, weights="w")
    theta = _theta(d, np.random.default_rng(3))
    whole = nested.nested_evaluate(d, None, theta, reml=True)
    monkeypatch.setattr(nested, "_CHUNK", 2000)
    nested._last_recursion(d).clear()  # else the last theta's recursion is served again
    chunked = nested.nested_evaluate(d, None, theta, reml=True)
    assert chunked.loglik == pytest.approx(whole.loglik, rel=1e-13)
    assert _rel(whole.information, chunked.information) < 1e-12
    assert _rel(whole.score, chunked.score) < 1e-12


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("command", ["mixed y x || s: x, cov(exchangeable) || c:",
                                     "mixed y x || s: x z, cov(identity) || c: z, cov(unstructured)",
                                     "mixed y x || s: x z, cov(independent) || c: || t:"])
def test_nested_with_stata_covariance_structures(command: str, reml: bool) -> None:
    """Shared parameters (identity, exchangeable) enter as patterns with several nonzeros."""
    d = build_design(ModelSpec.parse(command, reml=reml), _nested_data(9, n=400, schools=15, classes=5, students=4))
    theta = np.array([0.15 if p.kind == "cov" else 0.8 for p in stata_parity.variance_parameters(d)])
    dense = stata_parity._dense_evaluate(d, None, theta, reml=reml)
    got = nested.nested_evaluate(d, None, theta, reml=reml)
    assert got.loglik == pytest.approx(dense.loglik, rel=1e-12, abs=1e-9)
    assert _rel(dense.information, got.information) < 1e-10
    assert _rel(dense.score, got.score) < 1e-10


def test_too_large_sums_decline_the_nested_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the per-group sums of the second derivatives would exceed ``_MAX_SUMS`` numbers
    (many fixed effects and slopes), the design keeps the dense path instead of the memory."""
    df = _nested_data(2, n=2000, schools=4, classes=4, students=3)
    d = build_design(ModelSpec.from_lme4("y ~ x + z + (x | s) + (z | s:c)"), df)
    assert nested.nested_work(d) is not None
    monkeypatch.setattr(nested, "_MAX_SUMS", 100)
    d = build_design(ModelSpec.from_lme4("y ~ x + z + (x | s) + (z | s:c)"), df.copy())
    assert nested.nested_work(d) is None and stata_parity._path(d) == "dense"
