"""Stata-parity inference for crossed and partially crossed designs from sparse algebra.

A crossed design (``(1|s) + (1|d)``) has no blocks to split the sample into, so the dense
path of :mod:`hlmbridge.inference.stata_parity` would work on one block as wide as all the
random effects together. Here the random-effects system is sparse instead, as in lme4:
with ``D`` the random-effects covariance (block diagonal), ``D = L L'`` and ``s2`` the
residual variance,

    V = s2 (I + Z L L' Z' / s2),   H = I + L' Z'Z L / s2   (q by q, sparse, SPD)
    V^-1 x = (x - Z L H^-1 L' Z' x / s2) / s2,   log|V| = n log s2 + log|H|,

and ``H`` is factored once by SuperLU (:func:`scipy.sparse.linalg.splu`, a fill-reducing
ordering of ``H + H'``, no pivoting: the sparse Cholesky of an SPD matrix). Every quantity
is then exact: the log likelihood (ML and REML), the GLS coefficients, ``(X'V^-1X)^-1`` and
every quadratic-form term of the observed information. The only term that would need the
whole dense ``Z'V^-1Z`` is the trace ``tr(V^-1 V_k V^-1 V_l)`` (REML: ``tr(P V_k P V_l)``);
it is minus the Hessian of ``log|V|`` (REML: ``log|V| + log|X'V^-1X|``), and that Hessian
is taken by central differences with Richardson extrapolation of the exact sparse log
determinant, in the relative variances ``D / s2`` (the residual variance enters in closed
form). tests/test_sparse_inference.py checks the result against the dense closed form.

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
import weakref

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.errors import FitError

__all__ = ["is_crossed", "sparse_evaluate"]


def is_crossed(design: Design) -> bool:
    """Whether some level's groups are not nested in those of the first level."""
    return any(not ld.nested for ld in design.levels[1:])


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


_CACHE: weakref.WeakKeyDictionary[Design, _Sparse] = weakref.WeakKeyDictionary()


def _prepare(design: Design) -> _Sparse:
    cached = _CACHE.get(design)
    if cached is not None:
        return cached
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
    out = _Sparse(Z, ZT, M, X, y, b0, np.asarray(ZT @ X), X.T @ X, tuple(level_cols), patterns, {})
    _CACHE[design] = out
    return out


def _level_matrices(sd: _Sparse, rho: np.ndarray) -> list[np.ndarray]:
    """Each level's q_l x q_l covariance (relative to the residual variance) at ``rho``."""
    mats = [np.zeros((ql, ql)) for _, _, ql in sd.level_cols]
    for value, (level, pattern) in zip(rho, sd.patterns, strict=True):
        mats[level] = mats[level] + value * pattern  # type: ignore[index]
    return mats


def _block_diag(sd: _Sparse, mats: list[np.ndarray]) -> object:
    """The q x q block-diagonal matrix with ``mats[l]`` repeated over the groups of level l."""
    import scipy.sparse as sp

    in_column_order = sorted(zip(sd.level_cols, mats, strict=True), key=lambda lm: lm[0][0])
    return sp.block_diag([sp.kron(sp.identity(g, format="csr"), m, format="csr") for (_, g, _), m in
                          in_column_order], format="csc")


class _Factor:
    """``V = s2 (I + Z D Z')`` at relative covariances ``rho``: log|I + Z D Z'| and solves."""

    def __init__(self, sd: _Sparse, rho: np.ndarray) -> None:
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        self.sd = sd
        mats = _level_matrices(sd, rho)
        psd = True
        roots = []
        for m in mats:
            w, vec = np.linalg.eigh(m)
            scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
            if w.size and w.min() < -1e-12 * scale:
                psd = False
            roots.append(vec * np.sqrt(np.clip(w, 0.0, None))[None, :])
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
    """:func:`hlmbridge.inference.stata_parity.evaluate` for a crossed design (same meaning,
    same result type), from the sparse random-effects system."""
    from hlmbridge.inference.stata_parity import finish_inference

    sd = _prepare(design)
    n, p = sd.X.shape
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    rho = np.asarray(theta[:-1], dtype=float) / s2
    Kr = len(rho)
    K = Kr + 1
    f = _Factor(sd, rho)
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
    if Kr:
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
