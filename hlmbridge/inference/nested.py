"""Stata-parity inference for nested designs by block-recursive elimination (the "arrow"
structure of ``Z'Z``), at a cost linear in the number of groups.

In a nested design (levels ``0`` outermost ... ``L-1`` innermost, each group of a level inside
one group of the level above) the marginal covariance of the rows of one group ``g`` of level
``l`` is

    V_g = R_g + Z_g D_l Z_g',   R_g = blockdiag(V_c over the children c of g)

(the children of an innermost group are its rows, ``V_row = s2``), ``Z_g`` its own random-effects
columns and ``D_l`` its level's covariance. With ``N = Z_g'R_g^-1 Z_g``, ``B = (I + N D_l)^-1``
and ``W = D_l B`` (symmetric; no ``D^-1``, so a singular ``D`` at a boundary fit is fine),

    V_g^-1 = R_g^-1 - R_g^-1 Z_g W Z_g' R_g^-1,   log|V_g| = sum_c log|V_c| + log|I + N D_l|.

So everything the closed forms of :func:`hlmbridge.inference.stata_parity.evaluate` need comes
from one small matrix per group, ``T_g = A_g' V_g^-1 A_g`` with ``A_g = [Z of the group's
ancestors | X | y]`` over its rows (``sum_{m<l} q_m + p + 1`` wide): a group's ``S = A'R^-1 A``
(its own columns first) is the sum of its children's ``T``, and

    T_g = S_rr - Y' W Y,   N = S_oo, Y = S_or  (o: the group's own columns, r: the rest).

The groups of one level are done together (batched products of q_l-wide matrices), innermost
level first; the outermost level's ``T`` summed over its groups is ``G = [X y]'V^-1[X y]``.

Every term of the score and the observed information is a first or second derivative of
``G`` or of ``log|V|`` in the variance parameters (``V`` is linear in them):
``X'V^-1 V_k V^-1 r = -dG_k``, ``r'V^-1 V_k V^-1 V_l V^-1 r = c'd2G_kl c / 2``,
``tr(V^-1 V_k) = d log|V|_k``, ``tr(V^-1 V_k V^-1 V_l) = -d2 log|V|_kl``, and REML's
``tr(Av X'V^-1V_kV^-1V_lV^-1X) = tr(Av d2G_kl) / 2``. They are carried through the recursion
exactly (forward-mode first and second derivatives of ``B``, ``W``, ``T`` and the log
determinant; a group's quantities depend only on the parameters of its own and the deeper
levels), at fixed residual variance; the residual's derivatives follow from homogeneity
(``G`` has degree -1 in all the parameters, ``log|V|`` gains ``n log t`` under scaling by ``t``).
No matrix grows with the number of groups at any level beyond one small matrix per group.

The same recursion serves the other post-fit quantities of a nested design (where
:func:`hlmbridge.inference.stata_parity._path` chooses it): the df methods take ``X'V^-1 X``,
``C_k = -dG_k`` and ``(Q_kl + Q_lk) / 2 = d2G_kl / 2`` on the ``X`` block and
``tr(V^-1 V_k V^-1 V_l) = -d2 log|V|_kl`` (:func:`nested_derivatives`); the profile likelihood
its upward pass without derivatives (:func:`nested_ml_parts`); the random effects a downward
pass after it (:func:`nested_conditional_effects`: each group's effects given its ancestors' are
normal with covariance ``W`` and a mean linear in the ancestors' effects, so the modes and
conditional covariances given y follow level by level, outermost first).

tests/test_nested_inference.py checks it against the dense closed forms, and
tests/test_nested_postfit.py the post-fit quantities against the dense paths, scipy and lme4.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(3)
>>> cls = rng.integers(0, 60, 400)
>>> df = pd.DataFrame({"y": rng.normal(size=400) + rng.normal(size=60)[cls], "s": cls // 6, "c": cls})
>>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | s/c)"), df)
>>> is_nested_chain(d)
True
>>> inf = nested_evaluate(d, None, np.array([0.5, 1.0, 1.0]), reml=True)
>>> bool(np.isfinite(inf.loglik)), inf.information.shape
(True, (3, 3))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.design.cache import per_design
from hlmbridge.errors import FitError

__all__ = ["is_nested_chain", "nested_conditional_effects", "nested_derivatives", "nested_evaluate",
           "nested_ml_parts", "nested_work"]


#: The groups of a level are eliminated in chunks whose second derivatives hold about this many
#: numbers (32 MB), so that temporaries stay small whatever the number of groups.
_CHUNK = 4_000_000
#: The sums into the groups of a level above hold ``groups x (A a)^2`` numbers (A parameters, a
#: columns); beyond this many (400 MB) :func:`nested_work` declines the design (then the dense or
#: sparse path is taken).
_MAX_SUMS = 50_000_000


@dataclass(frozen=True, eq=False)
class _Tree:
    """A nested design's groups as a tree, and the cross-products of its innermost groups."""

    order: tuple[int, ...]  # design level of each tree level, outermost first
    q: tuple[int, ...]  # random effects per group, per tree level
    up: tuple[object, ...]  # per tree level t: the (groups at t-1) x (groups at t) sum (t = 0: one row), CSC
    parent: tuple[np.ndarray, ...]  # per tree level t: each group's parent at t - 1 (t = 0: all 0)
    S_leaf: np.ndarray  # (innermost groups, a, a): [Z_{L-1} .. Z_0 | X | y]'[...] over their rows
    params: tuple[tuple[tuple[int, np.ndarray], ...], ...]  # per tree level: (parameter, pattern)
    b0: np.ndarray  # least-squares coefficients taken out of y
    n_total: float


