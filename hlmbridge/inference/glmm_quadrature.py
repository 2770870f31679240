"""A GLMM's marginal log likelihood at (beta, G): Laplace and adaptive Gauss-Hermite quadrature.

One grouping level with ``q`` random effects ``b_j ~ N(0, G)`` per group. Each group's integral
``int prod_i f(y_i | x_i'beta + z_i'b) phi_G(b) db`` is computed by

- ``laplace``: glmer's ``nAGQ = 1`` (and Stata's ``intmethod(laplace)``): at the conditional mode
  of :func:`~hlmbridge.inference.glmm_pirls.conditional_modes`,
  ``log f(y | b^) + log phi(u^) - log|H|/2`` on the spherical scale ``b = Lambda u``;
- ``mcaghermite``: adaptive Gauss-Hermite quadrature at the conditional mode and curvature,
  ``k^q`` points ``b^ + C z``, ``C C' = Lambda H^-1 Lambda'`` (glmer's ``nAGQ = k`` for one
  scalar random effect; Stata's ``intmethod(mcaghermite)``);
- ``mvaghermite``: Stata's default, adapted at the posterior mean and variance of ``b_j``,
  which the quadrature itself computes: started at the mode and curvature and iterated until
  the points are the fixed point (mean and SD move less than 1e-9 of a posterior SD, or less
  than 1e-5 while the log likelihood changes by less than 1e-11 from one round to the next, when
  no gradient is asked for);
- ``ghermite``: non-adaptive Gauss-Hermite quadrature (points ``chol(G) z``).

The multivariate rule is the product rule (``k^q`` points) with ``C`` the Cholesky factor of the
adapting variance taken in Stata's order of the random effects (slopes first, the intercept
last, ``stata_order``): the rule is exact only for polynomials, so the square root chosen
matters at a few points, and this is Stata's.

Examples
--------
>>> import numpy as np
>>> nodes, logw = product_rule(3, 1)
>>> np.round(nodes[:, 0], 6).tolist(), round(float(np.exp(logw).sum()), 12)
([-1.732051, 0.0, 1.732051], 1.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import product

import numpy as np

from hlmbridge.errors import FitError
from hlmbridge.inference.glmm_pirls import GroupedData, conditional_modes, row_loglik, score_and_weight

__all__ = ["METHODS", "Marginal", "marginal_loglik", "product_rule"]

#: The integration methods, by Stata's names (glmer's nAGQ = 1 is laplace, nAGQ = k mcaghermite).
METHODS = ("laplace", "mcaghermite", "mvaghermite", "ghermite")

_LOG_2PI = float(np.log(2 * np.pi))


@functools.lru_cache(maxsize=32)
def product_rule(k: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes (``k^q`` x q) and log weights for the standard normal in ``q`` dimensions
    (cached: read-only arrays)."""
    x, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / np.sqrt(2 * np.pi)
    nodes = np.array(list(product(x, repeat=q)), dtype=float).reshape(-1, q)
    logw = np.array([float(np.sum(np.log(c))) for c in product(w, repeat=q)])
    nodes.flags.writeable = False
    logw.flags.writeable = False
    return nodes, logw


@dataclass(frozen=True, eq=False)
class Marginal:
    """The marginal log likelihood and what the integration found on the way.

    ``u``/``H``: the conditional modes (spherical scale) and curvature (for a warm start and
    glmer's ``ranef``; None when mvaghermite started from ``adapt0`` without ``modes``);
    ``mean``/``var``: the posterior mean and variance of ``b_j`` by the quadrature (None for
    Laplace); ``iterations``: the mean-variance adaptation's rounds.
    """

    loglik: float
    groups: np.ndarray
    u: np.ndarray | None
    H: np.ndarray | None
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    iterations: int = 0
    #: With ``gradient=True`` (quadrature methods): d loglik / d beta and the symmetric M with
    #: d loglik = tr(M dG), the points held at their final adaptation.
    grad_beta: np.ndarray | None = None
    grad_G: np.ndarray | None = None


