"""Small-sample inference for the fixed effects: residual, Satterthwaite and Kenward-Roger df.

Everything is computed once in hlmbridge from the design and the variance parameters
(``theta`` in :func:`~hlmbridge.inference.stata_parity.variance_parameters` order, on the
variance/covariance scale, the residual variance last), whichever engine estimated them.
``V(theta) = Z D(theta) Z' + theta_r I`` is linear in ``theta``, so with ``V_k = dV/dtheta_k``:

- ``Phi = (X' V^-1 X)^-1`` and ``dPhi/dtheta_k = Phi C_k Phi`` with ``C_k = X'V^-1 V_k V^-1 X``;
- Satterthwaite (as lmerTest): ``df = 2 (c'Phi c)^2 / (g' A g)``, ``g_k = c' dPhi/dtheta_k c``,
  ``A`` twice the pseudo-inverse of the deviance Hessian (REML: of the restricted likelihood;
  ML: with the fixed effects profiled out), both in lme4's ``(theta, sigma)`` as lmerTest
  differentiates them (numerically; hlmbridge by the chain rule from the exact information and
  score in the variance metric, :func:`lme4_parametrization`). At an interior optimum ``g' A g``
  does not depend on the parametrization; at a boundary fit (a variance at 0, a correlation at
  +/-1) it does: there only lme4's metric has a stationary point (the parameter at the boundary
  then adds nothing to the df, as in lmerTest: Dyestuff2 has 29 REML df, not 1.04).
  F tests follow lmerTest's ``contestMD`` (eigen-decomposition of ``L Phi L'``);
- Kenward-Roger (as pbkrtest's ``vcovAdj`` and ``KRmodcomp``): ``P_k = -C_k``,
  ``Q_kl = X'V^-1 V_k V^-1 V_l V^-1 X``, ``R_kl = 0`` (V is linear in theta),
  ``W = 2 IE2^-1`` (the inverse expected REML information), the adjusted covariance
  ``Phi_A = Phi + 2 Phi U Phi``, ``U = sum_kl W_kl (Q_kl - P_k Phi P_l)``, then pbkrtest's
  scaling and denominator df for each contrast matrix. REML fits only (as pbkrtest and Stata);
- residual: ``n - p`` for every test (Stata's ``dfmethod(residual)``).

Every ``V^-1``-product is summed over per-block cross-products (the outermost groups; the
whole sample when a level is crossed) with the Woodbury identity, never an n-by-n matrix; a
chain of nested levels with wide blocks (where the Stata-parity inference is block-recursive)
takes ``C_k``, ``Q_kl`` and ``tr(V^-1 V_k V^-1 V_l)`` from the derivatives of ``X'V^-1 X`` and
``log|V|`` that :mod:`hlmbridge.inference.nested` carries through its recursion.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(3)
>>> g = np.repeat(np.arange(6), 4)
>>> x = rng.normal(size=24)
>>> df = pd.DataFrame({"y": x + rng.normal(size=6)[g] + rng.normal(size=24), "x": x, "g": g})
>>> spec = ModelSpec("y", (Term((Var("x"),)),), (RandomLevel("g"),), method="reml")
>>> d = build_design(spec, df)
>>> a = df_analysis(d, np.array([1.0, 0.0]), np.array([1.0, 1.0]), "satterthwaite")
>>> a.method, a.df.shape
('satterthwaite', (2,))
>>> kr = df_analysis(d, np.array([1.0, 0.0]), np.array([1.0, 1.0]), "kroger")
>>> bool(np.all(np.diag(kr.vcov_adjusted) >= np.diag(kr.vcov)))
True
>>> normalize_df_method("Kenward-Roger"), normalize_df_method("sat")
('kenward-roger', 'satterthwaite')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from hlmbridge.design.build import Design
from hlmbridge.errors import FitError, UsageError
from hlmbridge.threads import with_bounded_blas

__all__ = [
    "DF_METHODS",
    "ContrastTest",
    "DfAnalysis",
    "df_analysis",
    "kr_ddf",
    "lme4_parametrization",
    "normalize_df_method",
]

#: The df methods hlmbridge computes (canonical names).
DF_METHODS: tuple[str, ...] = ("residual", "satterthwaite", "kenward-roger")

_ALIASES = {
    "residual": "residual",
    "resid": "residual",
    "satterthwaite": "satterthwaite",
    "satt": "satterthwaite",
    "sat": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenward_roger": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "kenward roger": "kenward-roger",
    "kroger": "kenward-roger",
    "kr": "kenward-roger",
}


def normalize_df_method(name: object) -> str:
    """The canonical name of a df method (case-insensitive; ``kroger``/``KR`` for Kenward-Roger).

    Raises :class:`~hlmbridge.errors.UsageError` for anything else.
    """
    if isinstance(name, str) and name.strip().lower() in _ALIASES:
        return _ALIASES[name.strip().lower()]
    raise UsageError(
        f"unknown df method {name!r}; choose one of {', '.join(DF_METHODS)} "
        "('kroger' and 'KR' mean Kenward-Roger)"
    )


def _t(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


@dataclass(frozen=True, eq=False)
class _Derivatives:
    """First- and second-order quantities of ``V`` at one ``theta`` (see the module docstring)."""

    phi: np.ndarray  # (p, p)
    C: np.ndarray  # (K, p, p)   X'V^-1 V_k V^-1 X
    Q: np.ndarray  # (K, K, p, p) X'V^-1 V_k V^-1 V_l V^-1 X
    S: np.ndarray  # (K, K)  tr(V^-1 V_k V^-1 V_l)


def _derivatives(design: Design, theta: np.ndarray) -> _Derivatives:
    """``Phi``, ``C_k``, ``Q_kl`` and ``S_kl`` at ``theta``: from the per-block cross-products,
    or, for the nested designs :func:`~hlmbridge.inference.stata_parity.evaluate` takes
    block-recursively, from :mod:`hlmbridge.inference.nested` (:func:`_nested_derivatives`).

    Notation (per block, as in :mod:`~hlmbridge.inference.stata_parity`): ``E_k = dD/dtheta_k``,
    so ``V_k = Z E_k Z'`` (the residual's is ``I``), and ``V^-1 = (I - Z W Z') / s2`` gives the
    recursion ``Z'V^-j a = (I - Z'Z W) Z'V^-(j-1) a / s2`` and ``a'V^-j a = (a'V^-(j-1) a -
    (Z'V^-(j-1) a)' W Z'a) / s2``. Everything is batched over the blocks and over ``k``: Python
    loops over the pairs (k, l) would pay numpy's per-call overhead ~K^2 times, which dominates
    on small designs. A sum over blocks of ``a_b' c_b`` for two (B, Q, m) arrays is one matrix
    product of them flattened to (B Q, m).
    """
    from hlmbridge.inference.stata_parity import _path

    theta = np.asarray(theta, dtype=float)
    if _path(design) == "nested":  # a chain of nested levels with wide blocks: block-recursive
        return _nested_derivatives(design, theta)
    return _dense_derivatives(design, theta)


def _nested_derivatives(design: Design, theta: np.ndarray) -> _Derivatives:
    """:func:`_derivatives` by :func:`hlmbridge.inference.nested.nested_derivatives` (one small
    matrix per group at every level). Its ``Q`` is the symmetric part ``(Q_kl + Q_lk) / 2``,
    all the df methods use: both contract ``Q_kl`` with a symmetric matrix (``Phi``) or sum it
    with symmetric weights (``W_kl``)."""
    from hlmbridge.inference.nested import nested_derivatives

    XtVX, C, Qm, S = nested_derivatives(design, theta)
    try:
        phi = np.linalg.inv(XtVX)
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    return _Derivatives(phi, 0.5 * (C + _t(C)), Qm, 0.5 * (S + S.T))


def _dense_derivatives(design: Design, theta: np.ndarray) -> _Derivatives:
    """:func:`_derivatives` from the dense per-block cross-products (see there)."""
    # The block cross-products are shared with the Stata-parity inference (computed once per design).
    from hlmbridge.inference.stata_parity import _blocks, inverse_powers, woodbury

    bl = _blocks(design)
    s2, _, _, W = woodbury(bl, theta)  # V^-1 = (I - Z W Z') / s2
    Kr = len(theta) - 1
    K = Kr + 1
    E = bl.patterns
    B, Q = bl.MG.shape[0], bl.MG.shape[1]
    p = design.n_fixed
    BQ = B * Q
    # P[j - 1] = [Z'V^-j Z | Z'V^-j X] per block, Vx[j - 1] = X'V^-j X summed (y is not needed here).
    MW, P, Vx = inverse_powers(bl, W, s2, p)
    Pzz, Szz = P[0, :, :, :Q], P[1, :, :, :Q]  # Z'V^-1 Z, Z'V^-2 Z
    try:
        phi = np.linalg.inv(Vx[0])
    except np.linalg.LinAlgError as exc:
        raise FitError("X' V^-1 X is singular: the fixed effects are not identified") from exc
    trV1 = (bl.n_total - MW.diagonal(0, 1, 2).sum()) / s2  # tr(V^-1) = (n - tr(Z'Z W)) / s2
    trV2 = (trV1 - np.einsum("bij,bji->", Pzz, W)) / s2  # tr(V^-2) = (tr(V^-1) - tr(Z'V^-1 Z W)) / s2

    XEX, S_re = _k_products(E, Pzz, P[0, :, :, Q:], P[1, :, :, Q:])
    C = np.empty((K, p, p))  # X'V^-1 V_k V^-1 X
    C[:Kr] = XEX[:, K]
    C[Kr] = Vx[1]
    C = 0.5 * (C + _t(C))
    Qm = np.empty((K, K, p, p))  # X'V^-1 V_k V^-1 V_l V^-1 X
    Qm[:Kr] = XEX[:, :K]
    Qm[Kr, :Kr] = _t(Qm[:Kr, Kr])
    Qm[Kr, Kr] = Vx[2]
    S = np.empty((K, K))  # tr(V^-1 V_k V^-1 V_l)
    S[:Kr, :Kr] = S_re
    S[:Kr, Kr] = S[Kr, :Kr] = E.reshape(Kr, BQ * Q) @ Szz.ravel()  # tr(E_k Z'V^-2 Z) = tr(V^-2 V_k)
    S[Kr, Kr] = trV2
    S = 0.5 * (S + S.T)  # tr(A B) = tr(B A), summed in another order
    return _Derivatives(phi, C, Qm, S)


def _k_products(E: np.ndarray, Pzz: np.ndarray, Pzx: np.ndarray, Szx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The terms of :func:`_derivatives` with random-effects parameters ``k, l`` (K = Kr + 1).

    From ``E`` (Kr, B, Q, Q) and per block ``Pzz = Z'V^-1 Z``, ``Pzx = Z'V^-1 X`` and
    ``Szx = Z'V^-2 X``: ``XEX`` (Kr, K + 1, p, p), summed over blocks, with ``XEX[k, l] = Q_kl =
    X'V^-1 V_k V^-1 V_l V^-1 X`` for ``l < Kr``, ``XEX[k, Kr] = X'V^-1 V_k V^-2 X`` (``Q_kl``
    with ``l`` the residual) and ``XEX[k, K] = C_k'``; and ``tr(V^-1 V_k V^-1 V_l)`` (Kr, Kr).

    The products over ``k`` are batched by placing the ``E_k`` side by side in each block, so
    each is one small product per block (B of them), not one per block and ``k`` (Kr B): that
    is what numpy's stacked matmul costs on blocks as small as 2x2.
    """
    Kr, B, Q, _ = E.shape
    p = Pzx.shape[-1]
    K, KQ, Kp, BQ = Kr + 1, Kr * Q, Kr * p, B * Q
    Ec = E.transpose(1, 2, 0, 3).reshape(B, Q, KQ)  # [E_0 | E_1 | ...] per block
    EPx = _t(Ec) @ Pzx  # [E_0 Z'V^-1 X; E_1 Z'V^-1 X; ...] (the E_k are symmetric)
    # Es = [E_0 | E_1 | ... | E_0 Z'V^-1 X | E_1 Z'V^-1 X | ...] per block, and
    # right = [Z'V^-1 Z Es | Z'V^-2 X | Z'V^-1 X].
    Es = np.concatenate([Ec, EPx.reshape(B, Kr, Q, p).transpose(0, 2, 1, 3).reshape(B, Q, Kp)], axis=2)
    right = np.empty((B, Q, KQ + Kp + 2 * p))
    np.matmul(Pzz, Es, out=right[:, :, :KQ + Kp])
    right[:, :, KQ + Kp:KQ + Kp + p] = Szx
    right[:, :, KQ + Kp + p:] = Pzx
    # (E_k Z'V^-1 X)' [Z'V^-1 Z E_l Z'V^-1 X (all l) | Z'V^-2 X | Z'V^-1 X], summed over blocks.
    XEX = Es[:, :, KQ:].reshape(BQ, Kp).T @ right[:, :, KQ:].reshape(BQ, Kp + 2 * p)
    XEX = XEX.reshape(Kr, p, K + 1, p).transpose(0, 2, 1, 3)
    # tr(Z'V^-1 Z E_k Z'V^-1 Z E_l) = sum over b, i, j of PE[b, i, k, j] PE[b, j, l, i], with
    # PE[b, i, k, j] = (Z'V^-1 Z E_k)_ij in block b.
    PE = right[:, :, :KQ].reshape(B, Q, Kr, Q)
    S = PE.transpose(2, 0, 1, 3).reshape(Kr, BQ * Q) @ PE.transpose(2, 0, 3, 1).reshape(Kr, BQ * Q).T
    return XEX, S


@dataclass(frozen=True)
class ContrastTest:
    """An F test of ``L beta = rhs`` (one row of ``L``: the square of a t test)."""

    f_value: float
    ndf: int
    ddf: float
    p_value: float
    method: str
    f_scaling: float = 1.0  # Kenward-Roger's scale factor (1 otherwise)


@dataclass(frozen=True, eq=False)
class DfAnalysis:
    """The df method's view of one fit: per-coefficient df and t tests, F tests of contrasts.

    ``vcov`` is ``(X'V^-1X)^-1`` at ``theta``; ``vcov_adjusted`` is Kenward-Roger's ``Phi_A``
    (``vcov`` for the other methods). ``jacobian[k] = dvcov/dphi_k`` and ``vcov_varpar`` the
    covariance of ``phi`` the Satterthwaite df use, with ``phi`` lme4's ``(theta, sigma)``
    (observed information, lmerTest's ``Jac_list`` and ``vcov_varpar``) or the variance
    parameters (expected information), Kenward-Roger's ``jacobian`` in the variance metric;
    ``kr_P``/``kr_W`` are pbkrtest's ``P`` and ``W``.
    """

    method: str
    reml: bool
    beta: np.ndarray
    vcov: np.ndarray
    vcov_adjusted: np.ndarray
    df_residual: int
    jacobian: np.ndarray | None = None
    vcov_varpar: np.ndarray | None = None
    kr_P: np.ndarray | None = None
    kr_W: np.ndarray | None = None
    notes: tuple[str, ...] = ()  # what a user must know about these df (lmerTest's warnings)

    # ---- single contrasts ------------------------------------------------------------
    def contrast_df(self, c: Sequence[float] | np.ndarray) -> float:
        """The df of the t test of ``c' beta``."""
        c = np.asarray(c, dtype=float).ravel()
        if c.shape != self.beta.shape:
            raise UsageError(f"a contrast needs {self.beta.size} coefficients, got {c.size}")
        if self.method == "residual":
            return float(self.df_residual)
        if self.method == "satterthwaite":
            assert self.jacobian is not None and self.vcov_varpar is not None
            var = float(c @ self.vcov @ c)
            g = np.einsum("i,kij,j->k", c, self.jacobian, c)
            return float(2.0 * var**2 / (g @ self.vcov_varpar @ g))
        return kr_ddf(self, c[None, :])

    def contrast_se(self, c: Sequence[float] | np.ndarray) -> float:
        """Standard error of ``c' beta`` (Kenward-Roger: from the adjusted covariance)."""
        c = np.asarray(c, dtype=float).ravel()
        return float(np.sqrt(c @ self.vcov_adjusted @ c))

    @property
    def df(self) -> np.ndarray:
        """The df of every coefficient's t test, in the order of the fixed effects."""
        eye = np.eye(self.beta.size)
        return np.array([self.contrast_df(eye[j]) for j in range(self.beta.size)])

    def coefficients(self, level: float = 0.95) -> np.ndarray:
        """Rows ``(estimate, std_error, df, t, p, conf_low, conf_high)`` per coefficient."""
        se = np.sqrt(np.diag(self.vcov_adjusted))
        df = self.df
        t = self.beta / se
        p = 2.0 * stats.t.sf(np.abs(t), df)
        q = stats.t.ppf(0.5 + level / 2.0, df)
        return np.column_stack([self.beta, se, df, t, p, self.beta - q * se, self.beta + q * se])

    # ---- F tests ---------------------------------------------------------------------
    def test(self, L: Sequence[Sequence[float]] | np.ndarray, rhs: Sequence[float] | float | None = None) -> ContrastTest:
        """The F test of ``L beta = rhs`` (``rhs`` 0 by default), as lmerTest/pbkrtest compute it."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        if L.ndim != 2 or L.shape[1] != self.beta.size or L.shape[0] == 0:
            raise UsageError(f"L must be a matrix with {self.beta.size} columns and at least one row; got shape {L.shape}")
        if not np.all(np.isfinite(L)):
            raise UsageError("L must be finite")
        r = np.zeros(L.shape[0]) if rhs is None else np.broadcast_to(np.asarray(rhs, dtype=float), (L.shape[0],))
        if rhs is not None and np.asarray(rhs).size not in (1, L.shape[0]):
            raise UsageError(f"rhs must have one value per row of L ({L.shape[0]})")
        q = int(np.linalg.matrix_rank(L))
        if q < L.shape[0]:
            raise UsageError(f"L has rank {q} < {L.shape[0]} rows: drop the redundant rows")
        # beta - beta_H with L beta_H = rhs (the minimum-norm solution, as lmerTest/pbkrtest)
        diff = self.beta - np.linalg.pinv(L) @ r
        if self.method == "kenward-roger":
            wald = float(diff @ L.T @ np.linalg.solve(L @ self.vcov_adjusted @ L.T, L @ diff))
            ddf, scaling = _kr_terms(self, L)
            f = scaling * wald / q
            return ContrastTest(f, q, ddf, float(stats.f.sf(f, q, ddf)), self.method, scaling)
        if self.method == "residual":
            wald = float(diff @ L.T @ np.linalg.solve(L @ self.vcov @ L.T, L @ diff))
            ddf = float(self.df_residual)
            return ContrastTest(wald / q, q, ddf, float(stats.f.sf(wald / q, q, ddf)), self.method)
        # Satterthwaite: lmerTest's contestMD.
        VL = L @ self.vcov @ L.T
        d, P = np.linalg.eigh(VL)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        PtL = P.T @ L
        Lb = PtL @ diff
        t2 = Lb**2 / d
        f = float(np.sum(t2) / q)
        nu = np.array([self.contrast_df(PtL[m]) for m in range(q)])
        ddf = _fstat_ddf(nu)
        return ContrastTest(f, q, ddf, float(stats.f.sf(f, q, ddf)), self.method)


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: the F denominator df from the t dfs of the eigen-directions."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * e / (e - nu.size)


def _kr_terms(a: DfAnalysis, L: np.ndarray) -> tuple[float, float]:
    """pbkrtest's ``.KR_adjust``: (denominator df, F scaling) for the rows of ``L``."""
    assert a.kr_P is not None and a.kr_W is not None
    phi = a.vcov
    theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
    tp = theta @ phi
    u = np.array([tp @ Pk @ phi for Pk in a.kr_P])  # (K, p, p)
    tr_u = np.einsum("kii->k", u)
    W = a.kr_W
    A1 = float(tr_u @ W @ tr_u)
    A2 = float(np.einsum("kl,kij,lji->", W, u, u))
    q = float(np.linalg.matrix_rank(L))
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1.0) * A1 - (q + 4.0) * A2) / ((q + 2.0) * A2)
    den = 3.0 * q + 2.0 * (1.0 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2.0 - g) / den
    V0 = 1.0 + c1 * B
    V1 = 1.0 - c2 * B
    V2 = 1.0 - c3 * B
    if abs(V0) < 1e-10:
        V0 = 0.0
    x = 1.0 - A2 / q
    ratio = 1.0 if (abs(x) < 1e-14 and abs(V1) < 1e-14) else x / V1
    rho = ratio**2 * V0 / V2 / q
    ddf = 4.0 + (q + 2.0) / (q * rho - 1.0)
    scaling = 1.0 if abs(ddf - 2.0) < 1e-2 else ddf * (1.0 - A2 / q) / (ddf - 2.0)
    return float(ddf), float(scaling)


