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
import weakref

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.errors import FitError

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


def variance_parameters(design: Design) -> tuple[VarianceParam, ...]:
    """The free variance parameters in Stata's display order, the residual last.

    Per level: a variance for every random term (slopes in order, the intercept last, as
    Stata lists them), then the covariances of the pairs in one correlated block; Stata's
    identity and exchangeable structures share one variance (and one covariance).
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
    d = np.diag(information)
    if not np.all(np.isfinite(information)) or np.any(d <= 0):
        return False
    s = 1.0 / np.sqrt(d)
    return bool(np.linalg.eigvalsh(information * s[:, None] * s[None, :]).min() < 1e-10)


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
    group_place: tuple[tuple[np.ndarray, np.ndarray, int], ...] = ()


_BLOCKS: weakref.WeakKeyDictionary[Design, _Blocks] = weakref.WeakKeyDictionary()
# A crossed design with at most this many random effects keeps the dense closed forms (one
# block): below it they cost under about 10 ms, less than the sparse path's fixed cost.
_DENSE_CROSSED_MAX = 160


def _make_blocks(design: Design) -> _Blocks:
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
    return _Blocks(nb, M, ZX, XX, Zy, Xy, yy, patterns, b0, tuple(group_place))


def _blocks(design: Design) -> _Blocks:
    """The cross-products of a design, computed once per design."""
    blocks = _BLOCKS.get(design)
    if blocks is None:
        blocks = _BLOCKS[design] = _make_blocks(design)
    return blocks


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


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
    random-effects system instead of one dense block as wide as all its effects).
    """
    reml = design.spec.reml if reml is None else reml
    if uses_sparse_algebra(design):
        from hlmbridge.inference.sparse import sparse_evaluate

        return sparse_evaluate(design, beta, theta, reml=reml)
    return _dense_evaluate(design, beta, theta, reml=reml)


def uses_sparse_algebra(design: Design) -> bool:
    """Whether :func:`evaluate` takes the sparse path (a crossed design with more than
    ``_DENSE_CROSSED_MAX`` random effects), where one evaluation costs a dozen sparse
    factorizations (tens of deviance evaluations of lmer's)."""
    return any(not ld.nested for ld in design.levels[1:]) and \
        sum(ld.n_groups * ld.Z.shape[1] for ld in design.levels) > _DENSE_CROSSED_MAX


