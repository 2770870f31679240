"""Normal and chi-squared tail probabilities without importing scipy (issue 13, cold start).

``scipy.special`` costs about 0.2 s to import (it pulls in ``scipy._lib.array_api_compat``
and ``numpy.f2py``), more than the rest of a small fit. Every tail probability a fit prints is
one of two kinds, and both have exact closed forms in ``math``:

* the normal upper tail of a z statistic, ``scipy.special.ndtr(-x)``: the same branches as
  Cephes' ``ndtr`` (which scipy uses), ``0.5 * erfc(|x| / sqrt 2)`` in the tail and
  ``0.5 + 0.5 * erf(x / sqrt 2)`` near zero, where ``erfc`` would lose digits;
* the chi-squared upper tail with an integer number of degrees of freedom (Wald tests, the LR
  test against the linear model, ``lrtest``; the chibar2(01) mixture is half the 1-df tail),
  ``scipy.special.chdtrc(df, x)``: for even df ``exp(-x/2) sum_{j<df/2} (x/2)^j / j!``, for odd
  df ``erfc(sqrt(x/2)) + exp(-x/2) sum_{j=1}^{(df-1)/2} (x/2)^(j-1/2) / Gamma(j+1/2)``. Every
  term is positive, so the sum is accurate to a few units in the last place.

Anything else (a non-integer df, more than :data:`MAX_CLOSED_FORM_DF` df, an argument where
``exp(-x/2)`` underflows while the sum might not) goes to scipy, whose answer it then is.
``tests/test_tails.py`` compares both functions with scipy on a grid.

Examples
--------
>>> round(chi2_sf(3.841458820694124, 1), 12)
0.05
>>> round(norm_sf(1.959963984540054), 12)
0.025
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MAX_CLOSED_FORM_DF", "chi2_sf", "norm_sf"]

#: Cephes' SQRTH, 1/sqrt(2), by which ``ndtr`` scales its argument (a product, as there).
_SQRTH = 0.70710678118654752440

#: Integer df up to this use the closed forms; above, the sum has many terms and scipy answers.
MAX_CLOSED_FORM_DF = 200

#: exp(-x/2) stays a normal double (no underflow) below this x.
_X_EXP_OK = 1400.0

#: Cephes' MAXLOG: its ``erfc(z)`` is 0 once z * z exceeds it (``ndtr`` below -37.7), where the
#: true value is a subnormal double (below 1e-308); kept so that the two agree there too.
_MAXLOG = 7.09782712893383996843e2


def _norm_sf_scalar(x: float) -> float:
    if math.isnan(x):
        return math.nan
    a = -x  # sf(x) = ndtr(-x), computed as Cephes computes ndtr(a)
    t = a * _SQRTH
    z = abs(t)
    if z < _SQRTH:
        return 0.5 + 0.5 * math.erf(t)
    y = 0.0 if z * z > _MAXLOG else 0.5 * math.erfc(z)
    return 1.0 - y if t > 0 else y


def norm_sf(x: Any) -> Any:
    """The standard normal upper tail P(Z > x), as ``scipy.special.ndtr(-x)``; a float for a
    scalar, else an array of x's shape."""
    if np.ndim(x) == 0:
        return _norm_sf_scalar(float(x))
    arr = np.asarray(x, dtype=float)
    return np.array([_norm_sf_scalar(float(v)) for v in arr.ravel()], dtype=float).reshape(arr.shape)


def _chi2_sf_closed(x: float, k: int) -> float:
    """P(chi2_k > x) for an integer k >= 1 and 0 < x < _X_EXP_OK."""
    h = 0.5 * x
    if k % 2 == 0:
        term = math.exp(-h)  # j = 0
        total = term
        for j in range(1, k // 2):
            term *= h / j
            total += term
        return total
    total = math.erfc(math.sqrt(h))
    if k > 1:
        term = math.exp(-h) * math.sqrt(h) / math.gamma(1.5)  # j = 1: h^(1/2) e^-h / Gamma(3/2)
        acc = term
        for j in range(2, (k - 1) // 2 + 1):
            term *= h / (j - 0.5)  # Gamma(j + 1/2) = (j - 1/2) Gamma(j - 1/2)
            acc += term
        total += acc
    return total


def chi2_sf(x: float, df: float) -> float:
    """The chi-squared upper tail P(chi2_df > x), as ``scipy.special.chdtrc(df, x)``."""
    x = float(x)
    df = float(df)
    if math.isnan(x) or math.isnan(df) or x < 0:  # scipy: nan for a negative x
        return math.nan
    if df.is_integer() and 1 <= df <= MAX_CLOSED_FORM_DF:
        if x <= 0:
            return 1.0
        if math.isinf(x):
            return 0.0
        if x < _X_EXP_OK:
            return _chi2_sf_closed(x, int(df))
    from scipy.special import chdtrc  # the general case: scipy.stats.chi2.sf

    return float(chdtrc(df, x))
