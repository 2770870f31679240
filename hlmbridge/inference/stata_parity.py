"""Stata-parity inference at given estimates: log likelihood, fixed-effect and
variance-component covariance matrices.

The variance parameters are the entries of each level's random-effects covariance
matrix that the structure leaves free (``var(ses)``, ``cov(ses,_cons)`` ...) plus the
residual variance. ``V`` is linear in them, so the observed information has the closed
forms below; Stata's own metric (log SDs, atanh correlations) differs only by a
reparametrization, and at the optimum the delta method maps one to the other exactly.

- ML: the information of the variance parameters with the fixed effects profiled out
  (a Schur complement of the full observed information), as Stata's ``e(V)`` holds it.
- REML: the observed information of the restricted log likelihood.
- Fixed effects: ``(X' V^-1 X)^-1`` at the estimated variances (lme4's ``vcov``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec, RandomLevel
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(1)
>>> g = np.repeat(np.arange(20), 5)
>>> df = pd.DataFrame({"y": rng.normal(size=100) + rng.normal(size=20)[g], "g": g})
>>> d = build_design(ModelSpec("y", levels=(RandomLevel("g"),)), df)
>>> [p.stata_term for p in variance_parameters(d)]
['var(_cons)', 'var(Residual)']
>>> inf = evaluate(d, np.array([0.0]), np.array([1.0, 1.0]))
>>> bool(np.isfinite(inf.loglik))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.design.cache import per_design
from hlmbridge.errors import FitError
from hlmbridge.threads import with_bounded_blas

__all__ = ["Inference", "VarianceParam", "evaluate", "linear_loglik", "lme4_block_name", "not_identified",
           "theta_from_matrices", "uses_sparse_algebra", "variance_parameters"]



@dataclass(frozen=True)
class VarianceParam:
    """One free parameter of the random part, on the variance/covariance scale.

    ``level`` indexes ``design.levels`` (None for the residual). ``pattern`` is
    dG/dtheta in the level's lme4 term order.
    """

    level: int | None
    group: str  # the level's grouping variable, or "Residual"
    kind: str  # "var" or "cov"
    stata_term: str
    term1: str
    term2: str | None
    pattern: np.ndarray


@per_design
def variance_parameters(design: Design) -> tuple[VarianceParam, ...]:
    """The free variance parameters in Stata's display order, the residual last.

    Per level: a variance for every random term (slopes in order, the intercept last, as
    Stata lists them), then the covariances of the pairs in one correlated block; Stata's
    identity and exchangeable structures share one variance (and one covariance).

    Made once per design (a fit asks several times; the patterns are read-only).
    """
    out: list[VarianceParam] = []
    for li, ld in enumerate(design.levels):
        lme4_terms = list(ld.terms_lme4)
        q = len(lme4_terms)
        # Stata order: every term but the intercept as in lme4's order, then the intercept.
        order = [j for j in range(q) if lme4_terms[j] != "(Intercept)"] + \
                [j for j in range(q) if lme4_terms[j] == "(Intercept)"]
        stata = {j: ld.terms_stata[j] for j in range(q)}
        block_of = {j: b for b, cols in enumerate(ld.blocks) for j in cols} if ld.blocks else {j: 0 for j in range(q)}

        def unit(i: int, j: int) -> np.ndarray:
            e = np.zeros((q, q))
            e[i, j] = e[j, i] = 1.0
            return e

        def add(kind: str, label: str, t1: str, t2: str | None, pattern: np.ndarray) -> None:
            out.append(VarianceParam(li, ld.name, kind, label, t1, t2, pattern))

        if ld.cov in ("unstructured", "independent", "blocks") or q == 1:
            for j in order:
                add("var", f"var({stata[j]})", lme4_terms[j], None, unit(j, j))
            for a in range(q):
                for b in range(a + 1, q):
                    ja, jb = order[a], order[b]
                    if block_of[ja] == block_of[jb]:
                        add("cov", f"cov({stata[ja]},{stata[jb]})", lme4_terms[ja], lme4_terms[jb], unit(ja, jb))
        else:  # identity or exchangeable over several terms: shared parameters
            joined = " ".join(stata[j] for j in order)
            add("var", f"var({joined})", lme4_terms[0], None, np.eye(q))
            if ld.cov == "exchangeable":
                add("cov", f"cov({joined})", lme4_terms[0], lme4_terms[1], np.ones((q, q)) - np.eye(q))
    out.append(VarianceParam(None, "Residual", "var", "var(Residual)", "Residual", None, np.ones((1, 1))))
    for prm in out:
        prm.pattern.flags.writeable = False  # shared by every caller of the cached tuple
    return tuple(out)


def level_covariances(design: Design, theta: np.ndarray) -> list[np.ndarray]:
    """Each level's random-effects covariance matrix (lme4 term order) from ``theta``."""
    params = variance_parameters(design)
    out = [np.zeros((ld.Z.shape[1], ld.Z.shape[1])) for ld in design.levels]
    for k, p in enumerate(params):
        if p.level is not None:
            out[p.level] += float(theta[k]) * p.pattern
    return out


