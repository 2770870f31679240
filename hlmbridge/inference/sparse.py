"""Stata-parity inference for crossed and partially crossed designs from sparse algebra.

A crossed design (``(1|s) + (1|d)``) has no blocks to split the sample into, so the dense
path of :mod:`hlmbridge.inference.stata_parity` would work on one block as wide as all the
random effects together. Here the random-effects system is sparse instead, as in lme4:
with ``D`` the random-effects covariance (block diagonal), ``D = L L'`` and ``s2`` the
residual variance,

    V = s2 (I + Z L L' Z' / s2),   H = I + L' Z'Z L / s2   (q by q, sparse, SPD)
    V^-1 x = (x - Z L H^-1 L' Z' x / s2) / s2,   log|V| = n log s2 + log|H|,

Two ways to the same quantities, chosen per design:

**Block elimination (the usual case).** The level with the most random effects is
eliminated first: every row belongs to one of its groups, so its part of ``Z'Z`` is block
diagonal and its elimination costs nothing. What is left is the Schur complement of the
other levels' ``q2`` effects, which in a crossed design is dense (lme4's sparse Cholesky
fills it in too), and it is factored by dense Cholesky (:class:`_BlockFactor`). Then every
term is exact, the trace term included: with ``C = Z'V^-1Z s2`` (REML: ``Z'PZ s2``),

    d log|V| / d rho_k = tr(C E_k),   d2 / d rho_k d rho_l = -tr(C E_k C E_l),

``E_k`` the parameter's pattern repeated over its level's groups. ``C``'s blocks outside
the largest level are formed (q2 wide); its block within that level never is: it is a
block-diagonal matrix minus a product through the q2-wide part, and its traces are taken
through that product (:func:`_exact_derivatives`). The cost is a few dense operations of
order ``q2^3`` (q2 = 1,128 on InstEval) and a few sparse products; no factorization is
repeated. Where the other levels' covariance root ``L2`` is diagonal and invertible (random
intercepts, uncorrelated terms) the q2 blocks are scalings of ``S^-1`` and the ``q1 x q2``
block is not formed (:func:`_rest_blocks`); for a single-effect largest level the
``q2^3`` product ``J U'U`` gives way to sparse products when those are cheaper
(:func:`_terms_by_rows`). Taken where ``q2 <= _BLOCK_MAX_REST`` and the dense ``q1 x q2``
block fits ``_BLOCK_MAX_CROSS``.

**Factorization (otherwise).** ``H`` is factored by SuperLU
(:func:`scipy.sparse.linalg.splu`, a fill-reducing ordering of ``H + H'``, no pivoting: the
sparse Cholesky of an SPD matrix). The log likelihood, the GLS coefficients,
``(X'V^-1X)^-1`` and every quadratic-form term of the observed information are exact; the
trace term ``tr(V^-1 V_k V^-1 V_l)`` (REML: ``tr(P V_k P V_l)``), minus the Hessian of
``log|V|`` (REML: ``log|V| + log|X'V^-1X|``), is taken by central differences with
Richardson extrapolation of the exact sparse log determinant, in the relative variances
``D / s2`` (the residual variance enters in closed form); about 13 factorizations.

tests/test_sparse_inference.py checks both against the dense closed form.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(2)
>>> a, b = rng.integers(0, 12, 200), rng.integers(0, 9, 200)
>>> df = pd.DataFrame({"y": rng.normal(size=200) + rng.normal(size=12)[a] + rng.normal(size=9)[b],
...                    "a": a, "b": b})
>>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | a) + (1 | b)"), df)
>>> inf = sparse_evaluate(d, np.array([0.0]), np.array([1.0, 1.0, 1.0]), reml=True)
>>> bool(np.isfinite(inf.loglik)), inf.information.shape
(True, (3, 3))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.design.cache import per_design
from hlmbridge.errors import FitError

__all__ = ["block_split_sizes", "has_exact_derivatives", "is_crossed", "sparse_evaluate"]


def is_crossed(design: Design) -> bool:
    """Whether some level's groups are not nested in those of the first level."""
    return any(not ld.nested for ld in design.levels[1:])


def has_exact_derivatives(design: Design) -> bool:
    """Whether :func:`sparse_evaluate` takes the block path for this design: exact
    derivatives at the cost of one block factorization, so that a Newton step costs about
    what one evaluation does (else about a dozen sparse factorizations)."""
    return _prepare(design).blocks is not None


@dataclass(frozen=True, eq=False)
class _Sparse:
    """The data a crossed design's likelihood needs, built once per design."""

    Z: object  # scipy.sparse CSR (n, q), rows scaled by sqrt(weights)
    ZT: object  # its transpose, CSR
    M: object  # Z'Z, CSC (q, q)
    X: np.ndarray  # (n, p), rows scaled
    y: np.ndarray  # (n,), rows scaled, minus X b0
    b0: np.ndarray  # least-squares coefficients taken out of y
    ZX: np.ndarray  # (q, p)
    XX: np.ndarray  # (p, p)
    level_cols: tuple[tuple[int, int, int], ...]  # per level: (first column, groups, q_l)
    patterns: tuple[tuple[int | None, np.ndarray], ...]  # per variance parameter (level, q_l x q_l)
    ordering: dict[str, str]  # the column ordering chosen for H at the first factorization
    blocks: "_Split | None" = None  # the split of the block path; None: the factorization path


