"""PROPOSAL (for the owner of hlmbridge/inference.py): a Woodbury/sufficient-statistics ``evaluate``.

Not imported by hlmbridge. ``evaluate_fast(design, beta, theta, *, reml=None)`` returns the
same :class:`hlmbridge.inference.Inference` as ``hlmbridge.inference.evaluate`` for designs
with ONE random level (every seed model, and the 1M-row benchmark), and delegates to
``evaluate`` otherwise. Integration: at the top of ``inference.evaluate`` add
``if len(design.levels) == 1: return _evaluate_one_level(...)`` with the body below.

Why: ``evaluate`` loops over outermost groups in Python and, per group, forms the dense
n_g x n_g matrices V, V^-1 and Z P_k Z' (cost O(sum n_g^3) plus ~10 numpy/scipy calls per
group). Measured (benchmarks/run.py, this machine): on the seed models that loop is ~85%
of a warm lme4-engine fit (cProfile: 4.7 s of 6.4 s in scipy ``cho_solve`` for 3 fits of
seed model 2), and at 1M rows / 10k groups it dominates the fit.

How: with V_g = s I + Z_g G Z_g' (s = residual variance), Woodbury without inverting G:
V_g^-1 = (I - Z_g H Z_g') / s with H = G (s I + A G)^-1 (symmetric), A = Z_g'Z_g. Every
quantity ``evaluate`` needs (log det, X'V^-1X, quadratic forms, the traces
tr(V^-1 V_k V^-1 V_l), the REML terms) is then a small q x q / q x p expression in the
per-group cross-products A = Z'Z, Z'X, Z'y, X'X, X'y, y'y (accumulated with one
``np.bincount`` per column pair) and is evaluated for all groups at once with batched
``np.matmul``. Cost O(n (p+q)^2 + m q^3); no per-group Python.

Derivations, with L = (I - A H) / s (so Z'V^-1 = L Z', Z'V^-1 Z = L A =: B), u = Z'V^-1 r,
R = Z'V^-1 X = L Z'X, P_k the pattern of a variance parameter (residual: V_k = I):
  log det V = n log s + log det(s I + A G) - q log s
  tr(V^-1 V_k V^-1 V_l) = tr(P_k B P_l B) | tr(P_k L A L') | tr(V^-2) = (n - 2 tr(HA) + tr(HAHA)) / s^2
  (V_k w)' V^-1 (V_l w) = u' P_k B P_l u | u' P_k L u | w'V^-1 w = (w'w - u'H u) / s
  X' V^-1 V_k w = R' P_k u | (X'w - Z'X' H u) / s
  REML: Q = V^-1 X;  Q'V_k Q = R' P_k R | Q'Q;  (V_k Q)' V^-1 (V_l Q) = R' P_k B P_l R | R' P_k L R |
        (L R)' P_l R | (Q'Q - R' H R) / s

Checked by ``benchmarks/proposals/test_fast_inference.py`` against ``evaluate`` on every
seed model (ML and REML) and on simulated data, to 1e-9 relative.
"""

from __future__ import annotations

import numpy as np

from hlmbridge.design import Design
from hlmbridge.errors import FitError
from hlmbridge.inference import Inference, evaluate, variance_parameters

__all__ = ["evaluate_fast"]


def _group_sums(codes: np.ndarray, m: int, W: np.ndarray) -> np.ndarray:
    """Per-group cross-products W_g' W_g, shape (m, d, d)."""
    d = W.shape[1]
    out = np.empty((m, d, d))
    for i in range(d):
        for j in range(i, d):
            out[:, i, j] = np.bincount(codes, weights=W[:, i] * W[:, j], minlength=m)
            out[:, j, i] = out[:, i, j]
    return out


