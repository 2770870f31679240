"""Newton polish of an engine's optimum with the analytic score and information.

lmer with its default settings stops within about 1e-5 of the optimum in the variance
parameters (a deviance 1e-7 short of it); its tight settings (bobyqa, rhoend 1e-12) get the
last digits with 2-4 times as many deviance evaluations. :func:`newton_polish` gets them
instead with one or two Newton steps on the profiled (ML) or restricted (REML) log
likelihood, whose score and observed information :func:`~hlmbridge.inference.stata_parity.evaluate`
computes in closed form (0.1-0.3 ms an evaluation on the seed's models).

It only polishes: it returns None, and the caller falls back to the tight optimizer, when
the start is not in the quadratic basin of an interior optimum: a boundary (singular) fit,
an information that is not positive definite, a step that would leave the parameter space
or lower the log likelihood, a total move larger than 1% of a standard error, or no
convergence within a few steps.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(0)
>>> g = np.repeat(np.arange(30), 6)
>>> df = pd.DataFrame({"y": rng.normal(size=180) + rng.normal(size=30)[g], "g": g})
>>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | g)", reml=False), df)
>>> exact = newton_polish(d, np.array([0.9, 1.0]), max_move_se=10.0)
>>> again = newton_polish(d, exact.theta * (1 + 1e-6))
>>> bool(np.allclose(again.theta, exact.theta, rtol=1e-9)), again.steps
(True, 1)
>>> newton_polish(d, np.array([0.0, 1.0])) is None       # a boundary start: not polished
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.errors import FitError
from hlmbridge.inference.optimum import is_feasible
from hlmbridge.inference.stata_parity import Inference, evaluate

__all__ = ["Polished", "newton_polish"]

#: Converged when the next Newton step would move no parameter by more than this fraction of
#: its own size (or of its standard error, when that is larger). A criterion on the gain alone
#: would not do: on a flat likelihood (BodyWeight's ``(Time | Rat)``) a gain of 2e-12 is still
#: a move of 7e-7 relative.
STEP_TOLERANCE = 1e-9
#: ... or when the predicted gain (half the Newton decrement) is below this after the last
#: step allowed: the score is then at its rounding noise.
GAIN_TOLERANCE = 1e-11


@dataclass(frozen=True)
class Polished:
    """The polished optimum and the evaluation at it (reusable as the fit's inference)."""

    theta: np.ndarray
    inference: Inference
    steps: int  # Newton steps taken
    gain: float  # log likelihood gained over the start
    move_se: float  # largest move of a parameter, in its standard errors


def newton_polish(design: Design, theta0: np.ndarray, *, min_steps: int = 1, max_steps: int = 6,
                  max_move_se: float = 0.01) -> Polished | None:
    """Newton's method on the profiled (ML) or restricted (REML) log likelihood from ``theta0``
    (in :func:`~hlmbridge.inference.stata_parity.variance_parameters` order). None when it
    cannot polish (see the module docstring); never a point worse than the start.

    At least ``min_steps`` steps are taken even when the start already looks converged: a
    start 1e-11 short in log likelihood can still be 1e-6 off in relative terms along a flat
    direction, and a step costs one evaluation."""
    theta0 = np.asarray(theta0, dtype=float)
    inf = _at(design, theta0)
    if inf is None:
        return None
    se = _standard_errors(inf)
    if se is None:
        return None
    done = _newton(theta0, inf, lambda theta: _at(design, theta), lambda theta, inf_: (inf_.score, inf_.information),
                   se=se, min_steps=min_steps, max_steps=max_steps, max_move_se=max_move_se, settle_on_gain=True)
    if done is None:
        return None
    theta, inf, steps, gain, move = done
    return Polished(theta, inf, steps, gain, move)


def _newton(u0: np.ndarray, inf0: Inference, at, derivatives, *, se: np.ndarray | None, min_steps: int,
            max_steps: int, max_move_se: float, settle_on_gain: bool
            ) -> tuple[np.ndarray, Inference, int, float, float] | None:
    """The Newton loop both polishes share: ``at(u)`` evaluates (None off the parameter space),
    ``derivatives(u, inf)`` gives the score and the information (minus the Hessian) in ``u``.

    Each step solves with the information's Cholesky factor (None where it is not positive
    definite) and is halved up to twice until the log likelihood does not fall. Converged when
    a step would move no parameter by more than STEP_TOLERANCE of its size or standard error
    (``se``; from the first information's inverse when None), or, with ``settle_on_gain``, when
    the predicted gain is below GAIN_TOLERANCE after the last step allowed. Returns the point,
    its evaluation, the steps taken, the gain over the start and the largest move in standard
    errors; None where the move exceeds ``max_move_se`` or it does not converge."""
    u, inf = u0.copy(), inf0
    for step_no in range(max_steps + 1):
        score, information = derivatives(u, inf)
        try:
            chol = np.linalg.cholesky(information)
        except np.linalg.LinAlgError:
            return None
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, score))
        if se is None:
            se = np.sqrt(np.diag(np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(len(u))))))
        gain = 0.5 * float(score @ step)
        small = bool(np.all(np.abs(step) <= STEP_TOLERANCE * np.maximum(np.abs(u), se)))
        settled = settle_on_gain and step_no == max_steps and gain < GAIN_TOLERANCE
        if step_no >= min_steps and (small or settled):
            move = float(np.max(np.abs(u - u0) / se))
            if move > max_move_se:
                return None
            return u, inf, step_no, inf.loglik - inf0.loglik, move
        if step_no == max_steps:
            return None
        for t in (1.0, 0.5, 0.25):
            trial = u + t * step
            trial_inf = at(trial)
            if trial_inf is not None and trial_inf.loglik >= inf.loglik - 1e-12 * abs(inf.loglik):
                u, inf = trial, trial_inf
                break
        else:
            return None
    return None