def finish_inference(design: Design, loglik: float, beta_gls: np.ndarray, fixed_vcov: np.ndarray,
                     info: np.ndarray, score: np.ndarray) -> Inference:
    """The common tail of every evaluation: the weights' log-likelihood term, a symmetric
    information and its inverse (NaN when singular)."""
    if design.weights is not None:
        loglik += 0.5 * float(np.sum(np.log(design.weights)))
    info = 0.5 * (info + info.T)
    try:
        random_vcov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        random_vcov = np.full(info.shape, np.nan)
    if not_identified(info):  # inv() of a numerically singular matrix is rounding noise
        random_vcov = np.full(info.shape, np.nan)
    return Inference(float(loglik), beta_gls, fixed_vcov, random_vcov, info, np.asarray(score, dtype=float))


def not_identified(information: np.ndarray) -> bool:
    """Whether the information of the variance parameters is singular to working precision
    (its correlation form has an eigenvalue below 1e-10): some combination of them does not
    change the likelihood, e.g. ``(1 | g) + (0 + f | g)`` with a factor ``f`` whose indicators
    add up to the intercept. Such parameters have no standard errors, and another optimizer can
    report other values at the same log likelihood.

    >>> not_identified(np.array([[1.0, 1.0], [1.0, 1.0]])), not_identified(np.eye(2))
    (True, False)
    """
    d = information.diagonal()
    if not np.isfinite(information).all() or (d <= 0).any():
        return False
    s = 1.0 / np.sqrt(d)
    return bool(np.linalg.eigvalsh(information * np.outer(s, s))[0] < 1e-10)  # ascending order


def lme4_block_name(design: Design, param: VarianceParam) -> str:
    """lme4's ``VarCorr`` name of the term a parameter belongs to: the factor's name for its
    first term, ``name.1``, ``name.2`` ... for the next ones (R's ``make.unique``)."""
    if param.level is None:
        return "Residual"
    ld = design.levels[param.level]
    col = list(ld.terms_lme4).index(param.term1)
    block = next((b for b, cols in enumerate(ld.blocks) if col in cols), 0)
    return ld.key if block == 0 else f"{ld.key}.{block}"


def theta_from_matrices(design: Design, covariances: list[np.ndarray], sigma2: float) -> np.ndarray:
    """Parameter vector from each level's covariance matrix (lme4 term order) and the residual variance."""
    params = variance_parameters(design)
    theta = np.empty(len(params))
    for k, p in enumerate(params):
        if p.level is None:
            theta[k] = sigma2
            continue
        g = np.asarray(covariances[p.level], dtype=float)
        mask = p.pattern != 0
        theta[k] = g[mask].mean()
    return theta


@dataclass(frozen=True)
class Inference:
    """What the observed information says at one set of estimates.

    ``score`` is the gradient of the log likelihood in the variance parameters (ML: with the
    fixed effects at the ``beta`` evaluated at; REML: of the restricted log likelihood); at the
    GLS fixed effects it is the gradient of the profiled log likelihood, whose Hessian is
    minus ``information``.
    """

    loglik: float
    beta_gls: np.ndarray
    fixed_vcov: np.ndarray
    random_vcov: np.ndarray
    information: np.ndarray
    score: np.ndarray