def kr_ddf(a: DfAnalysis, L: np.ndarray) -> float:
    """Kenward-Roger denominator df for the rows of ``L`` (pbkrtest's ``Lb_ddf``)."""
    if a.method != "kenward-roger":
        raise UsageError("kr_ddf needs a Kenward-Roger analysis")
    return _kr_terms(a, np.atleast_2d(np.asarray(L, dtype=float)))[0]


def _inverse_hessian(h: np.ndarray) -> np.ndarray:
    """2 * pseudo-inverse of the deviance Hessian ``h``, as lmerTest (eigenvalues below 1e-8 dropped)."""
    vals, vecs = np.linalg.eigh(0.5 * (h + h.T))
    pos = vals > 1e-8
    return 2.0 * (vecs[:, pos] / vals[pos]) @ vecs[:, pos].T


def _hessian_notes(hess: np.ndarray) -> tuple[str, ...]:
    """lmerTest's warnings about the deviance Hessian in ``(theta, sigma)`` (its eigenvalues
    below -1e-8, and within 1e-8 of 0)."""
    vals = np.linalg.eigvalsh(0.5 * (hess + hess.T))
    out = []
    neg, zero = vals[vals < -1e-8], vals[np.abs(vals) <= 1e-8]
    if neg.size:
        out.append(f"Satterthwaite df: the deviance Hessian in lme4's (theta, sigma) has {neg.size} negative "
                   f"eigenvalue(s) ({' '.join(f'{v:.1e}' for v in neg)}): the estimates are not at a maximum "
                   "(lmerTest: 'Model failed to converge'), and those directions are left out of the df")
    if zero.size:
        out.append(f"Satterthwaite df: the deviance Hessian in lme4's (theta, sigma) has {zero.size} eigenvalue(s) "
                   f"close to zero ({' '.join(f'{v:.1e}' for v in zero)}): a variance parameter is not "
                   "identified (lmerTest: 'Model may not have converged'), and it is left out of the df")
    return tuple(out)