def _at(design: Design, theta: np.ndarray) -> Inference | None:
    if not is_feasible(design, theta):
        return None
    try:
        inf = evaluate(design, None, theta)
    except (FitError, np.linalg.LinAlgError, FloatingPointError):
        return None
    ok = np.isfinite(inf.loglik) and np.all(np.isfinite(inf.score)) and np.all(np.isfinite(inf.information))
    return inf if ok else None


def _standard_errors(inf: Inference) -> np.ndarray | None:
    var = np.diag(inf.random_vcov)
    if not np.all(np.isfinite(var)) or np.any(var <= 0):
        return None
    return np.sqrt(var)


# ------------------------------------------------------------------ boundary fits
#
# A boundary (singular) fit has a rank-deficient random-effects covariance: a zero variance
# or a correlation of +-1. The Newton steps above, in the variance parameters, would leave
# the positive semi-definite cone there. lme4's own parameters, the relative Cholesky
# factors (G = s2 L L' per correlated block, with the zero pivots of L held at zero), have no
# such edge: every L gives a valid G. newton_polish_boundary() polishes in them, with the
# chain rule taking the score and information from the variance parameters' closed forms.


@dataclass(frozen=True)
class _Coordinate:
    block: int  # index into the layout: (level, the block's columns in lme4 term order)
    i: int
    j: int  # position in the block's lower triangle (i >= j)


def _block_layout(design: Design) -> list[tuple[int, tuple[int, ...]]] | None:
    out = []
    for li, ld in enumerate(design.levels):
        q = ld.Z.shape[1]
        if ld.cov in ("identity", "exchangeable") and q > 1:
            return None  # shared parameters: no Cholesky factor per block
        blocks = ld.blocks or (tuple(range(q)),)
        out.extend((li, tuple(b)) for b in blocks)
    return out