def _chain(design: Design) -> tuple[int, ...] | None:
    """The design's levels from the outermost in, if each one's groups lie inside the groups of
    the one before (a chain); else None."""
    order = sorted(range(len(design.levels)), key=lambda i: design.levels[i].n_groups)
    for outer, inner in zip(order, order[1:]):
        co, ci = design.levels[outer].codes, design.levels[inner].codes
        parent = np.empty(design.levels[inner].n_groups, dtype=np.int64)
        parent[ci] = co
        if not np.array_equal(parent[ci], co):
            return None
    return tuple(order)


def is_nested_chain(design: Design) -> bool:
    """Whether every level's groups lie inside the groups of the level with the next fewer
    groups (a single grouping level counts), so that :func:`nested_evaluate` applies."""
    return _tree(design) is not None


def nested_work(design: Design) -> float | None:
    """The block-recursive path's cost estimate, ``sum over levels of groups x (A r)^2`` (A the
    parameters a group's quantities depend on, r the columns left after its own: the size of
    its second derivatives), or None where the levels do not form a chain or its sums would
    exceed ``_MAX_SUMS`` numbers."""
    order = _chain(design)
    if order is None:
        return None
    from hlmbridge.inference.stata_parity import variance_parameters

    per_level = np.bincount([prm.level for prm in variance_parameters(design) if prm.level is not None],
                            minlength=len(design.levels))
    work = 0.0
    for t, li in enumerate(order):
        active = sum(int(per_level[m]) for m in order[t:])
        rest = sum(design.levels[m].Z.shape[1] for m in order[:t]) + design.n_fixed + 1
        work += design.levels[li].n_groups * float(active * rest) ** 2
        above = design.levels[order[t - 1]].n_groups if t else 1
        if above * float(active * rest) ** 2 > _MAX_SUMS:
            return None
    return work


