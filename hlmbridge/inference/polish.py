"""Newton polish of an engine's optimum with the analytic score and information.

lmer with its default settings stops within about 1e-5 of the optimum in the variance
parameters (a deviance 1e-7 short of it); its tight settings (bobyqa, rhoend 1e-12) get the
last digits with 2-4 times as many deviance evaluations. :func:`newton_polish` gets them
instead with one or two Newton steps on the profiled (ML) or restricted (REML) log
likelihood, whose score and observed information :func:`~hlmbridge.inference.stata_parity.evaluate`
computes in closed form (about a millisecond on the seed's models).

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
from hlmbridge.inference.optimum import _feasible
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
    theta = np.asarray(theta0, dtype=float).copy()
    inf = _at(design, theta)
    if inf is None:
        return None
    start_ll = inf.loglik
    se0 = _standard_errors(inf)
    if se0 is None:
        return None
    for step_no in range(max_steps + 1):
        try:
            chol = np.linalg.cholesky(inf.information)
        except np.linalg.LinAlgError:
            return None
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, inf.score))
        gain = 0.5 * float(inf.score @ step)
        small = bool(np.all(np.abs(step) <= STEP_TOLERANCE * np.maximum(np.abs(theta), se0)))
        if step_no >= min_steps and (small or (step_no == max_steps and gain < GAIN_TOLERANCE)):
            move = float(np.max(np.abs(theta - theta0) / se0))
            if move > max_move_se:
                return None
            return Polished(theta, inf, step_no, inf.loglik - start_ll, move)
        if step_no == max_steps:
            return None
        for t in (1.0, 0.5, 0.25):
            trial = theta + t * step
            trial_inf = _at(design, trial)
            if trial_inf is not None and trial_inf.loglik >= inf.loglik - 1e-12 * abs(inf.loglik):
                theta, inf = trial, trial_inf
                break
        else:
            return None
    return None


def _at(design: Design, theta: np.ndarray) -> Inference | None:
    if not _feasible(design, theta):
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