@dataclass(frozen=True, eq=False)
class _Blocks:
    """Per-block cross-products of the design, the only data the likelihood needs.

    A block is an outermost group (the whole sample when some level is crossed). Its
    random-effects columns (all levels, inner groups expanded) are padded with zero
    columns to a common width ``Q``; ``patterns[k]`` is dD/dtheta_k placed in each block.
    """

    n: np.ndarray  # (B,) rows per block
    M: np.ndarray  # (B, Q, Q)  Z'Z
    ZX: np.ndarray  # (B, Q, p)  Z'X
    XX: np.ndarray  # (B, p, p)  X'X
    Zy: np.ndarray  # (B, Q)     Z'y
    Xy: np.ndarray  # (B, p)     X'y
    yy: np.ndarray  # (B,)       y'y
    patterns: np.ndarray  # (K_random, B, Q, Q)
    b0: np.ndarray  # (p,) least-squares coefficients taken out of y (y above is y - X b0)
    # Per level: (block of each group, first column of each group in its block, q_l).
    group_place: tuple[tuple[np.ndarray, np.ndarray, int], ...]
    # [Z'Z | Z'X | Z'y] side by side (M, ZX and Zy above are views of it), so that one product
    # applies a (B, Q, Q) matrix to all three; and the block sums of [X y]'[X y] and of n.
    MG: np.ndarray  # (B, Q, Q + p + 1)
    H: np.ndarray  # (p + 1, p + 1)
    n_total: float


# A crossed design with at most this many random effects keeps the dense closed forms (one
# block): below it they cost under about 10 ms, less than the sparse path's fixed cost.
_DENSE_CROSSED_MAX = 160


@per_design
def _blocks(design: Design) -> _Blocks:
    """The cross-products of a design, computed once per design."""
    levels = design.levels
    n, p = design.X.shape
    crossed = any(not ld.nested for ld in levels[1:])
    block = np.zeros(n, dtype=np.int64) if crossed else levels[0].codes
    B = int(block.max()) + 1
    # Column layout: per block, level by level, each group of the level gets q_l columns.
    offsets = np.zeros(B, dtype=np.int64)
    row_cols = []  # per level: (first column of the row's group within its block, q_l)
    group_place = []  # per level: (block of each group, first column of each group)
    for ld in levels:
        q = ld.Z.shape[1]
        g_block = np.zeros(ld.n_groups, dtype=np.int64)
        g_block[ld.codes] = block
        # Local index of each group within its block, in code order.
        order = np.argsort(g_block, kind="stable")
        counts = np.bincount(g_block, minlength=B)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        local = np.empty(ld.n_groups, dtype=np.int64)
        local[order] = np.arange(ld.n_groups) - np.repeat(starts, counts)
        g_first = offsets[g_block] + local * q
        row_cols.append((g_first[ld.codes], q))
        group_place.append((g_block, g_first, q))
        offsets = offsets + counts * q
    Q = int(offsets.max())
    if Q * Q * B > 50_000_000:
        raise FitError(
            f"the random-effects design is too large for Stata-parity inference ({B} blocks of width {Q})"
        )
    cols = np.concatenate([first[:, None] + np.arange(q)[None, :] for first, q in row_cols], axis=1)  # (n, m)
    vals = np.concatenate([ld.Z for ld in levels], axis=1)  # (n, m)
    X, y = design.X, design.y_fit
    if design.weights is not None:
        # Precision weights: Var(e_i) = s2 / w_i. Scaling row i by sqrt(w_i) gives the
        # unweighted model; the log likelihood then gains sum(log w) / 2 (see evaluate).
        sw = np.sqrt(design.weights)
        X, y, vals = X * sw[:, None], y * sw, vals * sw[:, None]
    bQ = block * Q
    M = np.bincount(
        ((bQ[:, None, None] + cols[:, :, None]) * Q + cols[:, None, :]).ravel(),
        weights=(vals[:, :, None] * vals[:, None, :]).ravel(),
        minlength=B * Q * Q,
    ).reshape(B, Q, Q)
    ZX = np.bincount(
        ((bQ[:, None, None] + cols[:, :, None]) * p + np.arange(p)[None, None, :]).ravel(),
        weights=(vals[:, :, None] * X[:, None, :]).ravel(),
        minlength=B * Q * p,
    ).reshape(B, Q, p)
    # Work with y - X b0 (b0 by least squares): the likelihood at beta equals that of
    # y - X b0 at beta - b0 exactly, and the cross-products no longer carry y's mean, whose
    # cancellation cost digits (a response near 1e8 moved the log likelihood by 0.3).
    b0 = np.linalg.lstsq(X, y, rcond=None)[0] if p else np.zeros(0)
    y = y - X @ b0 if p else y
    Zy = np.bincount((bQ[:, None] + cols).ravel(), weights=(vals * y[:, None]).ravel(), minlength=B * Q).reshape(B, Q)
    XX = np.zeros((B, p, p))
    for j in range(p):
        XX[:, j, :] = np.column_stack([np.bincount(block, weights=X[:, j] * X[:, i], minlength=B) for i in range(p)])
    Xy = np.column_stack([np.bincount(block, weights=X[:, j] * y, minlength=B) for j in range(p)]) if p else np.zeros((B, 0))
    yy = np.bincount(block, weights=y * y, minlength=B)
    nb = np.bincount(block, minlength=B).astype(float)
    params = [prm for prm in variance_parameters(design) if prm.level is not None]
    patterns = np.zeros((len(params), B, Q, Q))
    for k, prm in enumerate(params):
        g_block, g_first, q = group_place[prm.level]
        ii, jj = np.nonzero(prm.pattern)
        rows_ix = g_first[:, None] + ii[None, :]
        cols_ix = g_first[:, None] + jj[None, :]
        patterns[k, g_block[:, None], rows_ix, cols_ix] = prm.pattern[ii, jj][None, :]
    MG = np.concatenate([M, ZX, Zy[:, :, None]], axis=2)
    M, ZX, Zy = MG[:, :, :Q], MG[:, :, Q:Q + p], MG[:, :, Q + p]
    H = np.empty((p + 1, p + 1))
    H[:p, :p], H[:p, p], H[p, :p], H[p, p] = XX.sum(axis=0), Xy.sum(axis=0), Xy.sum(axis=0), yy.sum()
    return _Blocks(nb, M, ZX, XX, Zy, Xy, yy, patterns, b0, tuple(group_place), MG, H, float(nb.sum()))


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


