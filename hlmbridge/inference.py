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
>>> from hlmbridge.spec import ModelSpec, RandomLevel
>>> from hlmbridge.design import build_design
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
import scipy.linalg as sla

from hlmbridge.design import Design
from hlmbridge.errors import FitError

__all__ = ["Inference", "VarianceParam", "evaluate", "linear_loglik", "theta_from_matrices", "variance_parameters"]

DENSE_LIMIT = 6000  # crossed designs are evaluated as one dense block up to this many rows


@dataclass(frozen=True)
class VarianceParam:
    """One free parameter of the random part, on the variance/covariance scale.

    ``level`` indexes ``design.levels`` (None for the residual). ``pattern`` is
    dG/dtheta in the level's lme4 term order.
    """

    level: int | None
    kind: str  # "var" or "cov"
    stata_term: str
    term1: str
    term2: str | None
    pattern: np.ndarray

    @property
    def group(self) -> str:
        """The level's grouping variable (lme4 key for nested levels), or ``Residual``."""
        return "Residual" if self.level is None else self.term_group

    term_group: str = ""


def variance_parameters(design: Design) -> tuple[VarianceParam, ...]:
    """The free variance parameters in Stata's display order, the residual last."""
    out: list[VarianceParam] = []
    for li, ld in enumerate(design.levels):
        lv = ld.level
        lme4_terms = list(lv.lme4_terms)
        stata_terms = list(lv.stata_terms)
        q = len(lme4_terms)
        pos = {s: lme4_terms.index("(Intercept)" if s == "_cons" else s) for s in stata_terms}

        def unit(i: int, j: int) -> np.ndarray:
            e = np.zeros((q, q))
            e[i, j] = e[j, i] = 1.0
            return e

        def add(kind: str, label: str, t1: str, t2: str | None, pattern: np.ndarray) -> None:
            out.append(VarianceParam(li, kind, label, t1, t2, pattern, ld.key))

        if lv.cov in ("unstructured", "independent") or q == 1:
            for s in stata_terms:
                add("var", f"var({s})", lme4_terms[pos[s]], None, unit(pos[s], pos[s]))
            if lv.cov == "unstructured":
                for a in range(q):
                    for b in range(a + 1, q):
                        sa, sb = stata_terms[a], stata_terms[b]
                        add("cov", f"cov({sa},{sb})", lme4_terms[pos[sa]], lme4_terms[pos[sb]], unit(pos[sa], pos[sb]))
        else:  # identity or exchangeable over several terms: shared parameters
            joined = " ".join(stata_terms)
            add("var", f"var({joined})", lme4_terms[0], None, np.eye(q))
            if lv.cov == "exchangeable":
                add("cov", f"cov({joined})", lme4_terms[0], lme4_terms[1], np.ones((q, q)) - np.eye(q))
    out.append(VarianceParam(None, "var", "var(Residual)", "Residual", None, np.ones((1, 1)), "Residual"))
    return tuple(out)


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
    """What the observed information says at one set of estimates."""

    loglik: float
    beta_gls: np.ndarray
    fixed_vcov: np.ndarray
    random_vcov: np.ndarray
    information: np.ndarray


@dataclass(frozen=True)
class _Block:
    rows: np.ndarray
    Z: np.ndarray  # all random columns of all levels for these rows
    owner: tuple[tuple[int, int], ...]  # per column block: (level, width) in order


_BLOCKS: weakref.WeakKeyDictionary[Design, tuple[_Block, ...]] = weakref.WeakKeyDictionary()


def _make_blocks(design: Design) -> tuple[_Block, ...]:
    levels = design.levels
    crossed = any(not ld.level.nested for ld in levels[1:])
    if crossed:
        if design.nobs > DENSE_LIMIT:
            raise FitError(
                f"Stata-parity inference for crossed random effects is computed densely and is limited "
                f"to {DENSE_LIMIT} observations (this model has {design.nobs})"
            )
        groups = [np.arange(design.nobs)]
    else:
        order = np.argsort(levels[0].codes, kind="stable")
        bounds = np.flatnonzero(np.diff(levels[0].codes[order])) + 1
        groups = np.split(order, bounds)
    blocks = []
    for rows in groups:
        cols = []
        owner = []
        for li, ld in enumerate(levels):
            codes = ld.codes[rows]
            uniq = np.unique(codes)
            for u in uniq:
                ind = (codes == u).astype(float)[:, None]
                cols.append(ld.Z[rows] * ind)
                owner.append((li, ld.Z.shape[1]))
        blocks.append(_Block(rows, np.hstack(cols), tuple(owner)))
    return tuple(blocks)


def _blocks(design: Design) -> tuple[_Block, ...]:
    """Per-outermost-group row blocks of a design, computed once per design."""
    blocks = _BLOCKS.get(design)
    if blocks is None:
        blocks = _BLOCKS[design] = _make_blocks(design)
    return blocks