@per_design
def _prepare(design: Design) -> _Sparse:
    import scipy.sparse as sp

    from hlmbridge.inference.stata_parity import variance_parameters

    n, p = design.X.shape
    X, y = design.X, design.y_fit
    sw = np.sqrt(design.weights) if design.weights is not None else None
    rows, cols, vals = [], [], []
    level_cols: list[tuple[int, int, int]] = [(0, 0, 0)] * len(design.levels)
    first = 0
    # Columns level by level, the level with the most effects first (as lme4 orders its
    # terms): eliminating it first leaves the fill to the smaller levels.
    by_size = sorted(range(len(design.levels)), key=lambda i: -design.levels[i].n_groups * design.levels[i].Z.shape[1])
    for li in by_size:
        ld = design.levels[li]
        ql = ld.Z.shape[1]
        for j in range(ql):
            rows.append(np.arange(n))
            cols.append(first + ld.codes * ql + j)
            vals.append(ld.Z[:, j] if sw is None else ld.Z[:, j] * sw)
        level_cols[li] = (first, int(ld.n_groups), ql)
        first += int(ld.n_groups) * ql
    Z = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, first))
    if sw is not None:
        X, y = X * sw[:, None], y * sw
    # As the dense path does: work with y - X b0 so that no cross-product carries y's mean.
    b0 = np.linalg.lstsq(X, y, rcond=None)[0] if p else np.zeros(0)
    y = y - X @ b0 if p else y
    ZT = Z.T.tocsr()
    M = (ZT @ Z).tocsc()
    patterns = tuple((prm.level, prm.pattern) for prm in variance_parameters(design) if prm.level is not None)
    return _Sparse(Z, ZT, M, X, y, b0, np.asarray(ZT @ X), X.T @ X, tuple(level_cols), patterns, {},
                   _split(M, by_size[0], level_cols))


def block_split_sizes(design: Design) -> tuple[int, int] | None:
    """``(q1, q2)`` of the block path's split (the largest level's effects, the rest), or
    None where :func:`sparse_evaluate` would take the factorization path; from the level
    sizes alone, without building the sparse system."""
    sizes = [ld.n_groups * ld.Z.shape[1] for ld in design.levels]
    q1 = max(sizes)
    q2 = sum(sizes) - q1
    if q2 <= 0 or q2 > _BLOCK_MAX_REST or q1 * q2 > _BLOCK_MAX_CROSS:
        return None
    return q1, q2


#: The block path keeps a few dense matrices of (q - q1)^2 numbers and one of q1 (q - q1),
#: q1 being the effects of the largest level; beyond these sizes the factorization path is
#: taken instead (its factor is as dense, but it keeps no inverse).
_BLOCK_MAX_REST = 3000
_BLOCK_MAX_CROSS = 30_000_000


@dataclass(frozen=True, eq=False)
class _Split:
    """``Z'Z`` split at the largest level (columns ``[0, q1)``, one q_l x q_l block per group
    since each row belongs to one of its groups) and the rest (``q2`` columns)."""

    level: int
    groups: int
    ql: int
    M11: np.ndarray  # (groups, ql, ql): the diagonal blocks of Z1'Z1
    M11s: object  # the same, as a sparse block-diagonal matrix (CSR)
    M12: object  # Z1'Z2, CSR (q1, q2)
    M22: np.ndarray  # Z2'Z2, dense (q2, q2)
    pairs: int  # sum over M12's rows of their nonzeros squared: the work of one product M12'DM12


def _split(M: object, level: int, level_cols: list[tuple[int, int, int]]) -> _Split | None:
    first, groups, ql = level_cols[level]
    q1 = groups * ql
    q2 = M.shape[0] - q1  # type: ignore[attr-defined]
    if first != 0 or q2 <= 0 or q2 > _BLOCK_MAX_REST or q1 * q2 > _BLOCK_MAX_CROSS:
        return None
    Mr = M.tocsr()  # type: ignore[attr-defined]
    M11s = Mr[:q1, :q1].tocsr()
    idx = np.arange(q1).reshape(groups, ql)
    M11 = np.empty((groups, ql, ql))
    for i in range(ql):
        for j in range(ql):
            M11[:, i, j] = np.asarray(M11s[idx[:, i], idx[:, j]]).ravel()
    if abs(float(np.abs(M11).sum()) - float(abs(M11s).sum())) > 1e-9 * max(1.0, float(abs(M11s).sum())):
        return None  # not block diagonal (cannot happen for one level's columns)
    M12 = Mr[:q1, q1:].tocsr()
    pairs = int(np.sum(np.diff(M12.indptr).astype(np.int64) ** 2))
    return _Split(level, groups, ql, M11, _blocks_csr(M11), M12, Mr[q1:, q1:].toarray(), pairs)


def _blocks_csr(blocks: np.ndarray) -> object:
    """The block-diagonal sparse matrix with the (g, k, k) array's blocks on its diagonal."""
    import scipy.sparse as sp

    g, k, _ = blocks.shape
    if k == 1:
        return sp.diags(blocks[:, 0, 0], format="csr")
    rows = (np.arange(g)[:, None, None] * k + np.arange(k)[None, :, None]).repeat(k, axis=2)
    cols = np.swapaxes(rows, 1, 2)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(g * k, g * k))