@with_bounded_blas
def evaluate(design: Design, beta: np.ndarray | None, theta: np.ndarray, *, reml: bool | None = None) -> Inference:
    """Log likelihood, its score and Stata's covariance matrices at ``beta`` and ``theta``.

    ``theta`` is in :func:`variance_parameters` order. For ML the log likelihood is
    evaluated at ``beta`` (``None``: at the GLS estimate for ``theta``, i.e. the profiled
    log likelihood); for REML (``reml`` defaults to the spec's method) it is the
    restricted log likelihood on lme4's scale, which depends on ``theta`` only.

    Everything is computed from per-block cross-products with the Woodbury identity
    ``V^-1 = s^-2 (I - Z W Z')``, ``W = D (s^2 I + Z'Z D)^-1`` (no n-by-n matrix, no D^-1,
    so singular D at a boundary fit is fine), batched over blocks.

    A crossed or partially crossed design has no such blocks: with more than
    ``_DENSE_CROSSED_MAX`` random effects it goes to
    :func:`hlmbridge.inference.sparse.sparse_evaluate` (a sparse factorization of the
    random-effects system instead of one dense block as wide as all its effects). A nested
    design whose blocks are wide (many inner groups in one outer group) goes to
    :func:`hlmbridge.inference.nested.nested_evaluate` (block-recursive elimination, innermost
    groups first, at a cost linear in the number of groups), or, where its levels are not a chain
    of nested factors, to the sparse path when that is cheaper (:func:`_path`).
    """
    reml = design.spec.reml if reml is None else reml
    path = _path(design)
    if path == "nested":
        from hlmbridge.inference.nested import nested_evaluate

        return nested_evaluate(design, beta, theta, reml=reml)
    if path == "sparse":
        from hlmbridge.inference.sparse import sparse_evaluate

        return sparse_evaluate(design, beta, theta, reml=reml)
    return _dense_evaluate(design, beta, theta, reml=reml)


@per_design
def _path(design: Design) -> str:
    """Which algebra :func:`evaluate` uses for a design: ``"dense"`` (per-block closed forms),
    ``"nested"`` (:mod:`hlmbridge.inference.nested`, block-recursive) or ``"sparse"``
    (:mod:`hlmbridge.inference.sparse`), by the cost estimates below."""
    from hlmbridge.inference.nested import nested_work

    if any(not ld.nested for ld in design.levels[1:]):
        crossed_sparse = sum(ld.n_groups * ld.Z.shape[1] for ld in design.levels) > _DENSE_CROSSED_MAX
        return "sparse" if crossed_sparse else "dense"
    dense = _dense_work(design)
    work = nested_work(design)
    if work is not None:
        return "nested" if dense > _NESTED_FACTOR * work else "dense"
    return "sparse" if _sparse_blocks_are_cheaper(design, dense) else "dense"


