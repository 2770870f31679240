"""Is an engine's answer the optimum, and is it on the boundary? Checks on hlmbridge's own terms.

An optimizer can report convergence at a point that is not the maximum (statsmodels'
Powell does on some boundary fits). :func:`likelihood_gain` looks for a better point
near the engine's variance parameters: it takes the gradient of the (profiled ML, or
REML) log likelihood by central differences and searches along the Newton direction (or
the gradient, where the information is not positive definite), keeping every covariance
matrix positive semi-definite. A gain larger than a rounding error means the engine
stopped short.

:func:`is_singular` is the one definition of a boundary (singular) fit for every engine, lme4's
``isSingular``: some diagonal element of a relative covariance factor (the lower Cholesky factor
of a random-effects block's covariance over the residual variance, lme4's ``theta``) below
1e-4. It is computed from the estimates, so both engines answer it alike.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(0)
>>> g = np.repeat(np.arange(30), 6)
>>> df = pd.DataFrame({"y": rng.normal(size=180) + rng.normal(size=30)[g], "g": g})
>>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | g)", reml=False), df)
>>> likelihood_gain(d, np.array([0.01, 5.0])) > 1.0      # far from the optimum
True
>>> is_singular(d, np.array([1.0, 5.0])), is_singular(d, np.array([1e-9, 5.0]))
(False, True)
"""

from __future__ import annotations

import numpy as np

from hlmbridge.design.build import Design
from hlmbridge.design.cache import per_design
from hlmbridge.errors import FitError
from hlmbridge.inference.stata_parity import evaluate, level_covariances, variance_parameters

__all__ = ["is_feasible", "is_singular", "likelihood_gain", "profiled_loglik", "overflow_problem", "relative_factor_pivots",
           "weight_scale"]


def profiled_loglik(design: Design, theta: np.ndarray) -> float:
    """The log likelihood at ``theta`` with the fixed effects at their GLS value (ML), or the
    restricted log likelihood (REML); -inf where ``theta`` is not a valid covariance."""
    if not is_feasible(design, theta):
        return -np.inf
    try:
        return evaluate(design, None, theta).loglik
    except (FitError, np.linalg.LinAlgError, FloatingPointError):
        return -np.inf


def is_feasible(design: Design, theta: np.ndarray) -> bool:
    """Whether ``theta`` is a valid parameter vector: a positive residual variance and every
    level's covariance positive semi-definite (to 1e-10 of its largest variance)."""
    theta = np.asarray(theta, dtype=float)
    if not theta[-1] > 0:
        return False
    for index, patterns in _level_patterns(design):
        q = patterns.shape[-1]
        G = (theta[index] @ patterns.reshape(len(index), -1)).reshape(q, q)  # sum_k theta_k pattern_k (level_covariances)
        scale = max(1.0, float(np.abs(G.diagonal()).max()))
        smallest = G[0, 0] if q == 1 else np.linalg.eigvalsh(G)[0]  # eigenvalues in ascending order
        if smallest < -1e-10 * scale:
            return False
    return True


@per_design
def _level_patterns(design: Design) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per level: the positions of its parameters in theta and their patterns stacked
    (k_l, q_l, q_l). Once per design: the Newton polish checks feasibility at every step, and
    rebuilding the parameter list each time cost as much as the check itself."""
    params = variance_parameters(design)
    return tuple(
        (np.array([k for k, prm in enumerate(params) if prm.level == li]),
         np.array([prm.pattern for prm in params if prm.level == li]))
        for li in range(len(design.levels)))


def likelihood_gain(design: Design, theta: np.ndarray, information: np.ndarray | None = None) -> float:
    """How much the log likelihood can still rise near ``theta`` (0 at the optimum)."""
    theta = np.asarray(theta, dtype=float)
    base = profiled_loglik(design, theta)
    if not np.isfinite(base):
        return 0.0
    K = len(theta)
    step = 1e-5 * np.maximum(np.abs(theta), 1e-3 * float(np.max(np.abs(theta))))
    grad = np.zeros(K)
    for k in range(K):
        e = np.zeros(K)
        e[k] = step[k]
        up, down = profiled_loglik(design, theta + e), profiled_loglik(design, theta - e)
        if np.isfinite(up) and np.isfinite(down):
            grad[k] = (up - down) / (2 * step[k])
        elif np.isfinite(up):
            grad[k] = max(0.0, (up - base) / step[k])  # at a boundary: only the inward slope
        elif np.isfinite(down):
            grad[k] = min(0.0, (base - down) / step[k])
    directions = []
    if information is not None and np.all(np.isfinite(information)):
        try:
            if np.linalg.eigvalsh(information).min() > 0:
                directions.append(np.linalg.solve(information, grad))
        except np.linalg.LinAlgError:
            pass
    scale = np.maximum(np.abs(theta), 1e-3 * float(np.max(np.abs(theta))))
    ascent = grad * scale**2  # gradient ascent in relative units
    biggest = float(np.max(np.abs(ascent) / scale))
    if biggest > 0:
        directions.append(ascent * (0.1 / biggest))  # at most a 10% change of any parameter
    best = base
    for d in directions:
        for t in (1.0, 0.5, 0.25, 0.1, 0.03):
            best = max(best, profiled_loglik(design, theta + t * d))
    return float(best - base)


@per_design
def overflow_problem(design: Design) -> str | None:
    """Why the design's numbers are too large for a likelihood in double precision, or None.

    The likelihood needs the sums of squares of the response (less any offset) and of the
    fixed- and random-effects columns, with the precision weights the engines fit with
    (:func:`weight_scale`). Where one of them overflows (a response times 1e200: its squares
    are 1e400) no optimizer can find anything, and the statsmodels engine's Nelder-Mead ran
    its 50,000 iterations on NaN for minutes. The answer names the column to rescale. Once per
