"""``xtreg ..., mle``'s standard errors: the inverse of the full observed information matrix.

Stata's ``xtreg, mle`` fits the same random-intercept likelihood as ``mixed ..., mle``
(same estimates), but takes every standard error from the inverse of the observed
information of all parameters together, (beta, ln sigma_u, ln sigma_e). ``mixed`` (and lme4,
statsmodels) take the fixed effects' from ``(X' V^-1 X)^-1``, the expected-information
block, which ignores the cross terms ``d2 l / d beta d theta = -X' V^-1 V_theta V^-1 r``.
Those vanish for balanced groups but not otherwise (the Snijders & Bosker language data:
``_cons`` SE .4271561 from xtreg, .4263628 from xtmixed on the same fit).

:func:`xtreg_information` evaluates the random-intercept log likelihood in closed form per
group and differentiates it numerically (central differences, step 1e-4 on the log-SD scale
and 1e-4 SE on the beta scale), which reproduces Stata's printed digits.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> g = np.repeat(np.arange(30), rng.integers(2, 9, 30))
>>> y = 1 + rng.normal(size=30)[g] + rng.normal(size=g.size)
>>> X = np.ones((g.size, 1))
>>> b, su, se = np.array([y.mean()]), 1.0, 1.0
>>> info = xtreg_information(y, X, g, b, su, se)
>>> info.vcov.shape
(3, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["XtregInformation", "random_intercept_loglik", "xtreg_information"]


def random_intercept_loglik(y: np.ndarray, X: np.ndarray, codes: np.ndarray, beta: np.ndarray, ln_su: float,
                            ln_se: float) -> float:
    """The ML log likelihood of ``y = X beta + u_g + e`` (u ~ N(0, su^2), e ~ N(0, se^2)).

    Examples
    --------
    >>> import numpy as np
    >>> round(random_intercept_loglik(np.array([0.0, 0.0]), np.ones((2, 1)), np.array([0, 1]),
    ...                               np.array([0.0]), math.log(1e-8), 0.0), 6)
    -1.837877
    """
    r = y - X @ beta
    s2u, s2e = math.exp(2 * ln_su), math.exp(2 * ln_se)
    n = np.bincount(codes).astype(float)
    keep = n > 0
    n = n[keep]
    sr = np.bincount(codes, weights=r)[keep]
    srr = np.bincount(codes, weights=r * r)[keep]
    d = s2e + n * s2u
    return float(-0.5 * np.sum(n * math.log(2 * math.pi) + (n - 1) * math.log(s2e) + np.log(d)
                               + (srr - s2u * sr * sr / d) / s2e))


@dataclass(frozen=True)
class XtregInformation:
    """The inverse observed information of (beta..., ln sigma_u, ln sigma_e) and what xtreg prints."""

    vcov: np.ndarray
    beta_se: np.ndarray
    sigma_u_se: float
    sigma_e_se: float
    rho: float
    rho_se: float


def xtreg_information(y: np.ndarray, X: np.ndarray, codes: np.ndarray, beta: np.ndarray, sigma_u: float,
                      sigma_e: float) -> XtregInformation:
    """Standard errors as ``xtreg, mle`` prints them at the ML estimates (see the module docstring).

    ``codes`` are 0-based group codes per row. sigma_u's and sigma_e's SEs are the delta method
    from the log scale, rho's (``su^2 / (su^2 + se^2)``) too.
    """
    codes = np.asarray(codes, dtype=np.intp)
    k = X.shape[1]
    p0 = np.concatenate([np.asarray(beta, float), [math.log(sigma_u), math.log(sigma_e)]])
    # steps: beta on the scale of its (expected-information) SE, the log SDs 1e-4
    xtx = X.T @ X
    scale = np.sqrt(np.diag(np.linalg.inv(xtx))) * sigma_e
    h = np.concatenate([1e-3 * scale, [1e-4, 1e-4]])

    def f(p: np.ndarray) -> float:
        return random_intercept_loglik(y, X, codes, p[:k], p[k], p[k + 1])

    m = len(p0)
    H = np.zeros((m, m))
    for i in range(m):
        for j in range(i, m):
            ei = np.zeros(m)
            ej = np.zeros(m)
            ei[i] = h[i]
            ej[j] = h[j]
            H[i, j] = H[j, i] = (f(p0 + ei + ej) - f(p0 + ei - ej) - f(p0 - ei + ej) + f(p0 - ei - ej)) / (
                4 * h[i] * h[j])
    V = np.linalg.inv(-H)
    su2, se2 = sigma_u ** 2, sigma_e ** 2
    rho = su2 / (su2 + se2)
    g = 2 * su2 * se2 / (su2 + se2) ** 2
    grad = np.zeros(m)
    grad[k], grad[k + 1] = g, -g
    return XtregInformation(V, np.sqrt(np.diag(V)[:k]), sigma_u * math.sqrt(V[k, k]),
                            sigma_e * math.sqrt(V[k + 1, k + 1]), rho, float(math.sqrt(grad @ V @ grad)))