def uses_sparse_algebra(design: Design) -> bool:
    """Whether :func:`evaluate` takes the sparse path: a crossed design with more than
    ``_DENSE_CROSSED_MAX`` random effects (where one evaluation may cost a dozen sparse
    factorizations, tens of deviance evaluations of lmer's), or a nested one whose levels do not
    form a chain (two inner factors crossed within the outer groups) and whose dense blocks are
    wide enough that the sparse block path is cheaper (:func:`_sparse_blocks_are_cheaper`)."""
    return _path(design) == "sparse"


#: The block-recursive path (:func:`hlmbridge.inference.nested.nested_work`: about
#: ``sum over levels of groups x (A r)^2`` for A active parameters and r remaining columns) is
#: taken where the dense closed forms' ``B Q^3 K`` is more than this many times larger.
#: Measured (one evaluation after the first, one BLAS thread, machine loaded about 5-fold,
#: dense / nested seconds, ratio of the two estimates in brackets): nested faster at
#: 2000 schools x 10 classes (23) 0.055 / 0.030, 500 x 10 (21) 0.012 / 0.002, 1000 x 8 with
#: slopes at both levels (19) 0.16 / 0.10, 300 x 20 (78) 0.024 / 0.002, egsingle (6000),
#: Chem97 (400), 2000 x 20 with slopes (100); dense faster or as fast at 3000 x 4 with slopes
#: (5.9) 0.17 / 0.19, 100 x 5 with slopes (8.4) 1.2 ms / 2.4 ms, 10,000 x 3 (2.5) 0.049 / 0.067,
#: 1000 x 5 (5.6, 3-7 ms either way), one level of 18 groups with a slope (0.4) 0.2 / 0.3 ms.
_NESTED_FACTOR = 10.0


def _dense_work(design: Design) -> float:
    """``B Q^3 K``: the dense closed forms' cost estimate (B outermost groups, Q the widest
    block's random effects, K variance parameters)."""
    top = design.levels[0]
    per_block = np.zeros(top.n_groups, dtype=np.int64)
    for ld in design.levels:
        g_block = np.zeros(ld.n_groups, dtype=np.int64)
        g_block[ld.codes] = top.codes
        per_block += np.bincount(g_block, minlength=top.n_groups) * ld.Z.shape[1]
    Q = float(per_block.max())
    return top.n_groups * Q ** 3 * len(variance_parameters(design))


#: Cost model of a nested design's two paths, in units of about 1.3 ns (one BLAS thread),
#: measured on mlmRev's egsingle (60 schools, block width Q = 180, K = 7: dense 3.05 s, sparse
#: 0.086 s) and Chem97 (131 LEAs, Q = 101, K = 3: 0.56 s against 0.015-0.04 s) and on simulated
#: nested designs with many small blocks (1000 schools x 5 classes: dense 0.015 s, sparse 1 s;
#: 10,000 x 3 and 2000 x 20 with slopes: the sparse path has no block split there, so it would
#: factor by SuperLU, 0.9 s and 16 s against dense 0.057 s and 5.3 s). The dense closed forms
#: cost about ``B Q^3 K`` (a batched product of every pattern with every block); the sparse
#: block path about ``q2^3`` (its dense Schur complement of the ``q2`` effects outside the
#: largest level) plus a fixed part of about ``_SPARSE_FIXED`` units (sparse products over the rows).
_SPARSE_FIXED = 20_000_000


def _sparse_blocks_are_cheaper(design: Design, dense_work: float) -> bool:
    """Whether a nested design costs less on the sparse block path (see ``_SPARSE_FIXED``)."""
    from hlmbridge.inference.sparse import block_split_sizes

    sizes = block_split_sizes(design)
    if sizes is None:  # no block split: the sparse path would factor by SuperLU
        return False
    _, q2 = sizes
    return float(q2) ** 3 + _SPARSE_FIXED < dense_work