def _tr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched tr(a @ b) for (m, q, q) arrays."""
    return np.einsum("gij,gji->g", a, b)


def evaluate_fast(design: Design, beta: np.ndarray, theta: np.ndarray, *, reml: bool | None = None) -> Inference:
    """Same result as ``hlmbridge.inference.evaluate``; fast for one random level."""
    if len(design.levels) != 1:
        return evaluate(design, beta, theta, reml=reml)
    reml = design.spec.reml if reml is None else reml
    params = variance_parameters(design)
    K = len(params)
    X, y = design.X, design.y
    n, p = X.shape
    ld = design.levels[0]
    Z = ld.Z
    q = Z.shape[1]
    codes = np.asarray(ld.codes)
    m = int(ld.n_groups)
    beta = np.asarray(beta, dtype=float)
    theta = np.asarray(theta, dtype=float)
    s = float(theta[-1])
    G = np.zeros((q, q))
    for k, prm in enumerate(params):
        if prm.level == 0:
            G += theta[k] * prm.pattern

    W = np.column_stack([Z, X, y])
    cp = _group_sums(codes, m, W)
    zs, xs, ys = slice(0, q), slice(q, q + p), q + p
    A = cp[:, zs, zs]
    ZX = cp[:, zs, xs]
    Zy = cp[:, zs, ys]
    XX = cp[:, xs, xs].sum(axis=0)
    Xy = cp[:, xs, ys].sum(axis=0)
    yy = cp[:, ys, ys].sum()
    n_g = np.bincount(codes, minlength=m).astype(float)

    eye = np.eye(q)
    Mg = s * eye + A @ G  # (m, q, q)
    sign, logdet_m = np.linalg.slogdet(Mg)
    if np.any(sign <= 0):
        raise FitError("the marginal covariance is not positive definite at these estimates")
    logdet = float(np.sum(n_g * np.log(s) + logdet_m - q * np.log(s)))
    # H = G M^-1 = (M'^-1 G')' = solve(M', G)'  (M' = s I + G A)
    H = np.swapaxes(np.linalg.solve(np.swapaxes(Mg, 1, 2), np.broadcast_to(G, Mg.shape)), 1, 2)
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    HZX = H @ ZX
    XtVX = (XX - np.einsum("gqi,gqj->ij", ZX, HZX)) / s
    XtVy = (Xy - np.einsum("gqi,gq->i", HZX, Zy)) / s
    try:
        fixed_vcov = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    beta_gls = fixed_vcov @ XtVy
    b = beta_gls if reml else beta

    Zr = Zy - ZX @ b  # (m, q)
    rr = yy - 2.0 * b @ Xy + b @ XX @ b
    Xr = Xy - XX @ b
    HZr = np.einsum("gij,gj->gi", H, Zr)
    quad = float((rr - np.einsum("gi,gi->", Zr, HZr)) / s)

    AH = A @ H
    L = (eye - AH) / s  # (m, q, q)
    B = L @ A  # Z'V^-1 Z
    u = np.einsum("gij,gj->gi", L, Zr)  # Z'V^-1 r
    Hu = np.einsum("gij,gj->gi", H, u)
    # w = V^-1 r = (r - Z HZr) / s
    ww = (rr - 2.0 * np.einsum("gi,gi->", HZr, Zr) + np.einsum("gi,gij,gj->", HZr, A, HZr)) / s**2
    Xw = (Xr - np.einsum("gqi,gq->i", ZX, HZr)) / s
    LAL = L @ A @ np.swapaxes(L, 1, 2)
    R = L @ ZX  # Z'V^-1 X, (m, q, p)

    pats = [None if prm.level is None else prm.pattern for prm in params]
    S = np.zeros((K, K))
    Bq = np.zeros((K, K))
    Xb_k = np.zeros((K, p))
    tr_vi2 = float(np.sum(n_g - 2.0 * np.trace(AH, axis1=1, axis2=2) + _tr(AH, AH)) / s**2)
    PB = [None if P is None else P @ B for P in pats]
    for k in range(K):
        Pk = pats[k]
        if Pk is None:
            Xb_k[k] = (Xw - np.einsum("gqi,gq->i", ZX, Hu)) / s
        else:
            Xb_k[k] = np.einsum("gqi,qj,gj->i", R, Pk, u)
        for l in range(k, K):
            Pl = pats[l]
            if Pk is None and Pl is None:
                S[k, l] = tr_vi2
                Bq[k, l] = (ww - np.einsum("gi,gi->", u, Hu)) / s
            elif Pk is None or Pl is None:
                P = Pl if Pk is None else Pk
                S[k, l] = float(np.sum(np.einsum("ij,gji->g", P, LAL)))
                Bq[k, l] = float(np.einsum("gi,ij,gjk,gk->", u, P, L, u))
            else:
                S[k, l] = float(np.sum(_tr(PB[k], PB[l])))
                Bq[k, l] = float(np.einsum("gi,gij,gj->", u, PB[k] @ pats[l], u))
    S = np.triu(S) + np.triu(S, 1).T
    Bq = np.triu(Bq) + np.triu(Bq, 1).T

    if reml:
        # Q'Q = X'V^-2 X
        QQ = (XX - 2.0 * np.einsum("gqi,gqj->ij", ZX, HZX) + np.einsum("gqi,gqr,grj->ij", HZX, A, HZX)) / s**2
        C = np.empty((K, p, p))
        T = np.empty((K, K, p, p))
        LR = L @ R
        RHR = np.einsum("gqi,gqr,grj->ij", R, H, R)
        for k in range(K):
            Pk = pats[k]
            C[k] = QQ if Pk is None else np.einsum("gqi,qr,grj->ij", R, Pk, R)
            for l in range(K):
                Pl = pats[l]
                if Pk is None and Pl is None:
                    T[k, l] = (QQ - RHR) / s
                elif Pk is None:
                    T[k, l] = np.einsum("gqi,qr,grj->ij", LR, Pl, R)
                elif Pl is None:
                    T[k, l] = np.einsum("gqi,qr,grj->ij", R, Pk, LR)
                else:
                    T[k, l] = np.einsum("gqi,gqr,grj->ij", R, PB[k] @ Pl, R)
        info = np.empty((K, K))
        Av = fixed_vcov
        for k in range(K):
            for l in range(K):
                tr_pp = S[k, l] - 2.0 * np.trace(Av @ T[k, l]) + np.trace(Av @ C[k] @ Av @ C[l])
                quad_p = Bq[k, l] - Xb_k[k] @ Av @ Xb_k[l]
                info[k, l] = -0.5 * tr_pp + quad_p
        _, logdet_x = np.linalg.slogdet(XtVX)
        loglik = -0.5 * ((n - p) * np.log(2 * np.pi) + logdet + logdet_x + quad)
    else:
        info = -0.5 * S + Bq - Xb_k @ fixed_vcov @ Xb_k.T
        loglik = -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
    info = 0.5 * (info + info.T)
    try:
        random_vcov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        random_vcov = np.full((K, K), np.nan)
    return Inference(float(loglik), beta_gls, fixed_vcov, random_vcov, info)
