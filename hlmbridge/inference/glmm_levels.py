"""Laplace's approximation for a GLMM on several grouping levels (nested or crossed), sparse.

Every effect of every level at once, ``b = Lambda u`` with ``u ~ N(0, I)`` and ``Lambda``
block diagonal (each level's ``q_l x q_l`` Cholesky root repeated over its groups). For fixed
``(beta, Lambda)`` PIRLS finds the conditional mode ``u^`` maximizing
``sum_i log f(y_i | eta_i) - |u|^2 / 2`` with ``eta = X beta + offset + Z Lambda u`` by Newton
steps on ``H = Lambda' Z' W Z Lambda + I`` (W the Fisher weights, as glmer), halving a step
while the penalized log likelihood falls; the Laplace log likelihood is glmer's ``nAGQ = 1``,

    log f(y | u^) - |u^|^2 / 2 - log|H(u^)| / 2.

``H`` is sparse (a row of ``Z`` has one non-zero per level and term) and is factored by the
sparse Cholesky hlmbridge's crossed linear models use (:mod:`hlmbridge.inference.sparse`):
SuperLU without pivoting in SymmetricMode (the Cholesky of an SPD matrix), the column order
chosen once per data (the design's own, or a minimum-degree ordering of ``H + H'`` when that
halves the factor). No dense matrix whose size grows with the number of groups is formed;
the conditional variances (``ranef(condVar = TRUE)``) are the diagonal of ``Lambda H^-1
Lambda'``, solved a block of columns at a time.

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> rng = np.random.default_rng(1)
>>> a, b = rng.integers(0, 8, 300), rng.integers(0, 5, 300)
>>> y = (rng.random(300) < 0.4).astype(float)
>>> data = levels_data(y, np.ones((300, 1)), [(np.ones((300, 1)), a, 8), (np.ones((300, 1)), b, 5)],
...                    family("binomial"))
>>> m = levels_laplace(data, np.array([-0.4]), [np.eye(1) * 0.3, np.eye(1) * 0.2])
>>> m.u.shape, bool(np.isfinite(m.loglik))
((1, 13), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from hlmbridge.errors import FitError
from hlmbridge.families import Family
from hlmbridge.inference.glmm_pirls import newton_with_halving, row_constant, row_loglik, score_and_weight
from hlmbridge.inference.glmm_quadrature import Marginal

__all__ = ["LevelsData", "conditional_variances", "effects", "levels_data", "levels_laplace"]


@dataclass(frozen=True, eq=False)
class LevelsData:
    """A GLMM's rows with the random effects of several grouping levels, every effect at once
    (columns level by level, group by group, a level's terms within a group).

    A row touches ``K = sum q_l`` effects, the terms of its group in each level: ``cols``
    (n x K) are their positions in ``H``, whose rows and columns are the effects in the
    fill-reducing order ``perm``; ``level_Z`` each level's own ``n x q_l`` columns; ``sizes``
    each level's ``(groups, q_l)``. ``H = Lambda' Z' W Z Lambda + I`` has a fixed sparsity
    pattern (CSC ``indices``/``indptr``): ``pair_pos`` places each row's ``K x K`` products in
    its entries, ``diag_pos`` the identity. The vectors ``u`` of :meth:`times` and
    :meth:`transposed` are in ``H``'s order; :func:`levels_laplace` takes and returns the
    effects in the design's order.
    """

    y: np.ndarray
    X: np.ndarray
    offset: np.ndarray
    family: Family
    constant: np.ndarray
    level_Z: tuple[np.ndarray, ...]
    sizes: tuple[tuple[int, int], ...]
    cols: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    pair_pos: np.ndarray
    diag_pos: np.ndarray
    perm: np.ndarray  # position p of H's rows and columns holds effect perm[p] (a fill-reducing order)
    weights: np.ndarray | None = None  # a binomial response's numbers of trials (y their proportion)

    @property
    def n_effects(self) -> int:
        """The number of random effects of all levels."""
        return int(sum(g * q for g, q in self.sizes))

    def zl(self, mats: list[np.ndarray]) -> np.ndarray:
        """``Z Lambda`` on each row's ``K`` effects (n x K), ``Lambda`` each level's lower
        Cholesky root of ``mats[l]``; LinAlgError where one is not positive definite."""
        return np.hstack([Zl @ np.linalg.cholesky(np.asarray(G, dtype=float))
                          for Zl, G in zip(self.level_Z, mats)])

    def times(self, zl: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``Z Lambda u``."""
        return np.einsum("ik,ik->i", zl, u[self.cols])

    def transposed(self, zl: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``Lambda' Z' r``."""
        return np.bincount(self.cols.ravel(), weights=(zl * r[:, None]).ravel(), minlength=self.n_effects)

    def curvature(self, zl: np.ndarray, w: np.ndarray) -> Any:
        """``H = Lambda' Z' W Z Lambda + I`` (sparse CSC)."""
        q = self.n_effects
        prods = (zl * w[:, None])[:, :, None] * zl[:, None, :]
        data = np.bincount(self.pair_pos, weights=prods.ravel(), minlength=len(self.indices))
        data[self.diag_pos] += 1.0
        return sparse.csc_matrix((data, self.indices, self.indptr), shape=(q, q))


def levels_data(y: np.ndarray, X: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray, int]], fam: Family,
                offset: np.ndarray | None = None, trials: np.ndarray | None = None) -> LevelsData:
    """The rows of a GLMM with several grouping levels; ``levels`` holds each level's
    ``(Z_l, codes_l, n_groups_l)`` (``Z_l`` n x q_l, ``codes_l`` 0-based group of each row);
    ``trials`` a binomial response's numbers of trials (``y`` the proportion of successes)."""
    ys = np.asarray(y, dtype=float)
    n = len(ys)
    cols, sizes, zs = [], [], []
    first = 0
    for Zl, codes, groups in levels:
        Zl = np.asarray(Zl, dtype=float)
        codes = np.asarray(codes, dtype=np.int64)
        if np.any(np.bincount(codes, minlength=groups) == 0):
            raise FitError("a grouping level has a group without observations", engine="quadrature")
        ql = Zl.shape[1]
        cols.append(first + codes[:, None] * ql + np.arange(ql)[None, :])
        sizes.append((int(groups), int(ql)))
        zs.append(np.ascontiguousarray(Zl))
        first += int(groups) * ql
    c = np.hstack(cols).astype(np.int64)
    n_trials = None if trials is None else np.asarray(trials, dtype=float)
    constant = row_constant(fam, ys, n_trials)
    off = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
    Xf = np.asarray(X, dtype=float)
    natural = _with_columns(ys, Xf, off, fam, constant, tuple(zs), tuple(sizes), c, np.arange(first), n_trials)
    perm = _ordering(natural)
    return natural if perm is None else _with_columns(ys, Xf, off, fam, constant, tuple(zs), tuple(sizes), c, perm,
                                                      n_trials)


def _with_columns(y: np.ndarray, X: np.ndarray, offset: np.ndarray, fam: Family, constant: np.ndarray,
                  level_Z: tuple[np.ndarray, ...], sizes: tuple[tuple[int, int], ...], cols: np.ndarray,
                  perm: np.ndarray, trials: np.ndarray | None) -> LevelsData:
    """LevelsData with the effects in the order ``perm`` (position p holds effect ``perm[p]``)."""
    q = len(perm)
    rank = np.empty(q, dtype=np.int64)
    rank[perm] = np.arange(q)
    c = rank[cols]
    # the pattern of H in CSC order: key = column * q + row, sorted
    pairs = (c[:, None, :] * q + c[:, :, None]).ravel()
    diag = np.arange(q, dtype=np.int64) * (q + 1)
    keys, inverse = np.unique(np.concatenate([pairs, diag]), return_inverse=True)
    indices = (keys % q).astype(np.int32)
    indptr = np.searchsorted(keys // q, np.arange(q + 1)).astype(np.int32)
    return LevelsData(y, X, offset, fam, constant, level_Z, sizes, c, indices, indptr, inverse[:len(pairs)],
                      inverse[len(pairs):], np.asarray(perm, dtype=np.int64), trials)


def _ordering(data: LevelsData) -> np.ndarray | None:
    """A fill-reducing order of the effects for ``H``'s pattern (chosen once: SuperLU's minimum
    degree on ``H + H'`` or COLAMD, whichever gives the smaller factor), or None when the
    design's own order is as good. Every later factorization then takes the order as it is."""
    from scipy.sparse.linalg import splu

    H = data.curvature(np.hstack(data.level_Z), np.ones(len(data.y)))

    def size(M: Any, spec: str) -> tuple[int, np.ndarray]:
        lu = splu(M, permc_spec=spec, diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        return lu.L.nnz + lu.U.nnz, lu.perm_c

    best, perm = size(H, "NATURAL")[0], None
    for spec in ("MMD_AT_PLUS_A", "COLAMD"):
        _, pc = size(H, spec)
        order = np.argsort(pc)  # perm_c maps a column to its position
        n_fill = size(H[order][:, order].tocsc(), "NATURAL")[0]
        if n_fill < best:
            best, perm = n_fill, order
    return perm


def effects(data: LevelsData, mats: list[np.ndarray], u: np.ndarray) -> np.ndarray:
    """The random effects ``b = Lambda u`` (every effect, in ``data``'s column order)."""
    u = np.asarray(u, dtype=float).reshape(-1)
    out, first = [], 0
    for (groups, ql), G in zip(data.sizes, mats):
        L = np.linalg.cholesky(np.asarray(G, dtype=float))
        out.append((u[first:first + groups * ql].reshape(groups, ql) @ L.T).ravel())
        first += groups * ql
    return np.concatenate(out)


def _factor(H: Any) -> Any:
    """SuperLU without pivoting of the SPD ``H`` in its own order (its Cholesky), as
    :mod:`hlmbridge.inference.sparse` factors crossed designs."""
    from scipy.sparse.linalg import splu

    return splu(H, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})


def _logdet(lu: Any) -> float:
    d = lu.U.diagonal()
    if np.any(d <= 0):
        raise FitError("Lambda' Z' W Z Lambda + I is not positive definite", engine="quadrature")
    return float(np.sum(np.log(d)))


def levels_laplace(data: LevelsData, beta: np.ndarray, mats: list[np.ndarray], u0: np.ndarray | None = None,
                   tol: float = 1e-11, max_iter: int = 200) -> Marginal:
    """Laplace's log likelihood at ``beta`` and each level's covariance ``mats``; the Marginal's
    ``u`` is the conditional mode (1 x q, spherical scale), ``H`` None (it is sparse: see
    :func:`conditional_variances`). ``u0`` starts PIRLS (zeros when None).

    Raises FitError when PIRLS does not converge; LinAlgError where a covariance is not
    positive definite.
    """
    zl = data.zl(mats)
    q = data.n_effects
    fixed = data.X @ beta + data.offset
    u = np.zeros(q) if u0 is None else np.array(u0, dtype=float).reshape(q)[data.perm]

    def objective(v: np.ndarray) -> float:
        return float(np.sum(row_loglik(data, fixed + data.times(zl, v)))) - 0.5 * float(v @ v)  # type: ignore[arg-type]

    def direction(v: np.ndarray) -> np.ndarray:
        s, w = score_and_weight(data, fixed + data.times(zl, v))  # type: ignore[arg-type]
        return _factor(data.curvature(zl, w)).solve(data.transposed(zl, s) - v)

    u, obj = newton_with_halving(u, objective, direction, tol, max_iter)
    # log|H| at the mode itself (the factor of the last step is at u before a step of 1e-11,
    # which moves log|H| by up to 1e-10 over hundreds of effects: visible in the second
    # differences the observed information is taken by)
    _, w = score_and_weight(data, fixed + data.times(zl, u))  # type: ignore[arg-type]
    value = obj - 0.5 * _logdet(_factor(data.curvature(zl, w)))
    out = np.empty(q)
    out[data.perm] = u
    return Marginal(value, np.array([value]), out[None, :], None)


def conditional_variances(data: LevelsData, beta: np.ndarray, mats: list[np.ndarray], u: np.ndarray,
                          block: int = 256) -> np.ndarray:
    """The diagonal of ``Lambda H^-1 Lambda'`` at the mode ``u`` (1 x q or q): each effect's
    conditional variance (glmer's ``condVar``), from the ``q_l x q_l`` diagonal blocks of
    ``H^-1``, solved ``block`` columns at a time."""
    zl = data.zl(mats)
    _, w = score_and_weight(data, data.X @ beta + data.offset  # type: ignore[arg-type]
                            + data.times(zl, np.asarray(u, dtype=float).reshape(-1)[data.perm]))
    lu = _factor(data.curvature(zl, w))
    rank = np.empty(len(data.perm), dtype=np.int64)
    rank[data.perm] = np.arange(len(data.perm))
    q = data.n_effects
    out = np.empty(q)
    first = 0
    for (groups, ql), G in zip(data.sizes, mats):
        L = np.linalg.cholesky(np.asarray(G, dtype=float))
        blocks = np.empty((groups, ql, ql))
        per = max(1, block // ql)
        for g0 in range(0, groups, per):
            g1 = min(groups, g0 + per)
            m = (g1 - g0) * ql
            where = rank[first + g0 * ql + np.arange(m)]  # these groups' effects in H's order
            rhs = np.zeros((q, m))
            rhs[where, np.arange(m)] = 1.0
            sol = lu.solve(rhs)[where]  # rows of these groups (m x m)
            idx = np.arange(g1 - g0)
            blocks[g0:g1] = sol.reshape(g1 - g0, ql, g1 - g0, ql)[idx, :, idx, :]
        cond = L[None] @ blocks @ L.T[None]
        out[first:first + groups * ql] = np.diagonal(cond, axis1=1, axis2=2).ravel()
        first += groups * ql
    return out
