"""Conditional modes of a GLMM's random effects by penalized iteratively reweighted least squares.

One grouping level, ``q`` random effects per group: ``eta_i = x_i'beta + offset_i + z_i' Lambda u_j``
with ``u_j ~ N(0, I)`` and ``Lambda Lambda' = G``. For fixed ``(beta, Lambda)`` the conditional
mode ``u_j`` maximizes ``sum_i log f(y_i | eta_i) - |u_j|^2 / 2`` group by group; PIRLS takes
Newton steps with the Fisher weights ``W = mu_eta^2 / V(mu)`` (glmer's; for the canonical links
logit and log they are the observed information, so the steps are Newton's), halving a group's
step while its penalized log likelihood falls. At the mode, ``H_j = Lambda' Z_j' W Z_j Lambda + I``
is the curvature glmer's Laplace approximation and adaptive quadrature use.

Everything is vectorized over groups: the rows are sorted by group once (:class:`GroupedData`)
and the per-group sums are ``np.add.reduceat``.

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> y = np.array([1.0, 0, 1, 1, 0, 0])
>>> data = grouped_data(y, np.ones((6, 1)), np.ones((6, 1)), np.array([0, 0, 1, 1, 2, 2]), 3, family("binomial"))
>>> u, H, obj = conditional_modes(data, np.array([0.0]), np.eye(1))
>>> np.round(u[:, 0], 4).tolist()      # groups (1, 0), (1, 1), (0, 0): 2 (1 - expit(u)) = u for (1, 1)
[0.0, 0.6748, -0.6748]
"""

from __future__ import annotations

from collections.abc import Callable

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from hlmbridge.errors import FitError
from hlmbridge.families import Family

__all__ = ["GroupedData", "conditional_modes", "fixed_only_glm", "grouped_data", "penalized_objective",
           "row_constant", "row_loglik", "score_and_weight"]


@dataclass(frozen=True, eq=False)
class GroupedData:
    """A GLMM's rows sorted by group: what the likelihood needs, in the order it sums them.

    ``order`` maps the sorted rows back to the design's (``sorted = original[order]``);
    ``starts`` are the first sorted row of each group (for ``np.add.reduceat``).
    """

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    offset: np.ndarray
    codes: np.ndarray
    starts: np.ndarray
    n_groups: int
    family: Family
    order: np.ndarray
    constant: np.ndarray  # the part of each row's log density free of eta (e.g. -log y! for Poisson)
    #: With one group holding every effect (several grouping levels at once): Z as a sparse
    #: matrix (a row has one non-zero per level and term), for Z'WZ without dense products.
    Z_sparse: Any = None
    #: A binomial response's numbers of trials (``y`` is then the proportion of successes);
    #: None for one trial a row (0/1) and for Poisson counts.
    weights: np.ndarray | None = None

    @property
    def q(self) -> int:
        """Random effects per group."""
        return int(self.Z.shape[1])

    def group_sum(self, values: np.ndarray) -> np.ndarray:
        """Sums of ``values`` (rows first) over each group's rows."""
        return np.add.reduceat(values, self.starts, axis=0)


def grouped_data(y: np.ndarray, X: np.ndarray, Z: np.ndarray, codes: np.ndarray, n_groups: int, fam: Family,
                 offset: np.ndarray | None = None, trials: np.ndarray | None = None) -> GroupedData:
    """Sort a GLMM's rows by group (stable, so rows keep their order within a group).

    ``trials``: a binomial response's numbers of trials (``y`` the proportion of successes)."""
    codes = np.asarray(codes, dtype=np.int64)
    sizes = np.bincount(codes, minlength=n_groups)
    if np.any(sizes == 0):
        raise FitError(f"{int(np.sum(sizes == 0))} group(s) have no observations", engine="quadrature")
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ys = np.asarray(y, dtype=float)[order]
    off = np.zeros(len(ys)) if offset is None else np.asarray(offset, dtype=float)[order]
    n_trials = None if trials is None else np.asarray(trials, dtype=float)[order]
    constant = row_constant(fam, ys, n_trials)
    Zs = np.ascontiguousarray(np.asarray(Z, dtype=float)[order])
    sparse_z = None
    if n_groups == 1 and Zs.shape[1] > 1:
        from scipy import sparse

        sparse_z = sparse.csr_matrix(Zs)
    return GroupedData(ys, np.ascontiguousarray(np.asarray(X, dtype=float)[order]), Zs, off, codes[order], starts,
                       int(n_groups), fam, order, constant, sparse_z, n_trials)