def woodbury(bl: _Blocks, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(s2, D, A, W)`` of the block form of ``V``: ``D`` the random-effects covariance of
    each block, ``A = s2 I + Z'Z D`` and ``W = D A^-1``, so ``V^-1 = (I - Z W Z') / s2``.
    Shared by the likelihood, the df methods and the random effects."""
    theta = np.asarray(theta, dtype=float)
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    E = bl.patterns
    D = (theta[:-1] @ E.reshape(len(E), -1)).reshape(E.shape[1:])  # sum_k theta_k E_k
    A = bl.M @ D
    Q = A.shape[-1]
    A.reshape(-1, Q * Q)[:, ::Q + 1] += s2  # the diagonal: A = s2 I + Z'Z D
    W = _t(np.linalg.solve(_t(A), D))  # D A^-1 (symmetric)
    return s2, D, A, W


def inverse_powers(bl: _Blocks, W: np.ndarray, s2: float, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Products with ``V^-1``, ``V^-2`` (and ``V^-3``) of ``G``, the first ``m`` columns of
    ``[X y]`` (``m = p``: X alone; ``p + 1``: with y), from :func:`woodbury`'s ``W`` and ``s2``.

    Returns ``MW = Z'Z W`` per block (B, Q, Q); ``P`` (2, B, Q, Q + m) with ``P[j - 1] =
    [Z'V^-j Z | Z'V^-j G]`` per block; and ``Vj`` (3, m, m) with ``Vj[j - 1] = G'V^-j G`` summed
    over blocks. By the recursion ``Z'V^-j a = (I - Z'Z W) Z'V^-(j-1) a / s2`` and
    ``a'V^-j a = (a'V^-(j-1) a - (Z'V^-(j-1) a)' W Z'a) / s2`` (``V^-1 = (I - Z W Z') / s2``).
    Shared by the likelihood's closed forms and the df methods' derivatives.
    """
    B, Q = bl.MG.shape[0], bl.MG.shape[1]
    BQ = B * Q
    MG = bl.MG[:, :, :Q + m]  # [Z'Z | Z'G] per block
    # W [Z'Z | Z'G] = [W Z'Z | W Z'G]; Z'Z W is the transpose of the first part (W and Z'Z are
    # symmetric), so one product gives both.
    WMG = W @ MG
    MW = _t(WMG[:, :, :Q])
    WG = WMG[:, :, Q:].reshape(BQ, m)
    P = np.empty((2, B, Q, Q + m))
    np.subtract(MG, MW @ MG, out=P[0])
    P[0] /= s2
    np.subtract(P[0], MW @ P[0], out=P[1])
    P[1] /= s2
    PG = P[:, :, :, Q:].reshape(2, BQ, m)  # Z'V^-j G, flattened over blocks
    Vj = np.empty((3, m, m))
    PGWG = _t(PG) @ WG  # (Z'V^-j G)' W Z'G, j = 1, 2
    Vj[0] = (bl.H[:m, :m] - MG[:, :, Q:].reshape(BQ, m).T @ WG) / s2
    Vj[1] = (Vj[0] - PGWG[0]) / s2
    Vj[2] = (Vj[1] - PGWG[1]) / s2
    return MW, P, Vj


