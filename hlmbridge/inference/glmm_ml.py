"""Maximum likelihood for a GLMM on hlmbridge's own integrals, with the full observed information.

The parameters are the fixed effects ``beta`` and the random effects' covariance ``G`` of one
grouping level (of several, :class:`LevelsForm`: each level's covariance, Laplace's
approximation by :mod:`hlmbridge.inference.glmm_levels`; there BFGS takes forward-difference
gradients to a loose tolerance first, then central ones from there). The
optimizer works on an unconstrained form of ``G``: the Cholesky factor of each correlated block
with its diagonal on the log scale (:class:`CovarianceForm`), by BFGS on the marginal log
likelihood (:func:`~hlmbridge.inference.glmm_quadrature.marginal_loglik`) with
central-difference gradients (Laplace) or analytic ones with the quadrature points held
(adaptive quadrature), and ends with Newton steps in the reported parameters. The standard
errors come from the inverse of the observed information of ``(beta, variance parameters)``
(in the variances and covariances hlmbridge reports), as Stata's and glmer's do: the full
information, not the fixed-effects block alone. For Laplace and mode-curvature quadrature it
is taken as glmer's (numDeriv's Hessian of its deviance) is, by central second differences of
the log likelihood, every point integrated afresh. For mvaghermite it is taken as Stata's
optimizer takes its derivatives, with the points held where the mean-variance iteration put
them (central differences of the analytic gradient), and the estimates are where that gradient
vanishes at the iteration's fixed point (a small fraction of an SE from the maximum of the
iterated log likelihood). On the hospital data 47 of the 54 numbers ``xtlogit, re
intpoints(12)`` prints come out to every printed digit and the other 7 within their last
digits (``melogit``'s own table, which differs from xtlogit's in the 6th-7th digit: 24 of 46).

Examples
--------
>>> import numpy as np
>>> form = CovarianceForm(2, ((0, 1),))
>>> G = np.array([[2.0, 0.5], [0.5, 1.0]])
>>> bool(np.allclose(form.covariance(form.from_covariance(G)), G))
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from hlmbridge.errors import FitError
from hlmbridge.inference.glmm_levels import LevelsData, levels_laplace
from hlmbridge.inference.glmm_pirls import GroupedData
from hlmbridge.inference.glmm_quadrature import Marginal, marginal_loglik

__all__ = ["CovarianceForm", "GlmmFit", "LevelsForm", "fit_glmm", "observed_information"]


@dataclass(frozen=True)
class CovarianceForm:
    """A q x q covariance made of independent blocks (tuples of column indices), each
    unstructured; parametrized by each block's Cholesky factor, log diagonal."""

    q: int
    blocks: tuple[tuple[int, ...], ...]

    @property
    def n_params(self) -> int:
        """Free parameters."""
        return sum(len(b) * (len(b) + 1) // 2 for b in self.blocks)

    def covariance(self, phi: np.ndarray) -> np.ndarray:
        """G from the unconstrained parameters."""
        G = np.zeros((self.q, self.q))
        pos = 0
        for blk in self.blocks:
            m = len(blk)
            L = np.zeros((m, m))
            for i in range(m):
                for j in range(i + 1):
                    L[i, j] = np.exp(phi[pos]) if i == j else phi[pos]
                    pos += 1
            G[np.ix_(blk, blk)] = L @ L.T
        return G

    def chain(self, phi: np.ndarray, M: np.ndarray) -> np.ndarray:
        """d f / d phi from the symmetric ``M`` with df = tr(M dG) (G = L L' per block:
        df/dL = 2 M L on the lower triangle, times L_ii on the log diagonal)."""
        out = np.empty(self.n_params)
        pos = 0
        for blk in self.blocks:
            m = len(blk)
            L = np.zeros((m, m))
            p0 = pos
            for i in range(m):
                for j in range(i + 1):
                    L[i, j] = np.exp(phi[pos]) if i == j else phi[pos]
                    pos += 1
            D = 2 * M[np.ix_(blk, blk)] @ L
            pos = p0
            for i in range(m):
                for j in range(i + 1):
                    out[pos] = D[i, j] * L[i, i] if i == j else D[i, j]
                    pos += 1
        return out

    def from_covariance(self, G: np.ndarray) -> np.ndarray:
        """The unconstrained parameters of a positive definite G."""
        out = []
        for blk in self.blocks:
            L = np.linalg.cholesky(G[np.ix_(blk, blk)])
            m = len(blk)
            for i in range(m):
                for j in range(i + 1):
                    out.append(np.log(L[i, j]) if i == j else L[i, j])
        return np.array(out)


@dataclass(frozen=True)
class LevelsForm:
    """Several grouping levels' covariances, one ``q_l x q_l`` matrix per level (each repeated over
    its level's groups: what Laplace's approximation over every effect at once integrates,
    :mod:`hlmbridge.inference.glmm_levels`). The covariance is the list of the levels' matrices."""

    forms: tuple[CovarianceForm, ...]
    groups: tuple[int, ...]

    @property
    def n_params(self) -> int:
        """Free parameters."""
        return sum(f.n_params for f in self.forms)

    def covariance(self, phi: np.ndarray) -> list[np.ndarray]:
        """Each level's covariance from the unconstrained parameters."""
        mats, pos = [], 0
        for f in self.forms:
            mats.append(f.covariance(phi[pos:pos + f.n_params]))
            pos += f.n_params
        return mats

    def from_covariance(self, G: list[np.ndarray]) -> np.ndarray:
        """The unconstrained parameters of each level's positive definite covariance."""
        return np.concatenate([f.from_covariance(Gl) for f, Gl in zip(self.forms, G)])


@dataclass(frozen=True, eq=False)
class GlmmFit:
    """The maximum: estimates, the marginal at them, the covariance of (beta, theta) and how it went."""

    beta: np.ndarray
    G: np.ndarray | list[np.ndarray]  # several levels: each level's covariance
    theta: np.ndarray
    loglik: float
    marginal: Marginal
    vcov: np.ndarray  # of (beta, theta), the inverse observed information
    converged: bool
    evaluations: int
    iterations: int
    gradient: np.ndarray  # of the log likelihood in (beta, theta) at the estimates
    seconds: float
    warnings: tuple[str, ...] = ()


class _Objective:
    """The log likelihood with warm starts (PIRLS and the mean-variance adaptation start where
    the previous evaluation ended; both iterate to their fixed point, so the value does not
    depend on the start beyond their tolerances)."""

    def __init__(self, data: GroupedData | LevelsData, method: str, points: int, stata_order: np.ndarray) -> None:
        self.data, self.method, self.points, self.order = data, method, points, stata_order
        self.u: np.ndarray | None = None
        self.adapt: tuple[np.ndarray, np.ndarray] | None = None
        self.anchored = False
        self.evaluations = 0

    def anchor(self, on: bool) -> None:
        """While on, every evaluation starts from the adaptation of the last one before (the
        centre of a difference stencil, nearer to each of its points than they are to each other)."""
        self.anchored = on

    def __call__(self, beta: np.ndarray, G: np.ndarray, gradient: bool = False, modes: bool = False,
                 hold: tuple[np.ndarray, np.ndarray] | None = None) -> Marginal:
        self.evaluations += 1
        if isinstance(self.data, LevelsData):  # several levels: Laplace, sparse
            m = levels_laplace(self.data, beta, G, u0=self.u)
            if not self.anchored:
                self.u = m.u
            return m
        if hold is not None:  # the quadrature at these points, not iterated (nothing remembered)
            return marginal_loglik(self.data, beta, G, self.method, self.points, self.order, adapt0=hold,
                                   gradient=gradient, modes=False, hold=True)
        m = marginal_loglik(self.data, beta, G, self.method, self.points, self.order, u0=self.u, adapt0=self.adapt,
                            gradient=gradient, modes=modes)
        if np.isfinite(m.loglik) and not self.anchored:
            if m.u is not None:
                self.u = m.u
            if m.mean is not None and m.var is not None and self.method == "mvaghermite":
                self.adapt = (m.mean, m.var)
        return m


def _central_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    g = np.empty(len(x))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = h[i]
        g[i] = (f(x + e) - f(x - e)) / (2 * h[i])
    return g


def _positive_definite(A: np.ndarray) -> np.ndarray | None:
    """``A`` symmetrized when it is positive definite (a BFGS inverse Hessian to start from), else None."""
    A = 0.5 * (A + A.T)
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None
    return A if np.all(np.isfinite(A)) else None


def _forward_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray, f0: float) -> np.ndarray:
    g = np.empty(len(x))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = h[i]
        g[i] = (f(x + e) - f0) / h[i]
    return g