def row_constant(fam: Family, y: np.ndarray, trials: np.ndarray | None) -> np.ndarray:
    """The part of each row's log density free of eta: ``-log y!`` (Poisson), the log binomial
    coefficient ``log C(n, s)`` with ``n`` trials and ``s = y n`` successes (as R's
    ``binomial()$aic`` and so glmer's log likelihood count it; 0 for a 0/1 response).

    >>> import numpy as np
    >>> from hlmbridge.families import family
    >>> round(float(np.exp(row_constant(family("binomial"), np.array([0.4]), np.array([5.0]))[0])), 10)  # C(5, 2)
    10.0
    """
    if fam.name == "poisson":
        return -special.gammaln(y + 1)
    if trials is None:
        return np.zeros(len(y))
    s = np.round(y * trials)
    return special.gammaln(trials + 1) - special.gammaln(s + 1) - special.gammaln(trials - s + 1)


def _canonical(fam: Family) -> str | None:
    if fam.name == "binomial" and fam.link.name == "logit":
        return "logit"
    if fam.name == "poisson" and fam.link.name == "log":
        return "log"
    return None


def _trials(data: Any, like: np.ndarray) -> np.ndarray | float:
    w = getattr(data, "weights", None)
    return 1.0 if w is None else w.reshape(like.shape)


def row_loglik(data: GroupedData, eta: np.ndarray) -> np.ndarray:
    """log f(y_i | eta) for each row (``eta`` rows first; further axes, e.g. quadrature points, broadcast)."""
    y = data.y.reshape((-1,) + (1,) * (eta.ndim - 1))
    const = data.constant.reshape(y.shape)
    n = _trials(data, y)
    kind = _canonical(data.family)
    if kind == "logit":  # y eta - log(1 + e^eta), stably (np.logaddexp is three times slower)
        out = y * eta - np.maximum(eta, 0.0) - np.log1p(np.exp(-np.abs(eta)))
        return out if data.weights is None else n * out + const
    if kind == "log":
        return y * eta - np.exp(np.minimum(eta, 700.0)) + const
    w = None if data.weights is None else np.broadcast_to(n, eta.shape)
    return data.family.loglik(np.broadcast_to(y, eta.shape), data.family.link.linkinv(eta), w,
                              binomial_constant=False) + const