def _scale_both(A: np.ndarray, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``diag(v) A diag(v)``, one pass over A (a single scaling where v is constant, as for
    one random intercept)."""
    if v.size and np.all(v == v[0]):
        return np.multiply(A, v[0] * v[0], out=out)
    return np.multiply(A, np.outer(v, v), out=out)


def _root(m: np.ndarray) -> np.ndarray | None:
    """``R`` with ``R R' = m`` (m symmetric); None where m is not positive semidefinite.
    Diagonal where m is (uncorrelated effects): eigenvectors would permute its columns, and a
    diagonal ``L2`` lets :func:`_rest_blocks` take its shortcut."""
    if m.size and not np.any(m - np.diag(np.diagonal(m))):
        d = np.diagonal(m)
        if d.min() < -1e-12 * max(1.0, float(np.max(np.abs(d)))):
            return None
        return np.diag(np.sqrt(np.clip(d, 0.0, None)))
    w, vec = np.linalg.eigh(m)
    scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
    if w.size and w.min() < -1e-12 * scale:
        return None
    return vec * np.sqrt(np.clip(w, 0.0, None))[None, :]


class _BlockFactor:
    """``I + Z D Z'`` by block elimination: the largest level first (its groups' blocks are
    independent), then the dense Schur complement of the rest,

        G1 = I + Z1 D1 Z1' = (I - Z1 W1 Z1')^-1,  W1 = D1 (I + M11 D1)^-1 (block diagonal)
        K = Z'G1^-1 Z,  S = I + L2' K22 L2 (q2 x q2, dense SPD),  J = L2 S^-1 L2'
        (I + Z D Z')^-1 = G1^-1 - G1^-1 Z2 J Z2' G1^-1,   log|I + Z D Z'| = log|G1| + log|S|.

    ``D2 = L2 L2'`` need not be invertible (a zero variance is fine). Built only at a
    positive semidefinite ``D`` (else None from :func:`_block_factor`)."""

    def __init__(self, sd: _Sparse, bs: _Split, L1: np.ndarray, L2: object) -> None:
        import scipy.sparse as sp
        from scipy.linalg import cholesky

        self.sd, self.bs = sd, bs
        ql = bs.ql
        H1 = np.eye(ql)[None] + L1.T[None] @ bs.M11 @ L1[None]
        c1 = np.linalg.cholesky(H1)
        W1 = L1[None] @ np.linalg.inv(H1) @ L1.T[None]
        self.W1 = 0.5 * (W1 + np.swapaxes(W1, 1, 2))
        W1s = _blocks_csr(self.W1)
        self.W1s = W1s
        self.W1M12 = (W1s @ bs.M12).tocsr()
        self.K11 = bs.M11 - bs.M11 @ self.W1 @ bs.M11  # Z1'G1^-1 Z1 (blocks)
        self.U = (bs.M12 - bs.M11s @ self.W1M12).tocsr()  # Z1'G1^-1 Z2
        K22 = (bs.M12.T @ self.W1M12).toarray()
        #: Z2'G1^-1 Z2, symmetric only to rounding (see :attr:`K22`)
        self.K22_raw = np.subtract(bs.M22, K22, out=K22)
        self.L2 = L2
        off = L2 - sp.diags(L2.diagonal())  # type: ignore[attr-defined]
        #: L2's diagonal where L2 is diagonal (every other level a single random intercept or
        #: uncorrelated terms): products with it are then scalings of rows.
        self.l2diag = L2.diagonal() if off.count_nonzero() == 0 else None  # type: ignore[attr-defined]
        if self.l2diag is not None:
            # S = I + L2'K22 L2 is a scaling of K22's entries, and Cholesky reads only its
            # lower triangle: no symmetrized copy of K22 is needed (one pass instead of four).
            S = _scale_both(self.K22_raw, self.l2diag)
        else:
            S = self.l2t(self.LtK.T)
            S = 0.5 * (S + S.T)
        S[np.diag_indices_from(S)] += 1.0
        # S.T: S in Fortran order (symmetric: the same matrix), factored in place without a copy.
        self.Ls = cholesky(S.T, lower=True, overwrite_a=True, check_finite=False)
        self.logdet = float(2 * np.log(np.diagonal(c1, axis1=1, axis2=2)).sum()
                            + 2 * np.log(np.diagonal(self.Ls)).sum())

    @cached_property
    def K22(self) -> np.ndarray:
        """``Z2'G1^-1 Z2``, symmetrized (the general path of :func:`_exact_derivatives` uses
        both of its triangles)."""
        return 0.5 * (self.K22_raw + self.K22_raw.T)

    @cached_property
    def LtK(self) -> np.ndarray:
        """``L2' K22``."""
        return self.l2t(self.K22)

    def l2x(self, x: np.ndarray) -> np.ndarray:
        """``L2 x``."""
        if self.l2diag is not None:
            return self.l2diag.reshape((-1,) + (1,) * (x.ndim - 1)) * x
        return np.asarray(self.L2 @ x)  # type: ignore[operator]

    def l2t(self, x: np.ndarray) -> np.ndarray:
        """``L2' x``."""
        if self.l2diag is not None:
            return self.l2diag.reshape((-1,) + (1,) * (x.ndim - 1)) * x
        return np.asarray(self.L2.T @ x)  # type: ignore[attr-defined]

    def _j(self, v: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_solve

        return self.l2x(cho_solve((self.Ls, True), self.l2t(v), check_finite=False))

    def woodbury(self, zx: np.ndarray) -> np.ndarray:
        """``W Z'x`` given ``Z'x``, with ``(I + Z D Z')^-1 = I - Z W Z'``."""
        q1 = self.bs.groups * self.bs.ql
        u1, u2 = zx[:q1], zx[q1:]
        w2 = self._j(u2 - self.W1M12.T @ u1)
        w1 = self.W1s @ u1 - self.W1M12 @ w2
        return np.concatenate([np.asarray(w1), w2], axis=0)

    def vinv(self, x: np.ndarray, s2: float) -> np.ndarray:
        """``V^-1 x`` for an n-vector or an n-by-k matrix."""
        sd = self.sd
        return (x - sd.Z @ self.woodbury(sd.ZT @ x)) / s2


def _block_factor(sd: _Sparse, rho: np.ndarray) -> _BlockFactor | None:
    """The block factor at ``rho``; None without a split or off the feasible set."""
    bs = sd.blocks
    if bs is None:
        return None
    roots = [_root(m) for m in _level_matrices(sd, rho)]
    if any(r is None for r in roots):
        return None
    rest = sorted((first, g, r) for (first, g, _), r, li in zip(sd.level_cols, roots, range(len(roots)))
                  if li != bs.level)
    L2 = _repeated_blocks([(g, r) for _, g, r in rest], "csr")
    return _BlockFactor(sd, bs, roots[bs.level], L2)  # type: ignore[arg-type]


def _times_pattern(A: np.ndarray, groups: int, ql: int, P: np.ndarray, left: bool) -> np.ndarray:
    """``E A`` (``left``) or ``A E`` for ``E = I_groups (x) P`` on A's rows or columns."""
    if ql == 1:
        return A * P[0, 0]
    if left:
        return np.einsum("ij,gjm->gim", P, A.reshape(groups, ql, -1)).reshape(A.shape)
    return (A.reshape(A.shape[0], groups, ql) @ P).reshape(A.shape)


def _pattern_inner(A: np.ndarray, rows: tuple[int, int, np.ndarray], cols: tuple[int, int, np.ndarray]) -> float:
    """``tr(A' E_r A E_c) = sum((E_r A) * (A E_c))`` for ``E_r``, ``E_c`` the patterns
    ``I_groups (x) P`` on A's rows and columns (``rows``, ``cols``: groups, q_l, P)."""
    (gr, qr, Pr), (gc, qc, Pc) = rows, cols
    if qr == 1 and qc == 1:
        # Both patterns multiples of I: one pass over A, no temporaries of A's size.
        return float(Pr[0, 0] * Pc[0, 0]) * float(np.einsum("ij,ij->", A, A))
    return float(np.sum(_times_pattern(A, gr, qr, Pr, left=True) * _times_pattern(A, gc, qc, Pc, left=False)))


def _fill_upper(A: np.ndarray, block: int = 64) -> None:
    """Copy the square ``A``'s strict lower triangle onto its upper one, in place and by
    blocks (no temporary of A's size: a quarter of the time of ``tril(A) + tril(A, -1).T``)."""
    n = A.shape[0]
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        A[b0:b1, b1:] = A[b1:, b0:b1].T
        iu = np.triu_indices(b1 - b0, 1)
        diag_block = A[b0:b1, b0:b1]
        diag_block[iu] = diag_block.T[iu]


def _inverse_from_cholesky(Ls: np.ndarray) -> np.ndarray:
    """``S^-1``, both triangles, from the lower Cholesky factor of ``S``."""
    from scipy.linalg import lapack

    Sinv, info = lapack.dpotri(Ls, lower=1)
    if info != 0:
        raise FitError("the random-effects system is singular at these estimates")
    _fill_upper(Sinv)
    # LAPACK returns Fortran order; the matrix is symmetric, so its transpose is the same
    # matrix in C order (elementwise work with the C-ordered blocks then runs with unit stride).
    return Sinv.T if not Sinv.flags.c_contiguous else Sinv


def _subtract_outer(C: np.ndarray, A: np.ndarray, B: np.ndarray) -> None:
    """``C -= A B'`` in place (A and B thin), by one BLAS call: no temporary of C's size."""
    from scipy.linalg import blas

    if C.flags.c_contiguous:  # C' in Fortran order: C' -= B A'
        blas.dgemm(-1.0, B, A, beta=1.0, c=C.T, trans_b=1, overwrite_c=1)
    elif C.flags.f_contiguous:
        blas.dgemm(-1.0, A, B, beta=1.0, c=C, trans_b=1, overwrite_c=1)
    else:
        C -= A @ B.T


#: The shortcut of :func:`_rest_blocks` takes C22's diagonal as ``(1 - (S^-1)_ii) / l_i^2``:
#: only where no such difference is below this (it then loses at most three digits to the
#: cancellation). A variance near zero makes the difference small; the general path, which
#: has no cancellation there, is taken instead.
_SHORTCUT_MIN_DIFF = 1e-3


@dataclass(frozen=True, eq=False)
class _Rest:
    """The blocks of ``C`` through the rest of the effects (q2 of them), from :func:`_rest_blocks`."""

    J: np.ndarray  # L2 S^-1 L2' (q2 x q2)
    C22: np.ndarray  # Z2'G^-1 Z2 (REML: minus Y2 Omega Y2')
    C12: np.ndarray | None  # Z1'G^-1 Z2 (REML: minus Y1 Omega Y2'); None on the shortcut
    il2: np.ndarray | None  # on the shortcut (L2 = diag(l)): 1 / l^2


def _rest_blocks(f: _BlockFactor, Y1: np.ndarray | None, Y2: np.ndarray | None, Omega: np.ndarray | None) -> _Rest:
    """``J``, ``C22`` and (general path) ``C12``.

    In general (Ls the Cholesky factor of S, T = I - J K22)

        C22 = K22 - (Ls^-1 L2'K22)'(Ls^-1 L2'K22),   C12 = U T,

    two triangular solves and a rank-q2 update, each of order q2^3, and a sparse product.
    Where ``L2 = diag(l)`` is invertible (every other level a random intercept, or
    uncorrelated terms, none at a zero variance) the same matrices are scalings of ``S^-1``,
    which J needs anyway: with ``A = L2 K22 L2 = S - I``,

        C22 = L2^-1 (A - A S^-1 A) L2^-1 = L2^-1 (I - S^-1) L2^-1,   T = L2 S^-1 L2^-1,

    and C12 (q1 x q2) is not formed at all: its traces are taken through ``T``
    (:func:`_cross_by_shortcut`). Taken only where C22's diagonal keeps its digits
    (``_SHORTCUT_MIN_DIFF``)."""
    from scipy.linalg import blas, solve_triangular

    Sinv = _inverse_from_cholesky(f.Ls)
    l = f.l2diag
    C12 = il2 = None
    if l is not None and l.min() > 0 and float(np.min(1.0 - np.diagonal(Sinv))) >= _SHORTCUT_MIN_DIFF:
        il = 1.0 / l
        C22 = _scale_both(Sinv, il)
        np.negative(C22, out=C22)
        il2 = il * il
        C22[np.diag_indices_from(C22)] += il2
        J = _scale_both(Sinv, l, out=Sinv)
    else:
        Ls, U = f.Ls, f.U
        Phi = solve_triangular(Ls, f.LtK, lower=True, check_finite=False)  # Ls^-1 L2'K22
        KJK = blas.dsyrk(1.0, Phi, trans=1)  # Phi'Phi = K22 J K22, upper triangle (Fortran order)
        _fill_upper(KJK.T)
        C22 = np.subtract(f.K22, KJK.T)
        del KJK
        G2 = solve_triangular(Ls, Phi, lower=True, trans="T", check_finite=False)  # S^-1 L2'K22
        del Phi
        T = -f.l2x(G2)  # I - J K22
        del G2
        T[np.diag_indices_from(T)] += 1.0
        C12 = np.asarray(U @ T)  # Z1'G^-1 Z2
        del T
        J = f.l2x(f.l2x(Sinv).T)
    if Y1 is not None:
        Y2O = Y2 @ Omega  # type: ignore[operator]
        _subtract_outer(C22, Y2O, Y2)  # type: ignore[arg-type]
        if C12 is not None:
            _subtract_outer(C12, Y1, Y2O)
    return _Rest(J, C22, C12, il2)


def _cross_by_shortcut(rb: _Rest, rk: slice, pattern: tuple[int, int, np.ndarray], first: float,
                       JB: np.ndarray | None, B2: np.ndarray | None, Y2: np.ndarray | None,
                       Omega: np.ndarray | None) -> float:
    """``tr(C21 E_l C12 E_k)`` on the shortcut of :func:`_rest_blocks`, C12 not formed: ``E_l``
    on the largest level (``B0, B1, B2 = U'E_lU, U'E_lY1, Y1'E_lY1``, ``JA = J B0``, ``JB = J B1``),
    ``E_k`` on the rest's columns ``rk`` (``pattern``: groups, q_l, P). With C12 = U T - Y1 Omega Y2',
    T = L2 S^-1 L2^-1 and J = L2 S^-1 L2,

        C21 E_l C12 = T'B0 T - T'B1 Omega Y2' - Y2 Omega B1'T + Y2 Omega B2 Omega Y2',
        T'B0 T = L2^-2 J B0 J L2^-2,   T'B1 = L2^-2 J B1,

    so the first trace is ``tr(J B0 J L2^-2 E_k L2^-2)`` (``first``, from :func:`_first_by_ja` or
    :func:`_first_by_rows`) and the rest are thin."""
    gk, qk, Pk = pattern
    w = rb.il2[rk]  # type: ignore[index]
    out = first
    if JB is not None:
        Y2k = Y2[rk]  # type: ignore[index]
        EY = _times_pattern(Y2k, gk, qk, Pk, left=True)
        out -= 2.0 * float(np.sum((Y2k @ Omega) * _times_pattern(w[:, None] * JB[rk], gk, qk, Pk, left=True)))
        out += float(np.sum((Omega @ B2 @ Omega) * (Y2k.T @ EY)))  # type: ignore[operator]
    return out


def _first_by_ja(rb: _Rest, rk: slice, pattern: tuple[int, int, np.ndarray], JA: np.ndarray) -> float:
    """``tr(JA J L2^-2 E_k L2^-2)`` (see :func:`_cross_by_shortcut`) from ``JA = J B0``: rows
    ``rk`` of two q2-wide matrices."""
    gk, qk, Pk = pattern
    w = rb.il2[rk]  # type: ignore[index]
    if qk == 1:  # L2^-2 E_k L2^-2 = diag(P w^2) on rk
        return float(Pk[0, 0]) * float(np.einsum("ij,ij->i", JA[rk], rb.J[rk]) @ (w * w))
    return float(np.sum(JA[rk] * (w[:, None] * _times_pattern(w[:, None] * rb.J[rk], gk, qk, Pk, left=True))))


def _first_by_rows(rb: _Rest, rk: slice, pattern: tuple[int, int, np.ndarray], V: np.ndarray, p: float) -> float:
    """``tr(J B0 J L2^-2 E_k L2^-2)`` from ``V = U J`` where ``B0 = p U'U`` (a single-effect
    largest level): ``J B0 J = p V'V``, so it is ``p tr(V A V')``, A = L2^-2 E_k L2^-2 on
    columns ``rk``."""
    gk, qk, Pk = pattern
    Vk = V[:, rk] * rb.il2[rk]  # type: ignore[index]
    if qk == 1:
        return p * float(Pk[0, 0]) * float(np.einsum("ij,ij->", Vk, Vk))
    return p * float(np.sum(Vk * _times_pattern(Vk, gk, qk, Pk, left=False)))


#: Cost model of the largest level's terms for a single-effect largest level (relative to one
#: multiply-add of a dense BLAS product, measured with scipy and OpenBLAS on one core): a
#: multiply-add of a sparse times a dense matrix, and one pair (row product) of a product of
#: two sparse matrices.
_SPARSE_MAC = 9.0
_PAIR_COST = 125.0


def _terms_by_rows(bs: _Split, n_one: int) -> bool:
    """Whether the largest level's terms are taken through ``V = U J`` (q1 x q2, one sparse
    times dense product) and ``U J U'`` (one more, by blocks of rows) rather than through the
    dense q2 x q2 matrices ``U'U`` and ``J U'U`` (a dense product of order q2^3 and two
    sparse products). Only for a single-effect largest level; by the cost model above,
    e.g. on InstEval's first 20,000 rows (q2 = 806, nnz(U) = 20,000) rather than all of it."""
    if bs.ql != 1 or n_one != 1:
        return False
    q1, q2 = bs.M12.shape
    return bs.M12.nnz * (q1 + q2) * _SPARSE_MAC < q2**3 + 2 * bs.pairs * _PAIR_COST


def _row_quadratics(U: object, V: np.ndarray) -> np.ndarray:
    """``diag(U J U')`` given ``V = U J`` (U sparse CSR): one gather over U's entries."""
    rows = np.repeat(np.arange(U.shape[0]), np.diff(U.indptr))  # type: ignore[attr-defined]
    return np.bincount(rows, weights=U.data * V[rows, U.indices], minlength=U.shape[0])  # type: ignore[attr-defined]


def _sum_squares_product(U: object, V: np.ndarray, chunk_entries: int = 1 << 22) -> float:
    """``||U V'||_F^2`` (U sparse CSR, q1 x q2; V dense q1 x q2), by blocks of U's rows so that
    no more than ``chunk_entries`` numbers of the q1 x q1 product are held at once."""
    q1 = U.shape[0]  # type: ignore[attr-defined]
    Vt = np.ascontiguousarray(V.T)
    step = max(1, chunk_entries // max(1, V.shape[0]))
    out = 0.0
    for r0 in range(0, q1, step):
        W = np.asarray(U[r0:r0 + step] @ Vt)  # type: ignore[index]
        out += float(np.einsum("ij,ij->", W, W))
    return out


def _exact_derivatives(sd: _Sparse, f: _BlockFactor, Y: np.ndarray | None, Omega: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian in ``rho`` of ``log|I + Z D Z'|`` (REML, ``Y = Z'G^-1X`` and
    ``Omega = (X'G^-1X)^-1`` given: plus ``log|X'G^-1X|``), in closed form:

        d/drho_k = tr(C E_k),   d2/drho_k drho_l = -tr(C E_k C E_l),
        C = Z'G^-1 Z (REML: Z'G^-1Z - Y Omega Y'),

    ``E_k`` the parameter's pattern over its level's groups. C's blocks outside the largest
    level are dense (q2 wide; :func:`_rest_blocks`); its block within that level (q1 x q1) is
    never formed: it is K11 - F Gamma F' with F = [U, Y1] sparse or thin, and its traces are
    taken through that."""
    bs = f.bs
    q1 = bs.groups * bs.ql
    U = f.U
    reml = Y is not None and Omega is not None and Y.shape[1] > 0
    Y1, Y2 = (Y[:q1], Y[q1:]) if reml else (None, None)  # type: ignore[index]
    rb = _rest_blocks(f, Y1, Y2, Omega if reml else None)
    J, C22, C12 = rb.J, rb.C22, rb.C12

    def F_t_Q_F(Q: object, top: bool = True) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """The blocks U'QU (None unless ``top``), U'QY1, Y1'QY1 of F'QF, F = [U, Y1] (REML) or U;
        Q sparse, symmetric."""
        top = (U.T @ (Q @ U)).toarray() if top else None  # type: ignore[operator]
        if not reml:
            return top, None, None
        QY = Q @ Y1  # type: ignore[operator]
        return top, np.asarray(U.T @ QY), Y1.T @ QY  # type: ignore[union-attr]

    def tr_gamma(B: tuple[np.ndarray, np.ndarray | None, np.ndarray | None]) -> float:
        """tr(Gamma B), Gamma = blockdiag(J, Omega) (REML) or J."""
        out = float(np.sum(J * B[0]))
        return out + float(np.sum(Omega * B[2])) if reml else out  # type: ignore[operator]

    params = list(sd.patterns)
    K = len(params)
    g = np.zeros(K)
    H = np.zeros((K, K))
    where = []  # per parameter: (level, first column within its part, groups, ql)
    for level, _ in params:
        first, groups, ql = sd.level_cols[level]  # type: ignore[index]
        where.append((level, first - (0 if level == bs.level else q1), groups, ql))
    one = [k for k in range(K) if params[k][0] == bs.level]
    rest = [k for k in range(K) if params[k][0] != bs.level]
    # The largest level's own terms: C11 = K11 - F Gamma F', so with B_k = F'E_k F and
    # Q = E_k K11 E_l + E_l K11 E_k,
    # tr(C11 E_k C11 E_l) = tr(K11 E_k K11 E_l) - tr(Gamma F'QF) + tr(Gamma B_k Gamma B_l).
    # A single-effect largest level (E = p I) may instead take them through V = U J: then
    # tr(J B_k) = p sum(h), h = diag(U J U'), tr(Gamma F'QF) = sum(Q h) + ..., and
    # tr(J B_k J B_k) = p^2 ||U J U'||^2 (see _terms_by_rows).
    by_rows = _terms_by_rows(bs, len(one))
    B, JA, JB, OB = {}, {}, {}, {}
    V = h = None
    for k in one:
        B[k] = F_t_Q_F(_repeated_blocks([(bs.groups, params[k][1])], "csr"), top=not by_rows)
        if by_rows:
            V = np.asarray(U @ J)
            h = _row_quadratics(U, V)
            tr_jb = float(params[k][1][0, 0]) * float(h.sum())
        else:
            JA[k] = J @ B[k][0]
            tr_jb = float(np.trace(JA[k]))
        if reml:
            JB[k] = J @ B[k][1]  # type: ignore[operator]
            OB[k] = Omega @ B[k][1].T  # type: ignore[union-attr]
        g[k] = float(np.sum(f.K11 * params[k][1][None])) - tr_jb - (
            float(np.sum(Omega * B[k][2])) if reml else 0.0)  # type: ignore[operator]
    for i, k in enumerate(one):
        Pk = params[k][1]
        for l in one[i:]:
            Pl = params[l][1]
            t_kk = float(np.einsum("gij,gji->", f.K11 @ Pk, f.K11 @ Pl))
            Q = Pk[None] @ f.K11 @ Pl[None]
            if by_rows:
                q_diag = 2.0 * Q[:, 0, 0]
                t_rq = float(q_diag @ h)  # type: ignore[operator]
                if reml:
                    t_rq += float(np.sum(Omega * (Y1.T @ (q_diag[:, None] * Y1))))  # type: ignore[union-attr]
                t_rr = float(Pk[0, 0] * Pl[0, 0]) * _sum_squares_product(U, V)  # type: ignore[arg-type]
            else:
                t_rq = tr_gamma(F_t_Q_F(_blocks_csr(Q + np.swapaxes(Q, 1, 2))))
                t_rr = float(np.sum(JA[k] * JA[l].T))
            if reml:
                # the blocks of Gamma B_k Gamma B_l beyond J A_k J A_l
                t_rr += float(np.sum(JB[k] * OB[l].T)) + float(np.sum(OB[k] * JB[l].T))
                t_rr += float(np.sum((Omega @ B[k][2]) * (Omega @ B[l][2]).T))  # type: ignore[operator]
            H[k, l] = H[l, k] = -(t_kk - t_rq + t_rr)
    for k in rest:
        _, fk, gk, qk = where[k]
        Pk = params[k][1]
        rk = slice(fk, fk + gk * qk)
        Ckk = C22[rk, rk]
        diag_blocks = np.diagonal(Ckk.reshape(gk, qk, gk, qk), axis1=0, axis2=2)  # (qk, qk, gk)
        g[k] = float(np.sum(diag_blocks * Pk[:, :, None]))
        for l in one:
            if C12 is None:
                if by_rows:
                    first = _first_by_rows(rb, rk, (gk, qk, Pk), V, float(params[l][1][0, 0]))  # type: ignore[arg-type]
                else:
                    first = _first_by_ja(rb, rk, (gk, qk, Pk), JA[l])
                H[k, l] = H[l, k] = -_cross_by_shortcut(rb, rk, (gk, qk, Pk), first, JB.get(l), B[l][2], Y2, Omega)
            else:
                H[k, l] = H[l, k] = -_pattern_inner(C12[:, rk], (bs.groups, bs.ql, params[l][1]), (gk, qk, Pk))
        for l in rest:
            if l < k:
                continue
            _, fl, gl, qlv = where[l]
            H[k, l] = H[l, k] = -_pattern_inner(C22[rk, fl:fl + gl * qlv], (gk, qk, Pk), (gl, qlv, params[l][1]))
    return g, H


def _level_matrices(sd: _Sparse, rho: np.ndarray) -> list[np.ndarray]:
    """Each level's q_l x q_l covariance (relative to the residual variance) at ``rho``."""
    mats = [np.zeros((ql, ql)) for _, _, ql in sd.level_cols]
    for value, (level, pattern) in zip(rho, sd.patterns, strict=True):
        mats[level] = mats[level] + value * pattern  # type: ignore[index]
    return mats


def _repeated_blocks(levels: list[tuple[int, np.ndarray]], fmt: str) -> object:
    """The block-diagonal matrix with each ``(groups, m)``'s ``m`` repeated over its groups, in
    the order given."""
    import scipy.sparse as sp

    return sp.block_diag([sp.kron(sp.identity(g, format="csr"), m, format="csr") for g, m in levels], format=fmt)


def _block_diag(sd: _Sparse, mats: list[np.ndarray]) -> object:
    """The q x q block-diagonal matrix with ``mats[l]`` repeated over the groups of level l."""
    in_column_order = sorted(zip(sd.level_cols, mats, strict=True), key=lambda lm: lm[0][0])
    return _repeated_blocks([(g, m) for (_, g, _), m in in_column_order], "csc")


class _Factor:
    """``V = s2 (I + Z D Z')`` at relative covariances ``rho``: log|I + Z D Z'| and solves."""

    def __init__(self, sd: _Sparse, rho: np.ndarray) -> None:
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        self.sd = sd
        mats = _level_matrices(sd, rho)
        roots = [_root(m) for m in mats]
        psd = all(r is not None for r in roots)
        q = sd.M.shape[0]
        if psd:
            # H = I + L' M L: symmetric positive definite; LU without pivoting is its Cholesky.
            L = _block_diag(sd, roots)
            H = (sp.identity(q, format="csc") + L.T @ sd.M @ L).tocsc()
            self.lu = _cholesky(sd, H)
            self.L = L
        else:
            # Off the feasible set (a finite-difference step past a zero variance): I + D M is
            # still nonsingular for a small step; LU with partial pivoting.
            D = _block_diag(sd, mats)
            A = (sp.identity(q, format="csc") + D @ sd.M).tocsc()
            self.lu = splu(A, permc_spec="MMD_AT_PLUS_A")
            self.L = None
            self.D = D
        diag_u = self.lu.U.diagonal()
        if psd and np.any(diag_u <= 0):
            raise FitError("the marginal covariance is not positive definite at these estimates")
        logabs = np.log(np.abs(diag_u))
        if not psd:
            sign = np.prod(np.sign(diag_u)) * np.prod(np.sign(self.lu.L.diagonal()))
            sign *= _perm_sign(self.lu.perm_r) * _perm_sign(self.lu.perm_c)
            if sign <= 0:
                raise FitError("the marginal covariance is not positive definite at these estimates")
        self.logdet = float(np.sum(logabs))

    def woodbury(self, zx: np.ndarray) -> np.ndarray:
        """``W Z'x`` given ``Z'x``, with ``(I + Z D Z')^-1 = I - Z W Z'``."""
        if self.L is not None:
            return self.L @ self.lu.solve(np.asarray(self.L.T @ zx))
        # (I + Z D Z')^-1 = I - Z D (I + M D)^-1... written with A = I + D M: W = A^-1 D.
        return self.lu.solve(np.asarray(self.D @ zx))

    def vinv(self, x: np.ndarray, s2: float) -> np.ndarray:
        """``V^-1 x`` for an n-vector or an n-by-k matrix."""
        sd = self.sd
        return (x - sd.Z @ self.woodbury(sd.ZT @ x)) / s2


def _cholesky(sd: _Sparse, H: object) -> object:
    """SuperLU without pivoting of the SPD matrix ``H`` (its Cholesky factorization).

    The ordering is chosen once per design: the design's own column order (levels in
    order, groups within them; for two crossed factors this is lme4's block elimination and
    needs no ordering step) unless a minimum-degree ordering of ``H + H'`` gives a factor
    less than half as large. Either way the factor is exact; only its cost differs.
    """
    from scipy.sparse.linalg import splu

    def factor(spec: str) -> object:
        return splu(H, permc_spec=spec, diag_pivot_thresh=0.0, options={"SymmetricMode": True})

    spec = sd.ordering.get("permc")
    if spec is not None:
        return factor(spec)
    natural, mmd = factor("NATURAL"), factor("MMD_AT_PLUS_A")
    size = {lu: lu.L.nnz + lu.U.nnz for lu in (natural, mmd)}
    best = natural if size[natural] <= 2 * size[mmd] else mmd
    sd.ordering["permc"] = "NATURAL" if best is natural else "MMD_AT_PLUS_A"
    return best


def _perm_sign(perm: np.ndarray) -> float:
    seen = np.zeros(len(perm), dtype=bool)
    sign = 1.0
    for i in range(len(perm)):
        if not seen[i]:
            j, length = i, 0
            while not seen[j]:
                seen[j] = True
                j = perm[j]
                length += 1
            if length % 2 == 0:
                sign = -sign
    return sign


def _logdet_rho(sd: _Sparse, rho: np.ndarray, reml: bool, f: _Factor | None = None) -> float:
    """``log|I + Z D Z'|`` (REML: plus ``log|X'(I + Z D Z')^-1 X|``) at relative covariances ``rho``."""
    f = _Factor(sd, rho) if f is None else f
    out = f.logdet
    if reml and sd.X.shape[1]:
        xtvx = sd.XX - sd.ZX.T @ f.woodbury(sd.ZX)
        sign, ld = np.linalg.slogdet(xtvx)
        if sign <= 0:
            raise FitError("X' V^-1 X is not positive definite at these estimates")
        out += ld
    return float(out)


def _steps(sd: _Sparse, rho: np.ndarray) -> np.ndarray:
    """Finite-difference step per relative parameter: a small fraction of its own scale."""
    mats = _level_matrices(sd, rho)
    diag_m = sd.M.diagonal()
    out = np.empty(len(rho))
    for k, (value, (level, pattern)) in enumerate(zip(rho, sd.patterns, strict=True)):
        m = mats[level]  # type: ignore[index]
        ii, jj = np.nonzero(pattern)
        scale = float(np.max(np.sqrt(np.abs(np.diag(m)[ii] * np.diag(m)[jj])))) if ii.size else 0.0
        scale = max(abs(float(value)), scale)
        if not scale > 0:
            first, groups, ql = sd.level_cols[level]  # type: ignore[index]
            scale = 1.0 / max(1.0, float(diag_m[first:first + groups * ql].max()))
        out[k] = 1e-3 * scale
    return out


def _hessian(fun: object, x: np.ndarray, h: np.ndarray, f0: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of ``fun`` at ``x``: central differences at steps ``2h`` and ``h``,
    combined by Richardson extrapolation (error of order h^4)."""
    K = len(x)
    if f0 is None:
        f0 = fun(x)  # type: ignore[operator]

    def once(step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        plus = np.empty(K)
        minus = np.empty(K)
        for k in range(K):
            e = np.zeros(K)
            e[k] = step[k]
            plus[k], minus[k] = fun(x + e), fun(x - e)  # type: ignore[operator]
        g = (plus - minus) / (2 * step)
        H = np.empty((K, K))
        for k in range(K):
            H[k, k] = (plus[k] - 2 * f0 + minus[k]) / step[k] ** 2
            for l in range(k + 1, K):
                e = np.zeros(K)
                e[k], e[l] = step[k], step[l]
                pp, mm = fun(x + e), fun(x - e)  # type: ignore[operator]
                H[k, l] = H[l, k] = (pp + mm - plus[k] - minus[k] - plus[l] - minus[l] + 2 * f0) / (
                    2 * step[k] * step[l])
        return g, H

    g2, H2 = once(2 * h)
    g1, H1 = once(h)
    return (4 * g1 - g2) / 3, (4 * H1 - H2) / 3


def sparse_evaluate(design: Design, beta: np.ndarray | None, theta: np.ndarray, *, reml: bool) -> "Inference":  # noqa: F821
    """:func:`hlmbridge.inference.stata_parity.evaluate` for a crossed design, or a nested one
    whose levels are not a chain and whose blocks are wide (same meaning, same result type),
    from the sparse random-effects system."""
    from hlmbridge.inference.stata_parity import finish_inference

    sd = _prepare(design)
    n, p = sd.X.shape
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    rho = np.asarray(theta[:-1], dtype=float) / s2
    Kr = len(rho)
    K = Kr + 1
    bf = _block_factor(sd, rho)
    f = _Factor(sd, rho) if bf is None else bf
    X = sd.X
    VX = f.vinv(X, s2) if p else np.zeros((n, 0))
    XtVX = X.T @ VX
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    Vy = f.vinv(sd.y, s2)
    beta_gls0 = fixed_vcov @ (X.T @ Vy)
    beta_gls = beta_gls0 + sd.b0
    b = beta_gls0 if reml or beta is None else np.asarray(beta, dtype=float) - sd.b0
    r = sd.y - X @ b
    Vr = f.vinv(r, s2)
    quad = float(r @ Vr)
    logdet = n * np.log(s2) + f.logdet

    # Quadratic-form terms, exact: columns V_k V^-1 r (V_k = Z E_k Z'; the residual's V_k = I).
    u = sd.ZT @ Vr
    cols = np.empty((n, K))
    for k, (level, pattern) in enumerate(sd.patterns):
        first, groups, ql = sd.level_cols[level]  # type: ignore[index]
        ek = np.zeros_like(u)
        ek[first:first + groups * ql] = (u[first:first + groups * ql].reshape(groups, ql) @ pattern.T).ravel()
        cols[:, k] = sd.Z @ ek
    cols[:, Kr] = Vr
    Vcols = f.vinv(cols, s2)
    Bq = cols.T @ Vcols
    Xb = (X.T @ Vcols).T  # (K, p): X'V^-1 V_k V^-1 r
    quad_terms = Bq - Xb @ fixed_vcov @ Xb.T

    # Trace terms: minus the Hessian of log|V| (REML: + log|X'V^-1X|) in theta, from the exact
    # sparse log determinant g(rho) = log|I + Z D(rho) Z'| [+ log|X'(I + Z D Z')^-1 X|], rho = theta_r / s2:
    # log|V| = m log s2 + g(theta_r / s2), m = n (REML: n - p).
    if Kr and bf is not None:
        with_x = reml and p > 0
        Y = np.asarray(sd.ZX - sd.M @ bf.woodbury(sd.ZX)) if with_x else None
        g, Hg = _exact_derivatives(sd, bf, Y, fixed_vcov / s2 if with_x else None)
    elif Kr:
        g, Hg = _hessian(lambda x: _logdet_rho(sd, x, reml), rho, _steps(sd, rho), _logdet_rho(sd, rho, reml, f))
    else:
        g, Hg = np.zeros(0), np.zeros((0, 0))
    m = n - p if reml else n
    Hf = np.empty((K, K))
    Hf[:Kr, :Kr] = Hg / s2**2
    Hf[:Kr, Kr] = Hf[Kr, :Kr] = -g / s2**2 - Hg @ rho / s2**2
    Hf[Kr, Kr] = -m / s2**2 + 2 * float(g @ rho) / s2**2 + float(rho @ Hg @ rho) / s2**2
    info = 0.5 * Hf + quad_terms
    # Score: -d(log|V| [+ log|X'V^-1X|])/dtheta / 2 + r'V^-1 V_k V^-1 r / 2.
    grad_logdet = np.empty(K)
    grad_logdet[:Kr] = g / s2
    grad_logdet[Kr] = m / s2 - float(g @ rho) / s2
    score = 0.5 * (cols.T @ Vr - grad_logdet)
    if reml:
        sign, logdet_x = np.linalg.slogdet(XtVX)
        loglik = -0.5 * ((n - p) * np.log(2 * np.pi) + logdet + logdet_x + quad)
    else:
        loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    return finish_inference(design, loglik, beta_gls, fixed_vcov, info, score)