def _dense_evaluate(design: Design, beta: np.ndarray | None, theta: np.ndarray, *, reml: bool) -> Inference:
    """The closed forms of :func:`evaluate` on per-block cross-products (dense blocks).

    Notation (per block): ``G = [Z'X | Z'y]`` and ``c = [-b; 1]``, so that ``Z'r = G c`` for
    the residual ``r = y - X b``; ``E_k = dD/dtheta_k``, so ``V_k = Z E_k Z'`` (the residual's
    ``V_K = I``). ``V^-1 = (I - Z W Z') / s2`` gives the recursion ``Z'V^-j a =
    (I - Z'Z W) Z'V^-(j-1) a / s2`` and ``a'V^-j a = (a'V^-(j-1) a - (Z'V^-(j-1) a)' W Z'a) / s2``,
    which is all the closed forms need. Everything is batched over the blocks and over the
    variance parameters ``k``: Python loops over them would pay numpy's per-call overhead up to
    K^2 times, which dominates on small designs (lme4's sleepstudy). A sum over blocks of
    ``a_b' c_b`` for two (B, Q, m) arrays is one matrix product of them flattened to (B Q, m).
    """
    bl = _blocks(design)
    n = design.nobs
    p = design.n_fixed
    theta = np.asarray(theta, dtype=float)
    s2, D, A, W = woodbury(bl, theta)
    Kr = len(theta) - 1
    K = Kr + 1
    E, MG = bl.patterns, bl.MG
    B, Q = MG.shape[0], MG.shape[1]
    BQ, a = B * Q, p + 1
    sign, logdetA = np.linalg.slogdet(A)
    if (sign <= 0).any():
        raise FitError("the marginal covariance is not positive definite at these estimates")
    logdet = float(logdetA.sum()) + (bl.n_total - BQ) * float(np.log(s2))

    MW, P, Vj = inverse_powers(bl, W, s2, a)
    Pzz = P[0, :, :, :Q]  # Z'V^-1 Z
    PS = P[:, :, :, Q:].reshape(2, BQ, a)  # Z'V^-j [X y], flattened over blocks
    XtVX, XtVy = Vj[0, :p, :p], Vj[0, :p, p]
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    beta_gls0 = fixed_vcov @ XtVy  # GLS estimate for y - X b0
    beta_gls = beta_gls0 + bl.b0
    b = beta_gls0 if reml or beta is None else np.asarray(beta, dtype=float) - bl.b0
    c = np.empty(a)
    c[:p], c[p] = -b, 1.0
    Vjc = Vj @ c  # [X y]'V^-j r
    quad, rV2r, rV3r = Vjc @ c  # r'V^-j r
    u = (PS[0] @ c).reshape(B, Q)  # Z'V^-1 r
    trV1 = (bl.n_total - np.einsum("bii->", MW)) / s2  # tr(V^-1) = (n - tr(Z'Z W)) / s2
    trV2 = (trV1 - np.einsum("bij,bji->", Pzz, W)) / s2  # tr(V^-2) = (tr(V^-1) - tr(Z'V^-1 Z W)) / s2

    PE = Pzz[None] @ E  # Z'V^-1 Z E_k
    e = (E @ u[None, :, :, None]).reshape(Kr, BQ)  # E_k Z'V^-1 r
    Pe = (PE @ u[None, :, :, None]).reshape(Kr, BQ)  # Z'V^-1 Z E_k Z'V^-1 r
    eS = e @ PS  # r'V^-1 V_k V^-j [X y], j = 1, 2
    # tr(E_k Z'V^-j Z) = tr(V^-j V_k), j = 1, 2
    trE = E.reshape(Kr, -1) @ P[:, :, :, :Q].reshape(2, -1).T
    S = np.empty((K, K))  # tr(V^-1 V_k V^-1 V_l)
    S[:Kr, :Kr] = PE.reshape(Kr, -1) @ _t(PE).reshape(Kr, -1).T
    S[:Kr, Kr] = S[Kr, :Kr] = trE[:, 1]
    S[Kr, Kr] = trV2
    Bq = np.empty((K, K))  # r'V^-1 V_k V^-1 V_l V^-1 r
    Bq[:Kr, :Kr] = e @ Pe.T
    Bq[:Kr, Kr] = Bq[Kr, :Kr] = eS[1] @ c
    Bq[Kr, Kr] = rV3r
    Xb = np.empty((K, p))  # X'V^-1 V_k V^-1 r
    Xb[:Kr], Xb[Kr] = eS[0, :, :p], Vjc[1, :p]
    # Score: -tr(V^-1 V_k) / 2 + r'V^-1 V_k V^-1 r / 2 (REML: P for V^-1 in the trace).
    tr_v = np.empty(K)
    tr_v[:Kr], tr_v[Kr] = trE[:, 0], trV1
    quad_k = np.empty(K)
    quad_k[:Kr], quad_k[Kr] = eS[0] @ c, rV2r

    reml_terms = _reml_terms(E, Pzz, PS[0, :, :p], P[1, :, :, Q:Q + p], Vj[1:, :p, :p], fixed_vcov) if reml else None
    return assemble_inference(design, reml_terms, S=S, Bq=Bq, Xb=Xb, tr_v=tr_v, quad_k=quad_k, quad=quad,
                              logdet=logdet, XtVX=XtVX, fixed_vcov=fixed_vcov, beta_gls=beta_gls)