def woodbury(bl: _Blocks, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(s2, D, A, W)`` of the block form of ``V``: ``D`` the random-effects covariance of
    each block, ``A = s2 I + Z'Z D`` and ``W = D A^-1``, so ``V^-1 = (I - Z W Z') / s2``.
    Shared by the likelihood, the df methods and the random effects."""
    theta = np.asarray(theta, dtype=float)
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    D = np.einsum("k,kbij->bij", theta[:-1], bl.patterns)
    A = s2 * np.eye(bl.M.shape[-1]) + bl.M @ D
    W = _t(np.linalg.solve(_t(A), D))  # D A^-1 (symmetric)
    return s2, D, A, W


def _dense_evaluate(design: Design, beta: np.ndarray | None, theta: np.ndarray, *, reml: bool) -> Inference:
    """The closed forms of :func:`evaluate` on per-block cross-products (dense blocks)."""
    bl = _blocks(design)
    n = design.nobs
    p = design.n_fixed
    theta = np.asarray(theta, dtype=float)
    s2, D, A, W = woodbury(bl, theta)
    Kr = len(theta) - 1
    K = Kr + 1
    E = bl.patterns
    M, ZX, XX = bl.M, bl.ZX, bl.XX
    XZ = _t(ZX)
    Q = M.shape[-1]
    sign, logdetA = np.linalg.slogdet(A)
    if np.any(sign <= 0):
        raise FitError("the marginal covariance is not positive definite at these estimates")
    logdet = float(np.sum(bl.n * np.log(s2) + logdetA - Q * np.log(s2)))

    XtVX = (XX - XZ @ W @ ZX).sum(axis=0) / s2
    XtVy = (bl.Xy - np.einsum("bpq,bq->bp", XZ @ W, bl.Zy)).sum(axis=0) / s2
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    beta_gls0 = fixed_vcov @ XtVy  # GLS estimate for y - X b0
    beta_gls = beta_gls0 + bl.b0
    b = beta_gls0 if reml or beta is None else np.asarray(beta, dtype=float) - bl.b0
    Zr = bl.Zy - ZX @ b
    Xr = bl.Xy - XX @ b
    rr = bl.yy - 2 * bl.Xy @ b + np.einsum("p,bpq,q->b", b, XX, b)

    def quad_form(Wm: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.einsum("bi,bij,bj->b", a, Wm, c)

    quad = float(np.sum(rr - quad_form(W, Zr, Zr)) / s2)

    MW = M @ W
    W2 = 2 * W - W @ MW
    W3 = W + W2 - W2 @ MW
    Pzz = (M - MW @ M) / s2
    Pzx = (ZX - MW @ ZX) / s2
    u = (Zr - np.einsum("bij,bj->bi", MW, Zr)) / s2
    MW2 = M @ W2
    Szz = (M - MW2 @ M) / s2**2
    Szx = (ZX - MW2 @ ZX) / s2**2
    Sxx = (XX - XZ @ W2 @ ZX) / s2**2
    su = (Zr - np.einsum("bij,bj->bi", MW2, Zr)) / s2**2
    sx = (Xr - np.einsum("bpq,bq->bp", XZ @ W2, Zr)) / s2**2
    trV2 = float(np.sum(bl.n - np.einsum("bij,bji->b", W2, M)) / s2**2)
    wVw = float(np.sum(rr - quad_form(W3, Zr, Zr)) / s2**3)
    Txx3 = (XX - XZ @ W3 @ ZX).sum(axis=0) / s2**3

    PE = [Pzz @ E[k] for k in range(Kr)]
    e = [np.einsum("bij,bj->bi", E[k], u) for k in range(Kr)]
    PzxT = _t(Pzx)
    S = np.zeros((K, K))
    Bq = np.zeros((K, K))
    Xb = np.zeros((K, p))
    for k in range(Kr):
        for l in range(k, Kr):
            S[k, l] = S[l, k] = float(np.sum(PE[k] * _t(PE[l])))
            Bq[k, l] = Bq[l, k] = float(np.einsum("bi,bij,bj->", e[k], Pzz, e[l]))
        S[k, Kr] = S[Kr, k] = float(np.sum(E[k] * Szz))
        Bq[k, Kr] = Bq[Kr, k] = float(np.sum(e[k] * su))
        Xb[k] = np.einsum("bpq,bq->p", PzxT, e[k])
    S[Kr, Kr] = trV2
    Bq[Kr, Kr] = wVw
    Xb[Kr] = sx.sum(axis=0)
    # Score: -tr(V^-1 V_k) / 2 + r'V^-1 V_k V^-1 r / 2 (REML: P for V^-1 in the trace).
    tr_v = np.array([float(np.sum(E[k] * Pzz)) for k in range(Kr)] +
                    [float(np.sum(bl.n - np.einsum("bij,bji->b", W, M)) / s2)])
    quad_k = np.array([float(np.sum(e[k] * u)) for k in range(Kr)] +
                      [float(np.sum(rr - quad_form(W2, Zr, Zr)) / s2**2)])

    if reml:
        C = np.zeros((K, p, p))
        T = np.zeros((K, K, p, p))
        EPzx = [E[k] @ Pzx for k in range(Kr)]
        for k in range(Kr):
            C[k] = (PzxT @ EPzx[k]).sum(axis=0)
            XE = PzxT @ E[k]  # per block: Pzx' E_k, shared by the row k of T
            XEP = XE @ Pzz
            for l in range(Kr):
                T[k, l] = (XEP @ EPzx[l]).sum(axis=0)
            T[k, Kr] = (XE @ Szx).sum(axis=0)
            T[Kr, k] = T[k, Kr].T
        C[Kr] = Sxx.sum(axis=0)
        T[Kr, Kr] = Txx3
        Av = fixed_vcov
        AC = Av @ C  # (K, p, p): Av C_k
        tr_v = tr_v - np.einsum("kii->k", AC)
        # All K x K entries at once: tr(Av T_kl), tr(Av C_k Av C_l) and Xb_k' Av Xb_l.
        tr_pp = S - 2.0 * np.einsum("ij,klji->kl", Av, T) + np.einsum("kij,lji->kl", AC, AC)
        info = -0.5 * tr_pp + (Bq - Xb @ Av @ Xb.T)
        _, logdet_x = np.linalg.slogdet(XtVX)
        loglik = -0.5 * ((n - p) * np.log(2 * np.pi) + logdet + logdet_x + quad)
    else:
        info = -0.5 * S + Bq - Xb @ fixed_vcov @ Xb.T
        loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    score = 0.5 * (quad_k - tr_v)
    return finish_inference(design, loglik, beta_gls, fixed_vcov, info, score)


def linear_loglik(design: Design, *, reml: bool | None = None) -> float:
    """Log likelihood of the linear regression of y on X (Stata's ``e(ll_c)``)."""
    reml = design.spec.reml if reml is None else reml
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