def _chol_in_order(S: np.ndarray, stata_order: np.ndarray) -> np.ndarray:
    """A square root ``C`` of each ``S_j`` (C C' = S): the Cholesky factor in Stata's order."""
    P = stata_order
    Sp = S[:, P][:, :, P]
    try:
        L = np.linalg.cholesky(Sp)
    except np.linalg.LinAlgError:
        q = S.shape[1]
        jitter = 1e-12 * np.maximum(np.trace(Sp, axis1=1, axis2=2), 1e-300)[:, None, None] * np.eye(q)
        L = np.linalg.cholesky(Sp + jitter)
    C = np.empty_like(L)
    C[:, P, :] = L  # rows back to the design's order; columns stay the rule's coordinates
    return C


def _quadrature(data: GroupedData, fixed: np.ndarray, Ginv: np.ndarray, logdet_G: float, mu: np.ndarray,
                C: np.ndarray, nodes: np.ndarray, logw: np.ndarray,
                keep_eta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Each group's log integral with points ``mu_j + C_j z_k``, the normalized posterior weights,
    the points themselves (groups x points x q) and (``keep_eta``) the linear predictor (rows x points)."""
    codes = data.codes
    # (numpy's einsum with three operands or a broadcast is ten times slower than matmul here)
    a = fixed + np.sum(data.Z * mu[codes], axis=1)
    A = np.matmul(data.Z[:, None, :], C[codes])[:, 0, :]
    eta = a[:, None] + A @ nodes.T
    lj = data.group_sum(row_loglik(data, eta))
    b = mu[:, None, :] + np.matmul(C, nodes.T).transpose(0, 2, 1)
    quad = np.sum((b @ Ginv) * b, axis=2)
    lj += -0.5 * logdet_G - 0.5 * quad + 0.5 * np.sum(nodes * nodes, axis=1)[None, :] + logw[None, :]
    top = lj.max(axis=1)
    p = np.exp(lj - top[:, None])
    s = p.sum(axis=1)
    logdet_C = np.linalg.slogdet(C)[1]
    return top + np.log(s) + logdet_C, p / s[:, None], b, (eta if keep_eta else None)


def _gradient(data: GroupedData, Ginv: np.ndarray, post: np.ndarray, eta: np.ndarray, mean: np.ndarray,
              var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of the quadrature's log likelihood in ``beta`` and in ``G`` (the symmetric
    ``M`` with d loglik = tr(M dG)), the points held where they are."""
    s, _ = score_and_weight(data, eta)
    r = np.sum(s * post[data.codes], axis=1)
    second = var.sum(axis=0) + mean.T @ mean
    M = 0.5 * Ginv @ second @ Ginv - 0.5 * len(mean) * Ginv
    return data.X.T @ r, 0.5 * (M + M.T)


def _moments(post: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.matmul(post[:, None, :], b)[:, 0, :]
    d = b - m[:, None, :]
    return m, np.matmul((d * post[:, :, None]).transpose(0, 2, 1), d)


def marginal_loglik(data: GroupedData, beta: np.ndarray, G: np.ndarray, method: str, points: int,
                    stata_order: np.ndarray | None = None, u0: np.ndarray | None = None,
                    adapt0: tuple[np.ndarray, np.ndarray] | None = None, tol: float = 1e-9,
                    max_rounds: int = 500, gradient: bool = False, modes: bool = True, hold: bool = False) -> Marginal:
    """The marginal log likelihood of ``(beta, G)`` by ``method`` with ``points`` per dimension.

    ``u0`` starts PIRLS; ``adapt0`` (posterior means and variances) starts mvaghermite's
    iteration (the mode and curvature when None). ``stata_order``: the random effects in the
    order Stata lists them (indices into the design's columns), which fixes the product rule's
    square root; the design's order when None. ``gradient=True`` adds the gradient with the
    quadrature points held fixed (not for Laplace, whose mode moves at first order).
    ``modes=False`` skips the conditional modes where nothing needs them (mvaghermite from ``adapt0``).
    ``hold=True`` (mvaghermite with ``adapt0``): the quadrature at exactly those points, not iterated
    (what the derivatives of an iteration of Stata's optimizer hold fixed).
    """
    if method not in METHODS:
        raise FitError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}",
                       engine="quadrature")
    q = data.q
    order = np.arange(q) if stata_order is None else np.asarray(stata_order)
    lam = np.linalg.cholesky(G)
    fixed = data.X @ beta + data.offset
    u: np.ndarray | None = None
    H: np.ndarray | None = None
    if method == "ghermite":
        u = np.zeros((data.n_groups, q))
        H = np.broadcast_to(np.eye(q), (data.n_groups, q, q)).copy()
    elif modes or adapt0 is None or method != "mvaghermite":
        u, H, obj = conditional_modes(data, beta, lam, u0)
    if method == "laplace":
        groups = obj - 0.5 * np.linalg.slogdet(H)[1]
        return Marginal(float(groups.sum()), groups, u, H)
    nodes, logw = product_rule(points, q)
    Ginv = np.linalg.inv(G)
    logdet_G = float(np.linalg.slogdet(G)[1])
    if method == "ghermite":
        mu = np.zeros((data.n_groups, q))
        C = np.broadcast_to(_chol_in_order(G[None], order)[0], (data.n_groups, q, q))
        groups, post, b, eta = _quadrature(data, fixed, Ginv, logdet_G, mu, C, nodes, logw, gradient)
        m, S = _moments(post, b)
        grads = _gradient(data, Ginv, post, eta, m, S) if eta is not None else (None, None)
        return Marginal(float(groups.sum()), groups, u, H, m, S, 0, *grads)
    if method == "mcaghermite" or adapt0 is None:
        assert u is not None and H is not None
        mu = u @ lam.T
        S = lam[None] @ np.linalg.inv(H) @ lam.T[None]
    else:
        mu, S = adapt0
    C = _chol_in_order(S, order)
    mc = method == "mcaghermite" or (hold and adapt0 is not None)
    groups, post, b, eta = _quadrature(data, fixed, Ginv, logdet_G, mu, C, nodes, logw, gradient)
    m, V = _moments(post, b)
    if mc:
        grads = _gradient(data, Ginv, post, eta, m, V) if eta is not None else (None, None)
        return Marginal(float(groups.sum()), groups, u, H, m, V, 0, *grads)
    rounds = 0
    previous = np.inf
    for rounds in range(1, max_rounds + 1):
        sd = np.sqrt(np.maximum(np.diagonal(V, axis1=1, axis2=2), 1e-300))
        move = max(float(np.max(np.abs(m - mu) / sd)),
                   float(np.max(np.abs(np.sqrt(np.maximum(np.diagonal(S, axis1=1, axis2=2), 0)) - sd) / sd)))
        total = float(groups.sum())
        # settled: the points no longer move, or (for the log likelihood alone) they move so little
        # that it changes by less than 1e-11 from one round to the next; the gradient with the
        # points held moves with the points at first order, so it waits for them
        if move < tol or (not gradient and move < 1e-5 and abs(total - previous) < 1e-11):
            break
        previous = total
        mu, S = m, V
        C = _chol_in_order(S, order)
        groups, post, b, eta = _quadrature(data, fixed, Ginv, logdet_G, mu, C, nodes, logw, gradient)
        m, V = _moments(post, b)
    else:
        raise FitError(f"the mean-variance adaptation did not settle in {max_rounds} rounds", engine="quadrature")
    grads = _gradient(data, Ginv, post, eta, m, V) if gradient and eta is not None else (None, None)
    return Marginal(float(groups.sum()), groups, u, H, m, V, rounds, *grads)