def assemble_inference(design: Design, reml_terms: tuple[np.ndarray, np.ndarray] | None, *, S: np.ndarray,
                       Bq: np.ndarray, Xb: np.ndarray, tr_v: np.ndarray, quad_k: np.ndarray, quad: float,
                       logdet: float, XtVX: np.ndarray, fixed_vcov: np.ndarray, beta_gls: np.ndarray) -> Inference:
    """The tail every closed-form evaluation shares (dense blocks here, the block-recursive
    :mod:`hlmbridge.inference.nested`): log likelihood, score and information from the trace and
    quadratic-form terms. ``S`` is ``tr(V^-1 V_k V^-1 V_l)``, ``Bq`` ``r'V^-1 V_k V^-1 V_l V^-1 r``,
    ``Xb`` ``X'V^-1 V_k V^-1 r``, ``tr_v`` ``tr(V^-1 V_k)``, ``quad_k`` ``r'V^-1 V_k V^-1 r``,
    ``quad`` ``r'V^-1 r``; ``reml_terms`` (REML only, else None) is ``(Av C_k, tr(Av T_kl))`` of
    :func:`_reml_terms`, with ``Av = (X'V^-1 X)^-1``."""
    n, p = design.nobs, design.n_fixed
    if reml_terms is not None:
        AC, tr_AT = reml_terms
        K = len(tr_v)
        tr_v = tr_v - np.einsum("kii->k", AC)
        # All K x K entries at once: tr(Av T_kl), tr(Av C_k Av C_l) and Xb_k' Av Xb_l.
        tr_pp = S - 2.0 * tr_AT + AC.reshape(K, -1) @ _t(AC).reshape(K, -1).T
        info = -0.5 * tr_pp + (Bq - Xb @ fixed_vcov @ Xb.T)
        _, logdet_x = np.linalg.slogdet(XtVX)
        loglik = -0.5 * ((n - p) * np.log(2 * np.pi) + logdet + logdet_x + quad)
    else:
        info = -0.5 * S + Bq - Xb @ fixed_vcov @ Xb.T
        loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    score = 0.5 * (quad_k - tr_v)  # REML: P for V^-1 in the trace
    return finish_inference(design, loglik, beta_gls, fixed_vcov, info, score)


def _reml_terms(E: np.ndarray, Pzz: np.ndarray, Pzx: np.ndarray, Szx: np.ndarray, Vx: np.ndarray,
                Av: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """REML's ``Av C_k`` (K, p, p) and ``tr(Av T_kl)`` (K, K), with ``C_k = X'V^-1 V_k V^-1 X``
    and ``T_kl = X'V^-1 V_k V^-1 V_l V^-1 X`` summed over blocks, from ``Pzz = Z'V^-1 Z`` and
    ``Szx = Z'V^-2 X`` per block, ``Pzx = Z'V^-1 X`` flattened to (B Q, p), ``Vx = [X'V^-2 X,
    X'V^-3 X]`` and ``Av = (X'V^-1 X)^-1`` (symmetric)."""
    Kr, B, Q, _ = E.shape
    p = Pzx.shape[1]
    K = Kr + 1
    EPzx = E @ Pzx.reshape(1, B, Q, p)  # E_k Z'V^-1 X
    C = np.empty((K, p, p))
    C[:Kr] = _t(EPzx.reshape(Kr, B * Q, p)) @ Pzx
    C[Kr] = Vx[0]
    # T_kl = (E_k Z'V^-1 X)' R_l with R_l = Z'V^-1 Z E_l Z'V^-1 X (l < Kr) or Z'V^-2 X (l = Kr),
    # so tr(Av T_kl) is the inner product of (E_k Z'V^-1 X) Av with R_l.
    right = np.empty((K, B, Q, p))
    np.matmul(Pzz, EPzx, out=right[:Kr])
    right[Kr] = Szx
    tr_AT = np.empty((K, K))
    tr_AT[:Kr] = (EPzx @ Av).reshape(Kr, -1) @ right.reshape(K, -1).T
    tr_AT[Kr, :Kr] = tr_AT[:Kr, Kr]
    tr_AT[Kr, Kr] = np.einsum("ij,ij->", Av, Vx[1])
    return Av @ C, tr_AT


@per_design
def _linear_logliks(design: Design) -> dict[bool, float]:
    return {}  # method (reml) -> linear_loglik, filled as asked


def linear_loglik(design: Design, *, reml: bool | None = None) -> float:
    """Log likelihood of the linear regression of y on X (Stata's ``e(ll_c)``); once per design
    and method (a least-squares fit on all rows: 0.1 ms on sleepstudy, 50 ms at 1M rows)."""
    reml = bool(design.spec.reml if reml is None else reml)
    known = _linear_logliks(design)
    if reml not in known:
        known[reml] = _linear_loglik(design, reml)
    return known[reml]


def _linear_loglik(design: Design, reml: bool) -> float:
    X, y = design.X, design.y_fit
    extra = 0.0
    if design.weights is not None:
        sw = np.sqrt(design.weights)
        X, y = X * sw[:, None], y * sw
        extra = 0.5 * float(np.sum(np.log(design.weights)))
    n, p = X.shape
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(np.sum((y - X @ coef) ** 2))
    if not reml:
        return -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0) + extra
    s2 = rss / (n - p)
    _, logdet_x = np.linalg.slogdet(X.T @ X)
    return -0.5 * ((n - p) * (np.log(2 * np.pi * s2) + 1.0) + logdet_x) + extra