def score_and_weight(data: GroupedData, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d log f / d eta and the Fisher weight mu_eta^2 / V(mu) of each row, times its trials
    (``eta`` rows first; further axes broadcast)."""
    y = data.y.reshape((-1,) + (1,) * (eta.ndim - 1))
    n = _trials(data, y)
    kind = _canonical(data.family)
    if kind == "logit":
        mu = special.expit(eta)
        return n * (y - mu), n * (mu * (1 - mu))
    if kind == "log":
        mu = np.exp(np.minimum(eta, 700.0))
        return y - mu, mu
    link = data.family.link
    mu = link.linkinv(eta)
    d = link.mu_eta(eta)
    v = data.family.variance(mu)
    return n * ((y - mu) * d / v), n * (d * d / v)


def penalized_objective(data: GroupedData, fixed: np.ndarray, zl: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Each group's ``sum_i log f(y_i | eta_i) - |u_j|^2 / 2`` at ``u`` (groups x q)."""
    eta = fixed + np.einsum("iq,iq->i", zl, u[data.codes])
    return data.group_sum(row_loglik(data, eta)) - 0.5 * np.einsum("jq,jq->j", u, u)


def conditional_modes(data: GroupedData, beta: np.ndarray, lam: np.ndarray, u0: np.ndarray | None = None,
                      tol: float = 1e-11, max_iter: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The conditional modes ``u`` (groups x q, spherical scale), the curvature ``H`` (groups x q x q)
    at them and each group's penalized log likelihood there; ``u0`` a start (zeros when None).

    Raises FitError when PIRLS does not converge (a step larger than ``tol`` after ``max_iter``).
    """
    if data.Z_sparse is not None:
        return _modes_one_group(data, beta, lam, u0, tol, max_iter)
    q = data.q
    fixed = data.X @ beta + data.offset
    zl = data.Z @ lam
    u = np.zeros((data.n_groups, q)) if u0 is None else np.array(u0, dtype=float)
    obj = penalized_objective(data, fixed, zl, u)
    eye = np.eye(q)
    # one group holding every effect (several grouping levels as one): Z'WZ by a product, not
    # by the rows' outer products
    outer = zl[:, :, None] * zl[:, None, :] if data.n_groups > 1 else None

    def curvature(w: np.ndarray) -> np.ndarray:
        if outer is None:
            return ((zl.T * w) @ zl)[None] + eye
        return data.group_sum(outer * w[:, None, None]) + eye

    for _ in range(max_iter):
        eta = fixed + np.einsum("iq,iq->i", zl, u[data.codes])
        s, w = score_and_weight(data, eta)
        grad = data.group_sum(zl * s[:, None]) - u
        H = curvature(w)
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        t = np.ones(data.n_groups)
        for _half in range(40):
            new = u + t[:, None] * step
            obj_new = penalized_objective(data, fixed, zl, new)
            worse = ~(obj_new >= obj - 1e-13 * np.abs(obj))
            if not worse.any():
                break
            t[worse] *= 0.5
        u, obj = new, obj_new
        if float(np.max(np.abs(t[:, None] * step))) < tol:
            break
    else:
        raise FitError(f"PIRLS did not find the conditional modes in {max_iter} iterations", engine="quadrature")
    eta = fixed + np.einsum("iq,iq->i", zl, u[data.codes])
    _, w = score_and_weight(data, eta)
    return u, curvature(w), obj


def newton_with_halving(u: np.ndarray, objective: Callable[[np.ndarray], float],
                        direction: Callable[[np.ndarray], np.ndarray], tol: float,
                        max_iter: int) -> tuple[np.ndarray, float]:
    """PIRLS's iteration for the conditional modes: from ``u``, Newton steps ``direction(u)``
    on the penalized log likelihood ``objective``, each halved (up to 40 times) until the
    objective does not fall, until a step moves no effect by ``tol``. Returns the modes and the
    objective there; FitError after ``max_iter`` steps."""
    obj = objective(u)
    for _ in range(max_iter):
        step = direction(u)
        t = 1.0
        for _half in range(40):
            new = u + t * step
            obj_new = objective(new)
            if obj_new >= obj - 1e-13 * abs(obj):
                break
            t *= 0.5
        u, obj = new, obj_new
        if float(np.max(np.abs(t * step))) < tol:
            return u, obj
    raise FitError(f"PIRLS did not find the conditional modes in {max_iter} iterations", engine="quadrature")


def _modes_one_group(data: GroupedData, beta: np.ndarray, lam: np.ndarray, u0: np.ndarray | None, tol: float,
                     max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`conditional_modes` for one group holding every effect, with the sparse Z."""
    Z = data.Z_sparse
    q = data.q
    fixed = data.X @ beta + data.offset
    u = np.zeros(q) if u0 is None else np.array(u0, dtype=float).reshape(q)
    eye = np.eye(q)

    def objective(v: np.ndarray) -> float:
        return float(np.sum(row_loglik(data, fixed + Z @ (lam @ v)))) - 0.5 * float(v @ v)

    def curvature(w: np.ndarray) -> np.ndarray:
        ztwz = (Z.T @ Z.multiply(w[:, None])).toarray()
        return lam.T @ ztwz @ lam + eye

    def direction(v: np.ndarray) -> np.ndarray:
        s, w = score_and_weight(data, fixed + Z @ (lam @ v))
        return np.linalg.solve(curvature(w), lam.T @ (Z.T @ s) - v)

    u, obj = newton_with_halving(u, objective, direction, tol, max_iter)
    _, w = score_and_weight(data, fixed + Z @ (lam @ u))
    return u[None, :], curvature(w)[None], np.array([obj])


def fixed_only_glm(data: GroupedData, tol: float = 1e-12, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """The GLM without random effects by Fisher scoring (IRLS, step halving): its coefficients
    (the start of the GLMM's) and log likelihood (the LR test's comparison model).

    Raises FitError when it does not converge (e.g. complete separation)."""
    X = data.X
    beta = np.zeros(X.shape[1])
    fam = data.family
    if fam.name == "binomial" and data.weights is not None:  # R's binomial mustart, (n y + 1/2) / (n + 1)
        start = (data.weights * data.y + 0.5) / (data.weights + 1)
    elif fam.name == "binomial":
        start = np.clip(data.y, 0.05, 0.95)
    else:
        start = data.y + 0.5
    eta = fam.link.linkfun(start)  # R's mustart: the first step is the least-squares fit of the linked response
    beta = np.linalg.lstsq(X, eta - data.offset, rcond=None)[0]
    ll = float(np.sum(row_loglik(data, X @ beta + data.offset)))
    for _ in range(max_iter):
        eta = X @ beta + data.offset
        s, w = score_and_weight(data, eta)
        step = np.linalg.solve(X.T @ (X * w[:, None]), X.T @ s)
        t = 1.0
        while True:
            new = beta + t * step
            ll_new = float(np.sum(row_loglik(data, X @ new + data.offset)))
            if ll_new >= ll - 1e-12 * abs(ll) or t < 1e-8:
                break
            t *= 0.5
        beta, moved = new, abs(ll_new - ll)
        ll = ll_new
        if moved < tol * (abs(ll) + 0.1) and float(np.max(np.abs(t * step))) < 1e-8:
            return beta, ll
    raise FitError(f"the fixed-only GLM did not converge in {max_iter} iterations (separation?)", engine="quadrature")
