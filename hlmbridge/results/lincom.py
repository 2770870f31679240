"""Linear combinations of the fixed effects: Stata's ``lincom``, lmerTest's ``contest(joint = FALSE)``.

A combination is a vector with one weight per fixed effect, a matrix (one combination per
row), or an expression in the coefficients' names, Stata's or lme4's: ``"ses + 2*sector"``,
``"_b[1.sector] - _b[ses]"``, ``"(Intercept) + sectorCatholic"``, ``"ses/2"``. With a df method
(the fit's, or ``df_method=``) the statistic is t on that method's df (Kenward-Roger: the SE
from its adjusted covariance, as lmerTest and pbkrtest); without one it is z, as Stata's
``lincom`` after ``mixed``.

Examples
--------
>>> parse_combination("2*ses - _b[sector] + meanses/4", ["(Intercept)", "ses", "sector", "meanses"],
...                   ["_cons", "ses", "sector", "meanses"]).tolist()
[0.0, 2.0, -1.0, 0.25]
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hlmbridge.errors import UsageError

__all__ = ["LINCOM_COLUMNS", "lincom", "parse_combination"]

#: Columns of :func:`lincom` (``statistic`` is t with a df method, z without; ``df`` NaN then).
LINCOM_COLUMNS: tuple[str, ...] = ("contrast", "estimate", "std_error", "df", "statistic", "p_value",
                                   "conf_low", "conf_high", "df_method")

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_combination(text: str, lme4_names: list[str], stata_names: list[str]) -> np.ndarray:
    """The weights of a linear expression in the coefficients' names (Stata's or lme4's).

    Terms are ``[number *] name [* number] [/ number]`` joined by ``+`` and ``-``; a name may be
    written ``_b[name]``. Names are matched longest first, so lme4 names with spaces,
    parentheses or ``:`` (``poly(ses, 2)1``, ``sector:ses``) work as written. A constant term,
    an unknown name or a name that is both is a :class:`~hlmbridge.errors.UsageError`.
    """
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"a linear combination must be a non-empty expression, got {text!r}")
    index: dict[str, int] = {}
    for names in (lme4_names, stata_names):
        for j, nm in enumerate(names):
            if index.get(nm, j) != j:
                raise UsageError(f"the name {nm!r} means two coefficients; use the other vocabulary")
            index[nm] = j
    ordered = sorted(index, key=len, reverse=True)
    w = np.zeros(len(lme4_names))
    s, i, n = text, 0, len(text)

    def skip(i: int) -> int:
        while i < n and s[i].isspace():
            i += 1
        return i

    def number(i: int) -> tuple[float | None, int]:
        m = _NUMBER.match(s, i)
        return (float(m.group()), m.end()) if m else (None, i)

    def name(i: int) -> tuple[int | None, int]:
        if s.startswith("_b[", i):
            end = s.find("]", i)
            inner = s[i + 3:end].strip() if end > 0 else ""
            if inner not in index:
                raise UsageError(f"unknown coefficient {inner!r} in {text!r}; the coefficients are "
                                 f"{', '.join(lme4_names)} (or Stata's {', '.join(stata_names)})")
            return index[inner], end + 1
        for nm in ordered:
            if s.startswith(nm, i):
                return index[nm], i + len(nm)
        return None, i

    i = skip(0)
    first = True
    while i < n:
        sign = 1.0
        if s[i] in "+-":
            sign = -1.0 if s[i] == "-" else 1.0
            i = skip(i + 1)
        elif not first:
            raise UsageError(f"expected + or - at position {i} of {text!r}")
        coef = 1.0
        j, i2 = name(i)
        if j is None:
            c, i2 = number(i)
            if c is None:
                raise UsageError(f"unknown coefficient at position {i} of {text!r}: {s[i:i + 20]!r}; the "
                                 f"coefficients are {', '.join(lme4_names)} (or Stata's {', '.join(stata_names)})")
            coef = c
            i = skip(i2)
            if i >= n or s[i] != "*":
                raise UsageError(f"a constant term ({c:g}) in {text!r}: a linear combination of the "
                                 "coefficients has none")
            i = skip(i + 1)
            j, i2 = name(i)
            if j is None:
                raise UsageError(f"expected a coefficient after '*' at position {i} of {text!r}")
        i = skip(i2)
        while i < n and s[i] in "*/":
            op = s[i]
            c, i2 = number(skip(i + 1))
            if c is None:
                raise UsageError(f"expected a number after {op!r} at position {i} of {text!r}")
            if op == "/" and c == 0:
                raise UsageError(f"division by zero in {text!r}")
            coef = coef * c if op == "*" else coef / c
            i = skip(i2)
        w[j] += sign * coef
        first = False
    return w


def lincom(result: Any, L: Any, df_method: str | None = None, level: float = 0.95) -> pd.DataFrame:
    """Estimate, SE, df, t (z without a df method), p and CI of each combination (one row each)."""
    from hlmbridge.results.small_sample import df_analysis_of, resolve_df_method

    if not (isinstance(level, float) and 0 < level < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    p = len(result.fixed_rows)
    lme4_names = [r[0] for r in result.fixed_rows]
    stata_names = [r[1] for r in result.fixed_rows]
    if isinstance(L, str):
        W, labels = parse_combination(L, lme4_names, stata_names)[None, :], [L.strip()]
    else:
        W = np.atleast_2d(np.asarray(L, dtype=float))
        if W.ndim != 2 or W.shape[1] != p or W.shape[0] == 0:
            raise UsageError(f"a combination needs one weight per fixed effect ({p}: {', '.join(lme4_names)}); "
                             f"got shape {np.shape(L)}")
        labels = [" + ".join(f"{w:g}*{nm}" for w, nm in zip(row, lme4_names) if w != 0) or "0" for row in W]
    if not np.all(np.isfinite(W)):
        raise UsageError("the combination's weights must be finite")
    beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
    method = df_method or result.df_method
    rows = []
    if method:
        method = resolve_df_method(method)
        a = df_analysis_of(result, method)
        for w, lab in zip(W, labels):
            est, se, df = float(w @ beta), a.contrast_se(w), a.contrast_df(w)
            t = est / se
            q = stats.t.ppf(0.5 + level / 2, df)
            rows.append((lab, est, se, df, t, float(2 * stats.t.sf(abs(t), df)), est - q * se, est + q * se, method))
    else:
        V = np.asarray(result.fixed_vcov, dtype=float)
        q = stats.norm.ppf(0.5 + level / 2)
        for w, lab in zip(W, labels):
            est, se = float(w @ beta), float(np.sqrt(w @ V @ w))
            z = est / se
            rows.append((lab, est, se, float("nan"), z, float(2 * stats.norm.sf(abs(z))), est - q * se, est + q * se, ""))
    return pd.DataFrame(rows, columns=list(LINCOM_COLUMNS))
