"""R's ``splines::bs`` and ``splines::ns`` bases, from scipy's B-splines.

Both follow R's source (splines 4.2) step by step: the interior knots default to
quantiles (type 7) of ``x`` at equally spaced probabilities, the boundary knots to the range
of ``x``; ``bs`` evaluates the B-spline basis of order ``degree + 1`` on the knots with the
boundary knots repeated (``splineDesign``) and drops the first column unless
``intercept = TRUE``; outside the boundary knots it continues each basis function by its
Taylor polynomial at a pivot a quarter of the way to the next knot (R >= 3.2.3). ``ns``
takes the cubic basis, drops the first column unless ``intercept``, and projects it on the
null space of the second derivatives at the two boundary knots (the QR of their transpose,
R's ``qr.qty`` without the first two rows); outside the boundary it is linear.

Examples
--------
>>> import numpy as np
>>> x = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
>>> b = bs_basis(x, spline_knots(x, df=4, degree=3, intercept=False), (0.0, 9.0), 3, False)
>>> b.shape, round(float(b[3, 0]), 6)  # R: bs(0:9, df = 4)[4, 1]
((10, 4), 0.518519)
>>> n = ns_basis(x, spline_knots(x, df=3, degree=3, intercept=False, natural=True), (0.0, 9.0), False)
>>> n.shape
(10, 3)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bs_basis", "ns_basis", "r_quantile", "spline_knots"]


def r_quantile(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """R's ``quantile(x, probs)`` (type 7), computed as R computes it."""
    s = np.sort(x)
    n = len(s)
    index = 1 + (n - 1) * probs
    lo = np.floor(index).astype(int)
    hi = np.ceil(index).astype(int)
    qs = s[lo - 1].astype(float)
    h = index - lo
    upper = s[hi - 1]
    pick = (index > lo) & (upper != qs)
    qs[pick] = (1 - h[pick]) * qs[pick] + h[pick] * upper[pick]
    return qs


def _r_seq01(n: int) -> np.ndarray:
    """R's ``seq.int(0, 1, length.out = n)`` (from both ends, as R's C code fills it)."""
    out = np.empty(n)
    out[0], out[-1] = 0.0, 1.0
    by = 1.0 / (n - 1)
    for i in range(1, n - 1):
        out[i] = i * by if i < n / 2 else 1.0 - (n - 1 - i) * by
    return out


def spline_knots(x: np.ndarray, df: int, degree: int, intercept: bool, natural: bool = False) -> np.ndarray:
    """The interior knots R chooses for ``df`` (``bs``: df - degree - 1 + 1 - intercept of
    them; ``ns``: df - 1 - intercept), at quantiles of the non-missing ``x``."""
    n_inner = df - 1 - int(intercept) if natural else df - (degree + 1) + (1 - int(intercept))
    if n_inner <= 0:
        return np.empty(0)
    probs = _r_seq01(n_inner + 2)[1:-1]
    return r_quantile(x[~np.isnan(x)], probs)


def _design(t: np.ndarray, x: np.ndarray, order: int, deriv: int = 0) -> np.ndarray:
    """R's ``splineDesign(t, x, order, derivs)`` for ``x`` inside [t[order-1], t[-order]]."""
    from scipy.interpolate import BSpline

    k = order - 1
    nb = len(t) - order
    out = np.empty((len(x), nb))
    for j in range(nb):
        c = np.zeros(nb)
        c[j] = 1.0
        spl = BSpline(t, c, k, extrapolate=True)
        out[:, j] = spl.derivative(deriv)(x) if deriv else spl(x)
    return out


def _all_knots(knots: np.ndarray, boundary: tuple[float, float], order: int) -> np.ndarray:
    return np.sort(np.concatenate([np.repeat(np.asarray(boundary, dtype=float), order), np.asarray(knots, float)]))


def bs_basis(x: np.ndarray, knots: np.ndarray, boundary: tuple[float, float], degree: int,
             intercept: bool) -> np.ndarray:
    """R's ``bs(x, knots = knots, Boundary.knots = boundary, degree, intercept)``; NaN rows stay NaN."""
    order = degree + 1
    t = _all_knots(knots, boundary, order)
    ok = ~np.isnan(x)
    xs = x[ok]
    basis = np.zeros((len(xs), len(t) - order))
    left, right = xs < boundary[0], xs > boundary[1]
    inside = ~(left | right)
    if inside.any():
        basis[inside] = _design(t, xs[inside], order)
    scalef = np.array([math.gamma(i + 1) for i in range(order)])  # factorials 0! .. degree!
    e = 0.25
    for mask, pivot in ((left, (1 - e) * boundary[0] + e * t[order]),
                        (right, (1 - e) * boundary[1] + e * t[len(t) - order - 1])):
        if mask.any():
            dx = xs[mask] - pivot
            powers = np.column_stack([dx**i for i in range(order)])
            derivs = np.vstack([_design(t, np.array([pivot]), order, d) for d in range(order)])
            basis[mask] = powers @ (derivs / scalef[:, None])
    if not intercept:
        basis = basis[:, 1:]
    out = np.full((len(x), basis.shape[1]), np.nan)
    out[ok] = basis
    return out


def ns_basis(x: np.ndarray, knots: np.ndarray, boundary: tuple[float, float], intercept: bool) -> np.ndarray:
    """R's ``ns(x, knots = knots, Boundary.knots = boundary, intercept)``; NaN rows stay NaN."""
    t = _all_knots(knots, boundary, 4)
    ok = ~np.isnan(x)
    xs = x[ok]
    basis = np.zeros((len(xs), len(t) - 4))
    left, right = xs < boundary[0], xs > boundary[1]
    inside = ~(left | right)
    if inside.any():
        basis[inside] = _design(t, xs[inside], 4)
    for mask, pivot in ((left, boundary[0]), (right, boundary[1])):
        if mask.any():
            tt = np.vstack([_design(t, np.array([pivot]), 4, d) for d in (0, 1)])
            basis[mask] = np.column_stack([np.ones(int(mask.sum())), xs[mask] - pivot]) @ tt
    const = _design(t, np.asarray(boundary, dtype=float), 4, 2)
    if not intercept:
        const, basis = const[:, 1:], basis[:, 1:]
    q, _ = np.linalg.qr(const.T, mode="complete")
    basis = basis @ q[:, 2:]
    out = np.full((len(x), basis.shape[1]), np.nan)
    out[ok] = basis
    return out