def _psd_cholesky(g: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower-triangular L with L L' = g for a positive semi-definite g, and which pivots are zero
    (their columns are set to zero; the remaining columns absorb them)."""
    m = g.shape[0]
    L = np.zeros((m, m))
    zero = np.zeros(m, dtype=bool)
    for j in range(m):
        d = g[j, j] - L[j, :j] @ L[j, :j]
        if d <= tol:
            zero[j] = True
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1:, j] = (g[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L, zero


def newton_polish_boundary(design: Design, theta0: np.ndarray, *, max_steps: int = 8,
                           max_move_se: float = 0.01) -> Polished | None:
    """:func:`newton_polish` for a boundary fit: Newton steps in lme4's parameters (relative
    Cholesky factors, zero pivots held at zero, and the residual variance). None when it cannot
    polish, or when moving a zero pivot off zero would raise the log likelihood (then the
    optimum is not on this boundary)."""
    from hlmbridge.inference.stata_parity import level_covariances, theta_from_matrices

    layout = _block_layout(design)
    if layout is None:
        return None
    theta0 = np.asarray(theta0, dtype=float)
    s2 = float(theta0[-1])
    if not s2 > 0:
        return None
    covs = level_covariances(design, theta0)
    factors: list[np.ndarray] = []
    coords: list[_Coordinate] = []
    fixed_pivots: list[tuple[int, int]] = []  # (block, pivot) held at zero
    for b, (li, cols) in enumerate(layout):
        g = covs[li][np.ix_(cols, cols)] / s2
        scale = max(1.0, float(np.max(np.abs(np.diag(g)))))
        L, zero = _psd_cholesky(g, 1e-10 * scale)
        factors.append(L)
        for j in range(len(cols)):
            if zero[j]:
                fixed_pivots.append((b, j))
                continue
            coords.extend(_Coordinate(b, i, j) for i in range(j, len(cols)))

    def params(Ls: list[np.ndarray], s2_: float) -> np.ndarray:
        mats = [np.zeros_like(c) for c in covs]
        for (li, cols), L in zip(layout, Ls, strict=True):
            mats[li][np.ix_(cols, cols)] = s2_ * (L @ L.T)
        return theta_from_matrices(design, mats, s2_)

    def project(block: int, dG: np.ndarray, ds2: float) -> np.ndarray:
        mats = [np.zeros_like(c) for c in covs]
        li, cols = layout[block]
        mats[li][np.ix_(cols, cols)] = dG
        return theta_from_matrices(design, mats, ds2)

    def unpack(u: np.ndarray) -> tuple[list[np.ndarray], float]:
        Ls = [L.copy() for L in factors]
        for k, c in enumerate(coords):
            Ls[c.block][c.i, c.j] = u[k]
        return Ls, float(u[-1])

    def derivatives(u: np.ndarray, inf: Inference) -> tuple[np.ndarray, np.ndarray]:
        """Score and information (minus the Hessian) of the log likelihood in ``u`` (chain rule
        through G = s2 L L')."""
        Ls, s2_ = unpack(u)
        K = len(coords) + 1
        J = np.zeros((len(theta0), K))
        second = np.zeros((K, K, len(theta0)))
        units = []
        for k, c in enumerate(coords):
            b = c.block
            E = np.zeros_like(Ls[b])
            E[c.i, c.j] = 1.0
            units.append((b, E))
            d_L = E @ Ls[b].T + Ls[b] @ E.T
            J[:, k] = project(b, s2_ * d_L, 0.0)
            second[k, K - 1] = second[K - 1, k] = project(b, d_L, 0.0)
        J[-1, K - 1] = 1.0
        for k, (b, Ek) in enumerate(units):
            for l in range(k, len(units)):
                bl_, El = units[l]
                if bl_ != b:
                    continue
                d2 = s2_ * (Ek @ El.T + El @ Ek.T)
                second[k, l] = second[l, k] = project(b, d2, 0.0)
        for b in range(len(layout)):  # dG/ds2 = L L' for every block
            J[:, K - 1] += project(b, Ls[b] @ Ls[b].T, 0.0)
        score = J.T @ inf.score
        information = J.T @ inf.information @ J - np.einsum("klp,p->kl", second, inf.score)
        return score, information

    u0 = np.array([factors[c.block][c.i, c.j] for c in coords] + [s2])
    inf0 = _at(design, params(*unpack(u0)))
    if inf0 is None:
        return None
    done = _newton(u0, inf0, lambda u: _at(design, params(*unpack(u))), derivatives, se=None,
                   min_steps=1, max_steps=max_steps, max_move_se=max_move_se, settle_on_gain=False)
    if done is None:
        return None
    u, inf, step_no, gain, move = done
    # On the boundary for a reason: a zero pivot moved off zero must not raise the likelihood.
    Ls, s2_ = unpack(u)
    for b, j in fixed_pivots:
        trial = [L.copy() for L in Ls]
        trial[b][j, j] = 1e-3 * max(1.0, float(np.max(np.abs(np.diag(Ls[b])))))
        off = _at(design, params(trial, s2_))
        if off is not None and off.loglik > inf.loglik + 1e-12 * max(1.0, abs(inf.loglik)):
            return None
    return Polished(params(Ls, s2_), inf, step_no, gain, move)