def _psd_cholesky(G: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of a positive semi-definite ``G`` (a zero pivot gives a zero
    column below it, as lme4's theta has at a singular fit; a pivot below 0 by rounding is 0)."""
    q = G.shape[0]
    L = np.zeros((q, q))
    tiny = 1e-14 * max(float(np.max(np.abs(np.diag(G)))), 1e-300)
    for j in range(q):
        d = G[j, j] - L[j, :j] @ L[j, :j]
        if d <= tiny:
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1:, j] = (G[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L


def lme4_parametrization(design: Design, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lme4's ``(theta, sigma)`` at the variance parameters ``theta``, with the map's derivatives.

    lme4 parametrizes each random-effects term's covariance as ``sigma^2 L L'`` with ``L`` lower
    triangular (its ``theta``: the lower triangle column by column, in the level's lme4 term
    order), and the residual variance as ``sigma^2``; lmerTest differentiates in ``(theta,
    sigma)``. A structure lme4 has no term for (Stata's identity and exchangeable over several
    terms) gets ``var = sigma^2 t^2`` and ``cov = sigma^2 c``. Returns ``phi`` (lme4's theta then
    sigma), ``J[m, a] = dtheta_m / dphi_a`` and ``H2[m] = d^2 theta_m / dphi dphi'``.

    Every variance parameter is ``sigma^2 q_m(l)`` with ``q_m(l) = l'A_m l / 2 + b_m'l`` (the
    residual's ``q = 1``), so the derivatives are exact.

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec, RandomLevel
    >>> from hlmbridge.design.build import build_design
    >>> g = np.repeat(np.arange(5), 3)
    >>> df = pd.DataFrame({"y": np.arange(15.0) % 4, "g": g})
    >>> d = build_design(ModelSpec("y", levels=(RandomLevel("g"),)), df)
    >>> phi, J, H2 = lme4_parametrization(d, np.array([0.0, 4.0]))
    >>> phi.tolist(), J.tolist()   # theta = 0 at the boundary: var(_cons) does not move to first order
    ([0.0, 2.0], [[0.0, 0.0], [0.0, 4.0]])
    """
    from hlmbridge.inference.stata_parity import variance_parameters

    theta = np.asarray(theta, dtype=float)
    vp = variance_parameters(design)
    K = len(vp)
    s2 = float(theta[-1])
    if not s2 > 0:
        raise FitError(f"the residual variance must be positive, got {s2}")
    sigma = np.sqrt(s2)
    quad: list[tuple[np.ndarray, np.ndarray] | None] = [None] * K  # (A_m, b_m) over l
    l_values: list[float] = []

    def new_l(value: float) -> int:
        l_values.append(float(value))
        return len(l_values) - 1

    pending: list[tuple[int, list[tuple[int, int]]]] = []  # (m, pairs (i, j) of l indices with q_m = sum l_i l_j)
    for li, ld in enumerate(design.levels):
        mine = [(k, p) for k, p in enumerate(vp) if p.level == li]
        shared = [(k, p) for k, p in mine if np.count_nonzero(np.triu(p.pattern)) > 1]
        if shared:  # identity / exchangeable over several terms
            for k, p in mine:
                if p.kind == "var":
                    pending.append((k, [(new_l(np.sqrt(max(theta[k], 0.0) / s2)),) * 2]))
                else:
                    idx = new_l(theta[k] / s2)
                    pending.append((k, [(-1, idx)]))  # linear: marked by -1
            continue
        G = np.zeros((ld.Z.shape[1],) * 2)
        for k, p in mine:
            G += theta[k] * p.pattern
        entry: dict[tuple[int, int], int] = {}  # (row, column) of one block's L -> l index
        for cols in (ld.blocks or (tuple(range(G.shape[0])),)):
            L = _psd_cholesky(G[np.ix_(cols, cols)] / s2)
            for c in range(len(cols)):
                for r in range(c, len(cols)):
                    entry[(cols[r], cols[c])] = new_l(L[r, c])
        for k, p in mine:
            i, j = (int(v[0]) for v in np.nonzero(np.triu(p.pattern)))
            pairs = [(entry[(i, c)], entry[(j, c)]) for c in range(G.shape[0])
                     if (i, c) in entry and (j, c) in entry]
            pending.append((k, pairs))
    nl = len(l_values)
    for k, pairs in pending:
        A, b = np.zeros((nl, nl)), np.zeros(nl)
        for a, c in pairs:
            if a < 0:
                b[c] = 1.0
            else:  # l_a l_c: half of it in A[a, c] and A[c, a] (l'A l / 2)
                A[a, c] += 1.0
                A[c, a] += 1.0
        quad[k] = (A, b)
    lv = np.array(l_values)
    na = nl + 1
    J = np.zeros((K, na))
    H2 = np.zeros((K, na, na))
    for m in range(K):
        if vp[m].level is None:  # sigma^2
            J[m, nl] = 2.0 * sigma
            H2[m, nl, nl] = 2.0
            continue
        A, b = quad[m]  # type: ignore[misc]
        qm = 0.5 * lv @ A @ lv + b @ lv
        grad = A @ lv + b
        J[m, :nl], J[m, nl] = s2 * grad, 2.0 * sigma * qm
        H2[m, :nl, :nl] = s2 * A
        H2[m, :nl, nl] = H2[m, nl, :nl] = 2.0 * sigma * grad
        H2[m, nl, nl] = 2.0 * qm
    return np.append(lv, sigma), J, H2


@with_bounded_blas
def df_analysis(
    design: Design,
    beta: np.ndarray,
    theta: np.ndarray,
    method: str,
    *,
    reml: bool | None = None,
    information: str = "observed",
) -> DfAnalysis:
    """Everything a df method needs at the estimates ``beta``, ``theta`` of ``design``.

    ``method``: ``"residual"``, ``"satterthwaite"`` or ``"kenward-roger"`` (aliases in
    :func:`normalize_df_method`). ``reml`` defaults to the spec's method. ``information``
    (Satterthwaite only): ``"observed"`` (lmerTest's; the default) or ``"expected"``.
    Kenward-Roger needs a REML fit (a :class:`~hlmbridge.errors.UsageError` otherwise,
    where pbkrtest would silently refit with REML).
    """
    method = normalize_df_method(method)
    reml = design.spec.reml if reml is None else bool(reml)
    beta = np.asarray(beta, dtype=float)
    theta = np.asarray(theta, dtype=float)
    n, p = design.X.shape
    if information not in ("observed", "expected"):
        raise UsageError(f"information must be 'observed' or 'expected', got {information!r}")
    if method == "kenward-roger" and not reml:
        raise UsageError(
            "Kenward-Roger df are defined for REML fits only (as in pbkrtest and Stata's "
            "dfmethod(kroger)); refit with reml=True, or use df_method='satterthwaite'"
        )
    dv = _derivatives(design, theta)
    phi = dv.phi
    if method == "residual":
        return DfAnalysis(method, reml, beta, phi, phi, n - p)
    jac = np.einsum("ij,kjl,lm->kim", phi, dv.C, phi)  # dPhi/dtheta_k
    # Expected information: REML 1/2 tr(P V_k P V_l); ML 1/2 tr(V^-1 V_k V^-1 V_l).
    K = dv.S.shape[0]
    ie2 = np.empty((K, K))
    for k in range(K):
        for l in range(k, K):
            if reml:
                val = dv.S[k, l] - 2.0 * np.sum(phi * dv.Q[k, l]) + np.sum((phi @ dv.C[k]) * (dv.C[l] @ phi))  # tr(C_k Phi C_l Phi)
            else:
                val = dv.S[k, l]
            ie2[k, l] = ie2[l, k] = val
    if method == "satterthwaite":
        if information == "observed":
            from hlmbridge.inference.stata_parity import evaluate

            # lmerTest's Hessian of the deviance in lme4's (theta, sigma), by the chain rule from
            # the exact information and score in the variance metric. At an interior optimum this
            # gives the df of the variance metric; at a boundary fit (a variance at 0, a
            # correlation at +/-1) only this metric's point is stationary, and the df are lmerTest's.
            at = evaluate(design, beta, theta, reml=reml)
            _, J, H2 = lme4_parametrization(design, theta)
            hess = 2.0 * (J.T @ at.information @ J - np.einsum("m,mab->ab", at.score, H2))
            jac = np.einsum("ma,mij->aij", J, jac)
            vcov_varpar = _inverse_hessian(hess)
            notes = _hessian_notes(hess)
        else:
            vcov_varpar = _inverse_hessian(ie2)  # 2 * the expected information: the deviance's
            notes = ()
        return DfAnalysis(method, reml, beta, phi, phi, n - p, jacobian=jac, vcov_varpar=vcov_varpar, notes=notes)
    # Kenward-Roger (pbkrtest's vcovAdj16_internal).
    eig = np.linalg.eigvalsh(ie2)
    W = 2.0 * (np.linalg.inv(ie2) if np.min(np.abs(eig)) > 1e-10 else np.linalg.pinv(ie2))
    W = 0.5 * (W + W.T)
    P = -dv.C
    U = np.zeros((p, p))
    for k in range(K):
        for l in range(K):
            U += W[k, l] * (dv.Q[k, l] - P[k] @ phi @ P[l])
    phi_a = phi + 2.0 * phi @ U @ phi
    phi_a = 0.5 * (phi_a + phi_a.T)
    return DfAnalysis(method, reml, beta, phi, phi_a, n - p, jacobian=jac, kr_P=P, kr_W=W)