@per_design
def _tree(design: Design) -> _Tree | None:
    import scipy.sparse as sp

    from hlmbridge.inference.stata_parity import variance_parameters

    order = _chain(design)
    if order is None:
        return None
    levels = [design.levels[i] for i in order]
    n, p = design.X.shape
    X, y = design.X, design.y_fit
    Zs = [ld.Z for ld in levels]
    if design.weights is not None:
        sw = np.sqrt(design.weights)
        X, y, Zs = X * sw[:, None], y * sw, [z * sw[:, None] for z in Zs]
    # As the dense path does: work with y - X b0 (no cross-product carries y's mean).
    b0 = np.linalg.lstsq(X, y, rcond=None)[0] if p else np.zeros(0)
    y = y - X @ b0 if p else y
    v = np.column_stack(Zs[::-1] + [X, y])  # innermost level's columns first
    a = v.shape[1]
    leaf = levels[-1]
    agg = sp.csr_matrix((np.ones(n), (leaf.codes, np.arange(n))), shape=(leaf.n_groups, n))
    S_leaf = np.asarray(agg @ (v[:, :, None] * v[:, None, :]).reshape(n, a * a)).reshape(leaf.n_groups, a, a)
    up = [sp.csc_matrix(np.ones((1, levels[0].n_groups)))]
    parents = [np.zeros(levels[0].n_groups, dtype=np.int64)]
    for t in range(1, len(levels)):
        parent = np.empty(levels[t].n_groups, dtype=np.int64)
        parent[levels[t].codes] = levels[t - 1].codes
        m = levels[t].n_groups
        up.append(sp.csc_matrix((np.ones(m), (parent, np.arange(m))), shape=(levels[t - 1].n_groups, m)))
        parents.append(parent)
    tree_level = {li: t for t, li in enumerate(order)}
    params: list[list[tuple[int, np.ndarray]]] = [[] for _ in levels]
    for k, prm in enumerate(variance_parameters(design)):
        if prm.level is not None:
            params[tree_level[prm.level]].append((k, prm.pattern))
    return _Tree(tuple(order), tuple(ld.Z.shape[1] for ld in levels), tuple(up), tuple(parents), S_leaf,
                 tuple(tuple(x) for x in params), b0, float(n))


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _sym(a: np.ndarray) -> np.ndarray:
    return a + _t(a)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with broadcasting; an elementwise product over an inner dimension of 1 (one
    random effect per group), where numpy's batched matmul pays a per-matrix cost."""
    if a.shape[-1] == 1:
        return a * b
    return a @ b