def evaluate(design: Design, beta: np.ndarray, theta: np.ndarray, *, reml: bool | None = None) -> Inference:
    """Log likelihood and Stata's covariance matrices at ``beta`` and ``theta``.

    ``theta`` is in :func:`variance_parameters` order. For ML the log likelihood is
    evaluated at ``beta``; for REML (``reml`` defaults to the spec's method) it is the
    restricted log likelihood on lme4's scale, which depends on ``theta`` only.
    """
    reml = design.spec.reml if reml is None else reml
    params = variance_parameters(design)
    K = len(params)
    p = design.n_fixed
    n = design.nobs
    beta = np.asarray(beta, dtype=float)
    theta = np.asarray(theta, dtype=float)
    sigma2 = theta[-1]
    G = []
    for li, ld in enumerate(design.levels):
        q = ld.Z.shape[1]
        g = np.zeros((q, q))
        for k, prm in enumerate(params):
            if prm.level == li:
                g += theta[k] * prm.pattern
        G.append(g)

    blocks = _blocks(design)
    XtVX = np.zeros((p, p))
    XtVy = np.zeros(p)
    logdet = 0.0
    per_block = []
    for b in blocks:
        Zb = b.Z
        D = sla.block_diag(*[G[li] for li, _ in b.owner]) if b.owner else np.zeros((0, 0))
        V = Zb @ D @ Zb.T
        V[np.diag_indices_from(V)] += sigma2
        try:
            cf = sla.cho_factor(V, lower=True, check_finite=False)
        except np.linalg.LinAlgError as exc:
            raise FitError(f"the marginal covariance is not positive definite at these estimates: {exc}") from exc
        logdet += 2.0 * np.log(np.diag(cf[0])).sum()
        Xb = design.X[b.rows]
        yb = design.y[b.rows]
        ViX = sla.cho_solve(cf, Xb, check_finite=False)
        XtVX += Xb.T @ ViX
        XtVy += ViX.T @ yb
        per_block.append((b, D, cf, ViX))
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    beta_gls = fixed_vcov @ XtVy
    beta_used = beta_gls if reml else beta

    quad = 0.0
    S = np.zeros((K, K))  # sum tr(Vi Vk Vi Vl)
    Bq = np.zeros((K, K))  # sum (Vk w)' Vi (Vl w)
    Xb_k = np.zeros((K, p))  # sum X' Vi Vk w
    C = np.zeros((K, p, p))  # sum Q' Vk Q   (REML)
    T = np.zeros((K, K, p, p))  # sum (Vk Q)' Vi (Vl Q)   (REML)
    for b, D, cf, ViX in per_block:
        Zb = b.Z
        r = design.y[b.rows] - design.X[b.rows] @ beta_used
        w = sla.cho_solve(cf, r, check_finite=False)
        quad += r @ w
        Vk = []
        col = 0
        slices = []
        for li, width in b.owner:
            slices.append((li, col, col + width))
            col += width
        for prm in params:
            if prm.level is None:
                Vk.append(None)  # identity
                continue
            dD = np.zeros_like(D)
            for li, a, e in slices:
                if li == prm.level:
                    dD[a:e, a:e] = prm.pattern
            Vk.append(Zb @ dD @ Zb.T)
        nb = len(b.rows)
        ident = np.eye(nb)
        Vk = [ident if m is None else m for m in Vk]
        Vi = sla.cho_solve(cf, ident, check_finite=False)
        A = [Vi @ m for m in Vk]
        bk = np.array([m @ w for m in Vk])  # K x nb
        ck = bk @ Vi  # rows: Vi Vk w  (Vi symmetric)
        Xb = design.X[b.rows]
        for k in range(K):
            for l in range(k, K):
                S[k, l] += np.sum(A[k] * A[l].T)
        Bq += bk @ ck.T
        Xb_k += ck @ Xb
        if reml:
            H = [m @ ViX for m in Vk]  # Vk Q
            for k in range(K):
                C[k] += ViX.T @ H[k]
                ViH = Vi @ H[k]
                for l in range(K):
                    T[k, l] += H[l].T @ ViH
    S = np.triu(S) + np.triu(S, 1).T
    if reml:
        info = np.empty((K, K))
        Av = fixed_vcov
        for k in range(K):
            for l in range(K):
                tr_pp = S[k, l] - 2.0 * np.trace(Av @ T[k, l]) + np.trace(Av @ C[k] @ Av @ C[l])
                quad_p = Bq[k, l] - Xb_k[k] @ Av @ Xb_k[l]
                info[k, l] = -0.5 * tr_pp + quad_p
        sign, logdet_x = np.linalg.slogdet(XtVX)
        loglik = -0.5 * ((n - p) * np.log(2 * np.pi) + logdet + logdet_x + quad)
    else:
        full = -0.5 * S + Bq
        info = full - Xb_k @ fixed_vcov @ Xb_k.T
        loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    info = 0.5 * (info + info.T)
    try:
        random_vcov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        random_vcov = np.full((K, K), np.nan)
    return Inference(float(loglik), beta_gls, fixed_vcov, random_vcov, info)


def linear_loglik(design: Design, *, reml: bool | None = None) -> float:
    """Log likelihood of the linear regression of y on X (Stata's ``e(ll_c)``)."""
    reml = design.spec.reml if reml is None else reml
    X, y = design.X, design.y
    n, p = X.shape
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(np.sum((y - X @ coef) ** 2))
    if not reml:
        return -0.5 * n * (np.log(2 * np.pi * rss / n) + 1.0)
    s2 = rss / (n - p)
    _, logdet_x = np.linalg.slogdet(X.T @ X)
    return -0.5 * ((n - p) * (np.log(2 * np.pi * s2) + 1.0) + logdet_x)