def observed_information(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray,
                         f0: float | None = None) -> np.ndarray:
    """Minus the Hessian of ``f`` at ``x`` by central second differences with steps ``h``."""
    n = len(x)
    f0 = f(x) if f0 is None else f0
    H = np.empty((n, n))
    E = np.diag(h)
    plus = [f(x + E[i]) for i in range(n)]
    minus = [f(x - E[i]) for i in range(n)]
    for i in range(n):
        H[i, i] = (plus[i] - 2 * f0 + minus[i]) / h[i] ** 2
        for j in range(i):
            # second order, reusing the axis points: two new evaluations a pair
            v = (f(x + E[i] + E[j]) + f(x - E[i] - E[j]) - plus[i] - minus[i] - plus[j] - minus[j] + 2 * f0)
            H[i, j] = H[j, i] = v / (2 * h[i] * h[j])
    return -H


def fit_glmm(data: GroupedData | LevelsData, form: CovarianceForm | LevelsForm,
             to_theta: Callable[[Any], np.ndarray], from_theta: Callable[[np.ndarray], Any], beta0: np.ndarray,
             G0: Any, method: str, points: int, stata_order: np.ndarray, max_iterations: int = 500) -> GlmmFit:
    """Maximize the marginal log likelihood by ``method``: BFGS in the unconstrained form, then
    Newton steps in the reported parameters.

    ``to_theta(G)``/``from_theta(theta)`` map the covariance to hlmbridge's variance parameters
    and back (the reported scale, on which the information and the Newton steps are taken).
    """
    t0 = time.perf_counter()
    p = len(beta0)
    warns: list[str] = []
    evaluations = 0
    iterations = 0
    x = np.concatenate([beta0, form.from_covariance(G0)])
    obj = _Objective(data, method, points, stata_order)
    levels = isinstance(data, LevelsData)

    def negll(z: np.ndarray) -> float:
        try:
            val = obj(z[:p], form.covariance(z[p:])).loglik
        except (np.linalg.LinAlgError, FloatingPointError, FitError):
            return np.inf
        return -val if np.isfinite(val) else np.inf

    def value_and_gradient(z: np.ndarray) -> tuple[float, np.ndarray]:
        if levels and forward[0]:  # several levels (Laplace): first forward differences, half the cost
            f0 = negll(z)
            return f0, _forward_gradient(negll, z, 1e-7 * np.maximum(1.0, np.abs(z)), f0)
        if method in ("laplace", "ghermite"):  # the mode (the prior's points) moves at first order
            return negll(z), _central_gradient(negll, z, 1e-5 * np.maximum(1.0, np.abs(z)))
        # adaptive quadrature: the analytic gradient with the points held (their own effect is of
        # the order of the quadrature error; the Newton steps below settle it)
        try:
            m = obj(z[:p], form.covariance(z[p:]), gradient=True)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):
            return np.inf, np.full(len(z), np.nan)
        if not np.isfinite(m.loglik):
            return np.inf, np.full(len(z), np.nan)
        assert m.grad_beta is not None and m.grad_G is not None
        assert isinstance(form, CovarianceForm)  # several levels are fitted by Laplace only
        return -m.loglik, -np.concatenate([m.grad_beta, form.chain(z[p:], m.grad_G)])

    forward = [levels]
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        if levels:
            # several levels: forward differences to a loose tolerance (most of the way at half the
            # cost), then central differences from there with BFGS's curvature so far, to the same
            # tolerance as one level (which takes a variance that goes to 0 to the boundary)
            res = optimize.minimize(value_and_gradient, x, jac=True, method="BFGS",
                                    options={"gtol": 1e-4, "maxiter": max_iterations})
            iterations += int(res.nit)
            forward[0] = False
            x = res.x
            hess_inv0 = _positive_definite(np.asarray(res.hess_inv))
            res = optimize.minimize(value_and_gradient, x, jac=True, method="BFGS",
                                    options={"gtol": 1e-7, "maxiter": max_iterations, "hess_inv0": hess_inv0})
        else:
            res = optimize.minimize(value_and_gradient, x, jac=True, method="BFGS",
                                    options={"gtol": 1e-7, "maxiter": max_iterations})
    evaluations += obj.evaluations
    iterations += int(res.nit)
    x = res.x
    # Newton in the reported parameters (beta, theta): the last digits, and the information.
    obj = _Objective(data, method, points, stata_order)
    beta, G = x[:p], form.covariance(x[p:])
    z = np.concatenate([beta, to_theta(G)])

    def ll(w: np.ndarray) -> float:
        try:
            return obj(w[:p], from_theta(w[p:])).loglik
        except (np.linalg.LinAlgError, FitError):
            return -np.inf

    # the information's steps: on several levels the log likelihood carries ~1e-12 of rounding
    # (PIRLS over hundreds of effects), which 1e-4 steps turn into 1e-4 errors of an SE where
    # covariates are far from centred (VerbAgg's Anger and intercept); 1e-3 steps leave the
    # second differences' own error below 1e-7 relative there
    h2 = (1e-3 if levels else 1e-4) * np.maximum(np.abs(z), 0.1)
    h1 = 1e-5 * np.maximum(np.abs(z), 0.1)
    # each level's covariance with the columns of Z its effects multiply (one level: G itself)
    pairs = (list(zip(G, data.level_Z)) if isinstance(data, LevelsData) else [(G, data.Z)])
    floor = np.inf
    for Gl, Zl in pairs:
        sd = np.sqrt(np.diag(Gl))
        reach = sd * np.max(np.abs(Zl), axis=0)  # the largest move of the linear predictor a SD makes
        corr_min = float(np.linalg.eigvalsh(Gl / np.outer(sd, sd))[0]) if np.all(sd > 0) else 0.0
        if np.any(reach < 1e-4) or corr_min < 1e-6:
            return _boundary_fit(obj, form, beta, G, to_theta, res, t0, evaluations, iterations, warns)
        floor = min(floor, float(np.linalg.eigvalsh(Gl)[0]))
    # variance steps that keep G positive definite (each pattern has eigenvalues within [-1, 1])
    floor = 0.01 * floor
    h2[p:] = np.minimum(h2[p:], floor)
    h1[p:] = np.minimum(h1[p:], floor)
    held = method == "mvaghermite"
    patterns = [from_theta(e) for e in np.eye(len(z) - p)]  # dG / dtheta_k (G is linear in theta)

    def anchored(fn: Callable[[], np.ndarray]) -> np.ndarray:
        obj.anchor(True)
        try:
            return fn()
        finally:
            obj.anchor(False)

    def natural(m: Marginal) -> np.ndarray:
        assert m.grad_beta is not None and m.grad_G is not None
        return np.concatenate([m.grad_beta, [float(np.sum(m.grad_G * P)) for P in patterns]])

    def state(w: np.ndarray) -> tuple[float, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The log likelihood, its gradient and (mvaghermite) the points' adaptation at ``w``."""
        if held:  # the analytic gradient with the points held at their fixed point
            m = obj(w[:p], from_theta(w[p:]), gradient=True)
            assert m.mean is not None and m.var is not None
            return m.loglik, natural(m), (m.mean, m.var)
        return ll(w), anchored(lambda: _central_gradient(ll, w, h1)), None

    def information(w: np.ndarray, f_w: float, adapt: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        if adapt is None:
            return anchored(lambda: observed_information(ll, w, h2, f_w))
        # mvaghermite: as Stata's optimizer takes its derivatives, with the points held where the
        # iteration put them: central differences of the analytic gradient
        out = np.empty((len(w), len(w)))
        for i in range(len(w)):
            e = np.zeros(len(w))
            e[i] = h1[i]
            up = natural(obj((w + e)[:p], from_theta((w + e)[p:]), gradient=True, hold=adapt))
            down = natural(obj((w - e)[:p], from_theta((w - e)[p:]), gradient=True, hold=adapt))
            out[:, i] = -(up - down) / (2 * h1[i])
        return 0.5 * (out + out.T)

    f0, g, adapt = state(z)
    info = information(z, f0, adapt)
    info_at = z.copy()
    converged = False
    se = np.full(len(z), np.nan)
    for _step in range(12):
        try:
            delta = np.linalg.solve(info, g)
            se = np.sqrt(np.abs(np.diag(np.linalg.inv(info))))
        except np.linalg.LinAlgError:
            break
        if not (np.all(np.isfinite(delta)) and np.all(np.isfinite(se))):
            break
        # the step in standard errors: below 1e-6 SE nothing moves that a printed digit shows
        if float(np.max(np.abs(delta) / np.maximum(se, 1e-300))) < 1e-6:
            converged = True
            break
        t = 1.0
        # mvaghermite solves "held gradient = 0", whose root is within a small fraction of an SE
        # of the log likelihood's maximum but not at it: near the root its steps are taken whole
        small = held and float(np.max(np.abs(delta) / np.maximum(se, 1e-300))) < 0.1
        while not small and t > 1e-3 and not ll(z + t * delta) >= f0 - 1e-9:
            t *= 0.5
        z = z + t * delta
        f0, g, adapt = state(z)
        if float(np.max(np.abs(z - info_at) / np.maximum(se, 1e-300))) > 1e-2:
            info = information(z, f0, adapt)  # far from where the information was taken
            info_at = z.copy()
    else:
        warns.append("the Newton steps at the end of the quadrature engine's optimization did not settle in 12 "
                     "steps: the estimates may not be the maximum to the digits printed")
    moved = float(np.max(np.abs(z - info_at) / np.maximum(se, 1e-300))) if converged else 0.0
    if moved > 1e-4:
        info = information(z, f0, adapt)  # the information at the estimates reported
    evaluations += obj.evaluations
    beta, theta = z[:p], z[p:]
    G = from_theta(theta)
    final = obj(beta, G, modes=True)
    try:
        vcov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        vcov = np.full(info.shape, np.nan)
    if not np.all(np.isfinite(vcov)) or np.any(np.diag(vcov) <= 0):
        warns.append("the observed information at the estimates is not positive definite: the standard errors "
                     "are not reliable")
    return GlmmFit(beta, G, theta, final.loglik, final, vcov, converged, evaluations, iterations, g,
                   time.perf_counter() - t0, tuple(warns))


def _boundary_fit(obj: _Objective, form: CovarianceForm | LevelsForm, beta: np.ndarray, G: np.ndarray,
                  to_theta: Callable[[np.ndarray], np.ndarray], res: Any, t0: float, evaluations: int,
                  iterations: int, warns: list[str]) -> GlmmFit:
    """The maximum on the boundary (a variance at 0 or a correlation at +-1): the BFGS estimates,
    the fixed effects' covariance from their information with G held, none for G."""
    p = len(beta)
    h = 1e-4 * np.maximum(np.abs(beta), 0.1)

    def llb(b: np.ndarray) -> float:
        return obj(b, G).loglik

    info = observed_information(llb, beta, h)
    theta = to_theta(G)
    vcov = np.full((p + len(theta), p + len(theta)), np.nan)
    try:
        vcov[:p, :p] = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        pass
    warns.append("the random effects' covariance is singular at the estimates (a variance at 0 or a correlation at "
                 "+-1, on the boundary of its space): the variance parameters have no standard errors, and the fixed "
                 "effects' come from their information with the covariance held at its estimate")
    final = obj(beta, G, modes=True)
    grad = np.full(p + len(theta), np.nan)
    return GlmmFit(beta, G, theta, final.loglik, final, vcov, bool(res.success), evaluations + obj.evaluations,
                   iterations, grad, time.perf_counter() - t0, tuple(warns))