def _inv_logdet(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses and log determinants of a stack of matrices ``I + N D`` (positive determinants,
    else the marginal covariance is not positive definite); closed forms for 1 x 1 and 2 x 2,
    where LAPACK's per-matrix cost would dominate over thousands of groups."""
    q = m.shape[-1]
    if q == 1:
        det = m[:, 0, 0]
        inv = 1.0 / m
    elif q == 2:
        a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        det = a * d - b * c
        inv = np.stack([np.stack([d, -b], axis=-1), np.stack([-c, a], axis=-1)], axis=-2) / det[:, None, None]
    else:
        sign, logdet = np.linalg.slogdet(m)
        if (sign <= 0).any():
            raise FitError("the marginal covariance is not positive definite at these estimates")
        return np.linalg.inv(m), logdet
    if not (det > 0).all():
        raise FitError("the marginal covariance is not positive definite at these estimates")
    return inv, np.log(det)


def _eliminate_leaves(S: np.ndarray, q: int, P: np.ndarray, Dl: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`_eliminate` for groups whose ``S`` does not depend on the parameters (the
    innermost level: ``S`` is the cross-products of its rows over ``s2``); only the level's own
    parameters are active. With ``U = B Y``: ``T_i = -U'P_i U`` and
    ``T_ij = sym((P_i U)' B N P_j U)`` (``B N`` is symmetric); ``log|I + N D|`` has gradient ``tr(B N P_i)`` and Hessian
    ``-tr(B N P_j B N P_i)``."""
    N, Y, R = S[:, :q, :q], S[:, :q, q:], S[:, q:, q:]
    Bm, logdet = _inv_logdet(np.eye(q) + _mm(N, Dl))  # B = (I + N D)^-1
    W = _mm(Dl, Bm)
    W = 0.5 * (W + _t(W))
    U = _mm(Bm, Y)
    T = R - _mm(_t(Y), _mm(W, Y))
    g, A, r = S.shape[0], P.shape[0], U.shape[-1]
    PU = _mm(P[None], U[:, None])  # (g, A, q, r): P_i U
    PUf = PU.transpose(0, 2, 1, 3).reshape(g, q, A * r)  # [P_1 U | P_2 U | ...]
    BN = _mm(Bm, N)  # B N = N B' (symmetric)
    Td = -_mm(_t(U), PUf).reshape(g, r, A, r)  # [r1, i, r2]
    # T_ij = (P_j U)' B N (P_i U) + its transpose: the (i, j) block of the Gram matrix of the
    # P_i U in the metric B N, symmetrized.
    Tdd = _mm(_t(PUf), _mm(BN, PUf)).reshape(g, A, r, A, r)  # half of T_ij, [i, r1, j, r2]
    BNP = _mm(BN[:, None], P[None])  # B N P_i
    ld_g = np.einsum("gaii->ga", BNP)
    ld_h = -np.einsum("gbij,gaji->gab", BNP, BNP)
    return T, Td, Tdd, logdet, ld_g, ld_h


def _pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x_i' y_j`` for every pair (i, j) of the stacks ``x`` (g, A, m, r) and ``y`` (g, B, m, s),
    laid out (g, A, r, B, s): one product of (A r) x m and m x (B s) matrices per group."""
    g, A, m, r = x.shape
    B, s = y.shape[1], y.shape[3]
    xf = x.transpose(0, 2, 1, 3).reshape(g, m, A * r)
    yf = y.transpose(0, 2, 1, 3).reshape(g, m, B * s)
    return (_t(xf) @ yf).reshape(g, A, r, B, s)


def _eliminate(S: np.ndarray, dS: np.ndarray, H_in: np.ndarray, q: int, P: np.ndarray,
               Dl: np.ndarray) -> tuple[np.ndarray, ...]:
    """One level's groups eliminated, given ``S`` (g, a, a) and its derivatives in the C
    parameters of the deeper levels: ``dS`` (g, C, a, a) and ``H_in`` (g, C, a, C, a), half of
    the second ones (``d2S_ij = H_ij + H_ij'``, ``H_ij = H_in[:, i, :, j, :]``). ``P`` (A, q, q)
    holds the level's own patterns (dD/dparameter) first, zeros for the C deeper parameters after
    them; ``Dl`` is the level's covariance.

    Returns ``T`` (g, r, r) on the remaining r columns; its first derivatives laid out
    (g, r, A, r) and half its second ones (g, A, r, A, r), as :func:`_eliminate_leaves` does;
    and ``log|I + N D|`` with its gradient (g, A) and Hessian (g, A, A).

    With ``E = [-W Y; I]`` (``T = E'S E`` at fixed ``W``) and ``U = B Y``:
    ``T_i = E'S_i E - U'D_i U``, and half of ``T_ij`` is ``E'H_ij E - Y_i'W Y_j - Y_i'W_j Y
    - Y_j'W_i Y - (D_i U)'B_j Y + (N_i W Y)'W_j Y``, from ``W_i = B'D_i B - W N_i W`` and
    ``B_i = -N_i W - N W_i`` (``B = I - N W``)."""
    g, a = S.shape[0], S.shape[1]
    r = a - q
    A, C = P.shape[0], dS.shape[1]
    nO = A - C
    N, Y, R = S[:, :q, :q], S[:, :q, q:], S[:, q:, q:]
    Bm, logdet = _inv_logdet(np.eye(q) + _mm(N, Dl))  # B = (I + N D)^-1
    W = _mm(Dl, Bm)
    W = 0.5 * (W + _t(W))
    BT = _t(Bm)
    Nd = np.zeros((g, A, q, q))
    Nd[:, nO:] = dS[:, :, :q, :q]
    Yd = np.zeros((g, A, q, r))
    Yd[:, nO:] = dS[:, :, :q, q:]
    WY = _mm(W, Y)
    U = _mm(Bm, Y)
    E = np.concatenate([-WY, np.broadcast_to(np.eye(r), (g, r, r))], axis=1)  # (g, a, r)
    NdW = _mm(Nd, W[:, None])
    Wd = _mm(_mm(BT[:, None], P[None]), Bm[:, None]) - _mm(W[:, None], NdW)
    Bd = -NdW - _mm(N[:, None], Wd)
    T = R - _mm(_t(Y), WY)
    PU = _mm(P[None], U[:, None])  # D_i B Y, (g, A, q, r)
    Td = np.empty((g, A, r, r))
    Td[:, :nO] = -_mm(_t(U)[:, None], PU[:, :nO])
    Td[:, nO:] = _mm(_mm(_t(E)[:, None], dS), E[:, None])
    H = np.zeros((g, A, r, A, r))
    EH = (H_in.reshape(g, C * a * C, a) @ E).reshape(g, C, a, C * r)
    H[:, nO:, :, nO:, :] = (_t(E)[:, None] @ EH).reshape(g, C, r, C, r)
    WdY = _mm(Wd, Y[:, None])
    M2 = _pairs(Yd, WdY)  # Y_i'W_j Y
    H -= M2
    H -= M2.transpose(0, 3, 2, 1, 4)
    H -= _pairs(np.concatenate([Yd, PU, -_mm(Nd, WY[:, None])], axis=2),
                np.concatenate([_mm(W[:, None], Yd), _mm(Bd, Y[:, None]), WdY], axis=2))
    # log|I + N D|: gradient tr(B A_i), A_i = N_i D + N D_i; Hessian tr(B A_ij) - tr(B A_j B A_i),
    # A_ij = N_ij D + N_i D_j + N_j D_i.
    BNd = _mm(Bm[:, None], Nd)
    BAd = _mm(BNd, Dl) + _mm(Bm[:, None], _mm(N[:, None], P[None]))
    ld_g = np.einsum("gaii->ga", BAd)
    cross = np.einsum("giab,jba->gij", BNd, P)
    ld_h = cross + cross.swapaxes(1, 2) - np.einsum("gjab,giba->gij", BAd, BAd)
    DB = _mm(Dl, Bm)
    ld_h[:, nO:, nO:] += np.einsum("gcd,gicjd->gij", DB + _t(DB), H_in[:, :, :q, :, :q])
    return T, np.ascontiguousarray(Td.transpose(0, 2, 1, 3)), H, logdet, ld_g, ld_h


def nested_evaluate(design: Design, beta: np.ndarray | None, theta: np.ndarray, *, reml: bool) -> "Inference":  # noqa: F821
    """:func:`hlmbridge.inference.stata_parity.evaluate` for a nested design (same meaning,
    same result type) by block-recursive elimination; see the module docstring."""
    from hlmbridge.inference.stata_parity import assemble_inference

    tr = _tree_of(design)
    G, Gd, Gdd, logdet, lg, lh = _recursion_at(design, tr, np.asarray(theta, dtype=float))
    return _closed_forms(design, tr.b0, beta, G, Gd, Gdd, logdet, lg, lh, reml=reml,
                         finish=assemble_inference)


def nested_derivatives(design: Design, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the df methods (:mod:`hlmbridge.inference.df_methods`) need of ``V`` at ``theta``,
    by the same recursion as :func:`nested_evaluate`: ``X'V^-1 X`` (p, p); ``C_k = X'V^-1 V_k
    V^-1 X`` (K, p, p); the symmetric part of ``Q_kl = X'V^-1 V_k V^-1 V_l V^-1 X``, i.e.
    ``(Q_kl + Q_lk) / 2`` (K, K, p, p: ``Q_lk = Q_kl'``, and every use of ``Q`` in the df methods
    contracts it with a symmetric matrix); and ``tr(V^-1 V_k V^-1 V_l)`` (K, K). They are
    ``-dG_k``, ``d2G_kl / 2`` and ``-d2 log|V|_kl`` on the ``X`` block of ``G``.

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> rng = np.random.default_rng(3)
    >>> cls = rng.integers(0, 60, 400)
    >>> df = pd.DataFrame({"y": rng.normal(size=400), "s": cls // 6, "c": cls})
    >>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | s/c)"), df)
    >>> XtVX, C, Q, S = nested_derivatives(d, np.array([0.5, 1.0, 1.0]))
    >>> C.shape, Q.shape, S.shape
    ((3, 1, 1), (3, 3, 1, 1), (3, 3))
    """
    tr = _tree_of(design)
    G, Gd, Gdd, _, _, lh = _recursion_at(design, tr, np.asarray(theta, dtype=float))
    p = design.n_fixed
    return G[:p, :p], -Gd[:, :p, :p], 0.5 * Gdd[:, :, :p, :p], -lh


def _tree_of(design: Design) -> _Tree:
    tr = _tree(design)
    if tr is None:
        raise FitError("the design's levels are not nested in one another")
    return tr


@per_design
def _last_recursion(design: Design) -> dict[bytes, tuple[object, ...]]:
    return {}  # theta -> _recursion's result, the last theta only


def _recursion_at(design: Design, tr: _Tree, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float,
                                                                        np.ndarray, np.ndarray]:
    """:func:`_recursion`, kept for the last ``theta`` of a design: after a fit the likelihood's
    information (Satterthwaite's Hessian) and the df methods' derivatives are asked at the same
    estimates, one recursion for both. The arrays are read-only (shared)."""
    memo = _last_recursion(design)
    key = theta.tobytes()
    if key not in memo:
        out = _recursion(tr, theta)
        for x in out:
            if isinstance(x, np.ndarray):
                x.flags.writeable = False
        memo.clear()
        memo[key] = out
    return memo[key]  # type: ignore[return-value]


def _recursion(tr: _Tree, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray,
                                                      np.ndarray]:
    """``G = [X y]'V^-1[X y]`` (y less ``X b0``), ``log|V|`` and their first and second
    derivatives in ``theta``: ``(G, Gd, Gdd, logdet, lg, lh)``."""
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    Kr = len(theta) - 1
    K = Kr + 1
    L = len(tr.q)
    S = tr.S_leaf / s2
    a = S.shape[1]
    active: list[int] = []  # the parameters S depends on (deeper levels'), in dS's order
    dS = ddS = np.zeros(0)  # S's first and (halved) second derivatives in them
    ld = 0.0
    ld_g = np.zeros(Kr)
    ld_h = np.zeros((Kr, Kr))
    for t in range(L - 1, -1, -1):
        q = tr.q[t]
        own = [k for k, _ in tr.params[t]]
        idx = own + active
        A = len(idx)
        P = np.zeros((A, q, q))
        Dl = np.zeros((q, q))
        for i, (k, pat) in enumerate(tr.params[t]):
            P[i] = pat
            Dl += theta[k] * pat
        g = S.shape[0]
        r = a - q
        up = tr.up[t]  # groups of the level above (one row for the outermost) x this level's
        S_up = np.zeros((up.shape[0], r * r))  # type: ignore[attr-defined]
        Td_up = np.zeros((up.shape[0], r * A * r))  # type: ignore[attr-defined]
        H_up = np.zeros((up.shape[0], A * r * A * r))  # type: ignore[attr-defined]
        # In chunks of groups, so that no temporary exceeds about _CHUNK numbers.
        step = max(1, _CHUNK // (A * a) ** 2)
        for lo in range(0, g, step):
            sl = slice(lo, min(g, lo + step))
            m = sl.stop - lo
            if active:
                T, Td, H, lg, lg_g, lg_h = _eliminate(S[sl], dS[sl], ddS[sl], q, P, Dl)
            else:
                T, Td, H, lg, lg_g, lg_h = _eliminate_leaves(S[sl], q, P, Dl)
            ld += float(lg.sum())
            ix = np.array(idx, dtype=np.int64)
            ld_g[ix] += lg_g.sum(axis=0)
            ld_h[np.ix_(ix, ix)] += lg_h.sum(axis=0)
            part = up[:, sl] if (lo, m) != (0, g) else up  # type: ignore[index]
            S_up += part @ T.reshape(m, -1)
            Td_up += part @ Td.reshape(m, -1)
            H_up += part @ H.reshape(m, -1)
        active = idx
        a = r
        S = S_up.reshape(-1, a, a)
        dS = Td_up.reshape(-1, a, A, a).transpose(0, 2, 1, 3)
        ddS = H_up.reshape(-1, A, a, A, a)  # half of the second derivatives
    S, dS = S[0], dS[0]
    ddS = (ddS[0] + ddS[0].transpose(0, 3, 2, 1)).transpose(0, 2, 1, 3)
    # Derivatives in the order of theta; the residual variance's from homogeneity.
    m = S.shape[0]
    G = S
    Gd = np.zeros((K, m, m))
    Gdd = np.zeros((K, K, m, m))
    ix = np.array(active, dtype=np.int64)
    Gd[ix] = dS
    Gdd[np.ix_(ix, ix)] = ddS
    th = theta[:Kr]
    Gd[Kr] = -(G + np.tensordot(th, Gd[:Kr], axes=1)) / s2
    Gdd[Kr, :Kr] = -(2 * Gd[:Kr] + np.tensordot(th, Gdd[:Kr, :Kr], axes=1)) / s2
    Gdd[:Kr, Kr] = Gdd[Kr, :Kr]
    Gdd[Kr, Kr] = -(2 * Gd[Kr] + np.tensordot(th, Gdd[:Kr, Kr], axes=1)) / s2
    n = tr.n_total
    logdet = ld + n * np.log(s2)
    lg = np.empty(K)
    lh = np.empty((K, K))
    lg[:Kr] = ld_g
    lh[:Kr, :Kr] = ld_h
    lg[Kr] = (n - th @ ld_g) / s2
    lh[Kr, :Kr] = lh[:Kr, Kr] = -(ld_g + th @ ld_h) / s2
    lh[Kr, Kr] = -(lg[Kr] + th @ lh[:Kr, Kr]) / s2
    return G, Gd, Gdd, logdet, lg, lh


def _upward(tr: _Tree, theta: np.ndarray, s2: float, *, top: bool) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                       float, np.ndarray | None]:
    """The recursion of :func:`nested_evaluate` without derivatives: each tree level's ``S``
    (g, a, a) and ``W`` (g, q, q), ``log|V| - n log s2`` (the sum of the ``log|I + N D|``) and,
    with ``top``, ``G = [X y]'V^-1[X y]`` (y less ``X b0``; else None)."""
    L = len(tr.q)
    S_of: list[np.ndarray] = [np.zeros(0)] * L
    W_of: list[np.ndarray] = [np.zeros(0)] * L
    logdet = 0.0
    S = tr.S_leaf / s2
    for t in range(L - 1, -1, -1):
        q = tr.q[t]
        Dl = np.zeros((q, q))
        for k, pat in tr.params[t]:
            Dl += theta[k] * pat
        Bm, ld = _inv_logdet(np.eye(q) + _mm(S[:, :q, :q], Dl))  # B = (I + N D)^-1
        logdet += float(ld.sum())
        W = _mm(Dl, Bm)
        W = 0.5 * (W + _t(W))
        S_of[t], W_of[t] = S, W
        if t or top:
            Y = S[:, :q, q:]
            T = S[:, q:, q:] - _mm(_t(Y), _mm(W, Y))
            r = T.shape[-1]
            S = np.asarray(tr.up[t] @ T.reshape(T.shape[0], r * r)).reshape(-1, r, r)  # type: ignore[operator]
    return S_of, W_of, logdet, S[0] if top else None


def nested_ml_parts(design: Design, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The ML log likelihood at the GLS fixed effects for ``theta``, the GLS fixed effects and
    their covariance, by :func:`_upward` alone (no derivatives): what the profile likelihood
    asks at each of its points (:mod:`hlmbridge.inference.profile`).

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> rng = np.random.default_rng(3)
    >>> cls = rng.integers(0, 60, 400)
    >>> df = pd.DataFrame({"y": rng.normal(size=400), "s": cls // 6, "c": cls})
    >>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | s/c)", reml=False), df)
    >>> ll, b, v = nested_ml_parts(d, np.array([0.5, 1.0, 1.0]))
    >>> bool(abs(ll - nested_evaluate(d, None, np.array([0.5, 1.0, 1.0]), reml=False).loglik) < 1e-9)
    True
    """
    tr = _tree_of(design)
    theta = np.asarray(theta, dtype=float)
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    _, _, logdet, G = _upward(tr, theta, s2, top=True)
    assert G is not None
    p = design.n_fixed
    try:
        vcov = np.linalg.inv(G[:p, :p])
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    b = vcov @ G[:p, p]
    quad = float(G[p, p] - G[:p, p] @ b)
    ll = -0.5 * (tr.n_total * np.log(2 * np.pi) + logdet + tr.n_total * np.log(s2) + quad)
    if design.weights is not None:
        ll += 0.5 * float(np.sum(np.log(design.weights)))
    return ll, b + tr.b0, vcov


def nested_conditional_effects(design: Design, beta: np.ndarray,
                               theta: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The conditional modes (BLUPs) and conditional covariances of every level's random
    effects given y at ``beta`` and ``theta`` (what
    :func:`hlmbridge.results.random_effects.conditional_effects` computes densely), per design
    level: ``(modes (groups, q), cond_cov (groups, q, q))`` in group-code order.

    The upward pass of :func:`nested_evaluate` without derivatives keeps each group's ``S``
    (its rows' cross-products with its descendants integrated out) and ``W = D B``; then a
    downward pass, outermost level first. Given its ancestors' effects ``u_a`` (the chain
    parent, grandparent, ...), a group's effects depend on its own rows only: they are normal
    with covariance ``W`` and mean ``W Y'[-u_a; -beta; 1] = m - K u_a`` (``Y`` the group's
    own-by-rest block of ``S``, ``K = W Y_a``, the part of ``Y`` on the ancestors' columns). So,
    given y alone, the mode is ``m - K E(u_a | y)`` and the covariance
    ``W + K Cov(u_a | y) K'``, with ``Cov(u_a | y)`` carried down the chain (each group's joint
    covariance with its ancestors: ``-K Cov(u_a | y)`` off the diagonal). A group at depth
    ``t`` carries a matrix of width ``q_0 + ... + q_t``; nothing grows with the number of groups
    but their count.

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> df = pd.DataFrame({"y": [1.0, 2, 4, 5, 7, 9], "s": list("aaaabb"), "c": list("xxyyzz")})
    >>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | s/c)"), df)
    >>> [m.shape for m, _ in nested_conditional_effects(d, np.array([4.5]), np.array([1.0, 1.0, 1.0]))]
    [(2, 1), (3, 1)]
    """
    tr = _tree_of(design)
    theta = np.asarray(theta, dtype=float)
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    L = len(tr.q)
    S_of, W_of, _, _ = _upward(tr, theta, s2, top=False)
    # Downward: modes and covariances given y, with each group's chain of ancestors.
    cb = np.append(-(np.asarray(beta, dtype=float) - tr.b0), 1.0)  # [X y] c = y - X beta
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * L
    mu_a = Sig_a = np.zeros(0)
    ca = 0  # width of the chain of ancestors
    for t in range(L):
        q, S, W = tr.q[t], S_of[t], W_of[t]
        Y = S[:, :q, q:]
        mode = (W @ (Y[:, :, ca:] @ cb)[:, :, None])[:, :, 0]
        if t == 0:
            cov = W
        else:
            K = W @ Y[:, :, :ca]
            par = tr.parent[t]
            mu, Sig = mu_a[par], Sig_a[par]
            mode = mode - (K @ mu[:, :, None])[:, :, 0]
            KS = K @ Sig
            cov = W + KS @ _t(K)
            cov = 0.5 * (cov + _t(cov))
        out[t] = (mode, cov)
        if t < L - 1:  # the chain [own; ancestors] for the next level
            g = mode.shape[0]
            chain = np.empty((g, q + ca, q + ca))
            chain[:, :q, :q] = cov
            if t:
                chain[:, q:, q:] = Sig
                chain[:, :q, q:] = -KS
                chain[:, q:, :q] = -_t(KS)
                mu_a = np.concatenate([mode, mu], axis=1)
            else:
                mu_a = mode
            Sig_a = chain
            ca += q
    result: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * L
    for t, li in enumerate(tr.order):
        result[li] = out[t]
    return tuple(result)


def _closed_forms(design: Design, b0: np.ndarray, beta: np.ndarray | None, G: np.ndarray, Gd: np.ndarray,
                  Gdd: np.ndarray, logdet: float, lg: np.ndarray, lh: np.ndarray, *, reml: bool,
                  finish: object) -> "Inference":  # noqa: F821
    """The likelihood, score and information from ``G = [X y]'V^-1[X y]``, ``log|V|`` and their
    first and second derivatives (see the module docstring)."""
    n = design.nobs
    p = design.n_fixed
    XtVX, XtVy = G[:p, :p], G[:p, p]
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    beta_gls0 = fixed_vcov @ XtVy
    beta_gls = beta_gls0 + b0
    b = beta_gls0 if reml or beta is None else np.asarray(beta, dtype=float) - b0
    c = np.empty(p + 1)
    c[:p], c[p] = -b, 1.0
    quad = float(c @ G @ c)
    S = -lh  # tr(V^-1 V_k V^-1 V_l)
    tr_v = lg.copy()  # tr(V^-1 V_k)
    Gdc = Gd @ c
    quad_k = -(Gdc @ c)  # r'V^-1 V_k V^-1 r
    Xb = -Gdc[:, :p]  # X'V^-1 V_k V^-1 r
    Bq = 0.5 * ((Gdd @ c) @ c)  # r'V^-1 V_k V^-1 V_l V^-1 r
    reml_terms = None
    if reml:
        AC = fixed_vcov @ -Gd[:, :p, :p]  # Av X'V^-1 V_k V^-1 X
        reml_terms = AC, 0.5 * np.einsum("ij,klji->kl", fixed_vcov, Gdd[:, :, :p, :p])  # and tr(Av T_kl)
    return finish(design, reml_terms, S=S, Bq=Bq, Xb=Xb, tr_v=tr_v, quad_k=quad_k, quad=quad,  # type: ignore[operator]
                  logdet=logdet, XtVX=XtVX, fixed_vcov=fixed_vcov, beta_gls=beta_gls)