design (about 0.1 ms on HSB's 7,185 rows): a warm refit skips it.

    >>> import pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> df = pd.DataFrame({"y": [1e200, 2e200, 3e200, 1e200], "g": [1, 1, 2, 2]})
    >>> overflow_problem(build_design(ModelSpec.from_lme4("y ~ 1 + (1 | g)"), df))
    "the response's sum of squares overflows double precision (largest |value| 3e+200): rescale the response"
    """
    sw = None if design.weights is None else np.sqrt(design.weights / weight_scale(design.weights))

    def sums(a: np.ndarray) -> np.ndarray:
        a = a if sw is None else (a * sw if a.ndim == 1 else a * sw[:, None])
        with np.errstate(over="ignore", invalid="ignore"):
            return np.atleast_1d(np.einsum("i...,i...->...", a, a))

    def largest(a: np.ndarray) -> str:
        return f"{float(np.max(np.abs(a))):.3g}" if a.size else "none"

    y = design.y_fit
    if not np.all(np.isfinite(sums(y))):
        return (f"the response's sum of squares overflows double precision (largest |value| {largest(y)}): "
                "rescale the response")
    bad = [name for name, ss in zip(design.fixed_lme4, sums(design.X), strict=True) if not np.isfinite(ss)]
    if bad:
        return (f"the sum of squares of the fixed-effects column(s) {', '.join(bad)} overflows double precision "
                f"(largest |value| {largest(design.X)}): rescale them")
    for ld in design.levels:
        bad = [name for name, ss in zip(ld.terms_lme4, sums(ld.Z), strict=True) if not np.isfinite(ss)]
        if bad:
            return (f"the sum of squares of the random-effects column(s) {', '.join(bad)} | {ld.key} overflows "
                    f"double precision (largest |value| {largest(ld.Z)}): rescale them")
    return None


#: Weights whose geometric mean is within this factor of 1 are fitted as given (see weight_scale).
_WEIGHT_SCALE_FREE = 2.0**10


def weight_scale(weights: np.ndarray | None) -> float:
    """What the engines divide precision ``weights`` by: 1 where their geometric mean is
    within a factor of 2**10 (1024) of 1, else the power of two nearest it (1 without weights).

    ``weights / scale`` is the same model (the residual variance of weights ``w`` is ``scale``
    times that of ``w / scale``; the random-effects covariance, the fixed effects and the log
    likelihood do not change), with a residual variance on the scale of the data, where the
    optimizers start (lmer at relative factors of 1). With constant weights of 1e-16 lmer's
    optimum lies at relative factors near 1e7 and it stopped at the linear model, 230
    log-likelihood units short (with 1e-12 it still found it); with 1e16 it fails ("Downdated
    VtV is not positive definite"). A power of two divides exactly, and weights near 1 are
    fitted as given, so lmer takes the path it takes in R with the same weights.

    >>> weight_scale(np.full(3, 1e-16)), weight_scale(np.array([0.5, 2.0, 600.0])), weight_scale(None)
    (1.1102230246251565e-16, 1.0, 1.0)
    """
    if weights is None or len(weights) == 0:
        return 1.0
    center = float(np.mean(np.log2(weights)))
    if abs(center) <= np.log2(_WEIGHT_SCALE_FREE):
        return 1.0
    return float(2.0 ** np.round(center))


#: lme4's ``isSingular`` tolerance (its default ``tol = 1e-4``), on its ``theta`` scale.
SINGULAR_TOL = 1e-4


def relative_factor_pivots(design: Design, theta: np.ndarray) -> np.ndarray:
    """The diagonal of every relative covariance factor at ``theta``: per correlated block of
    each level (one lme4 random-effects term, its columns in lme4's order), the lower Cholesky
    factor L of the block's covariance over the residual variance (G / s2 = L L', lme4's
    ``theta``), its diagonal elements in order.

    The factor is the unpivoted one lme4 optimizes over. Where a pivot is zero (a
    rank-deficient block) the elements below it are not determined by G; the pivot itself,
    and every pivot before it, is.

    With precision weights the residual variance is that of the weights divided by
    :func:`weight_scale` (the weights the engines fit with): lme4's own ``theta`` is relative
    to the residual variance of a unit weight, so with constant weights of 1e16 every pivot
    would be 1e-8 times its value without weights, and every fit "singular".
    """
    theta = np.asarray(theta, dtype=float)
    s2 = float(theta[-1]) / weight_scale(design.weights)
    if not s2 > 0:
        raise FitError(f"the residual variance is {theta[-1]!r}, not positive")
    out: list[float] = []
    for ld, G in zip(design.levels, level_covariances(design, theta), strict=True):
        q = G.shape[0]
        for cols in ld.blocks or (tuple(range(q)),):
            g = G[np.ix_(cols, cols)] / s2
            m = len(cols)
            L = np.zeros((m, m))
            for j in range(m):
                d = g[j, j] - L[j, :j] @ L[j, :j]
                if not d > 0:  # a zero pivot (rounding may leave it slightly negative)
                    out.append(0.0)
                    continue
                L[j, j] = np.sqrt(d)
                L[j + 1:, j] = (g[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
                out.append(float(L[j, j]))
    return np.array(out)


def is_singular(design: Design, theta: np.ndarray, tol: float = SINGULAR_TOL) -> bool:
    """lme4's ``isSingular``: whether some pivot of a relative covariance factor
    (:func:`relative_factor_pivots`) is below ``tol``: a variance at zero, a correlation at
    +-1, or a correlated block of rank below its size (3x3 blocks can be rank-deficient with
    every correlation inside (-1, 1))."""
    pivots = relative_factor_pivots(design, theta)
    return bool(pivots.size and float(pivots.min()) < tol)
