"""hlmbridge's own evaluator for the variables of a formula (never ``eval``, never R).

A variable (:class:`~hlmbridge.spec.rformula.Expr`) is evaluated over the data columns on
*all* rows of the caller's frame, as R's ``model.frame`` does before it applies
``subset`` and ``na.action``: so ``scale(x)`` and ``poly(x, 2)`` use the same rows R uses.
The result is a :class:`Numeric` (a vector or a matrix with column names, as ``poly``
gives) or a :class:`Factor` (codes, levels in R's order, ordered or not); a logical
column is a factor with levels ``FALSE``/``TRUE`` (R's ``model.matrix`` rule).

Column types follow R: numbers are numeric; ``bool`` is logical; strings are character
(a factor with the levels in the order R's ``sort()`` gives in R's locale,
:mod:`hlmbridge.design.collation`); pandas ``Categorical`` is a factor with its categories'
order (an ordered one is an ordered factor); pandas nullable dtypes keep their NA.

Besides arithmetic and R's common transforms, the evaluator knows ``factor(x, levels =,
labels =, ordered =)``, ``cut()``, ``interaction()``, ``C(f, contr)``, the splines
``ns()``/``bs()`` (:mod:`hlmbridge.design.splines`), and inside ``I()`` or another call the
summaries ``mean``, ``sd``, ``median``, ``min``, ``max``, ``sum`` and ``length``, taken over
every row of the frame as R's ``model.frame`` takes them (before ``subset`` and missing
values drop rows; ``NA`` unless ``na.rm = TRUE``).

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.spec.rformula import parse_formula
>>> df = pd.DataFrame({"x": [1.0, 2, 3, 4], "s": ["b", "a", "b", "c"]})
>>> f = parse_formula("y ~ scale(x) + relevel(factor(s), ref = 'b') + (1 | g)")
>>> v = evaluate(f.fixed.variables[0], df)
>>> [round(float(a), 4) for a in v.values[:, 0]]
[-1.1619, -0.3873, 0.3873, 1.1619]
>>> evaluate(f.fixed.variables[1], df).levels
('b', 'a', 'c')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hlmbridge.design.collation import collation_locale, r_sort
from hlmbridge.design.contrasts import Contrast
from hlmbridge.errors import DataError, SpecError
from hlmbridge.spec.rformula import Expr, format_r_number

__all__ = ["Factor", "Numeric", "column_value", "evaluate", "evaluate_learned"]


@dataclass(frozen=True, eq=False)
class Numeric:
    """A numeric variable: ``values`` is (n, k); ``colnames`` None for a plain vector (k = 1)
    or a matrix without column names, else R's column names (``poly`` gives ``1``, ``2``).

    ``params`` keeps what a transform learned from the data (centre, scale, polynomial
    coefficients), for prediction on new data.
    """

    values: np.ndarray
    colnames: tuple[str, ...] | None = None
    matrix: bool = False
    params: dict = field(default_factory=dict)

    @property
    def missing(self) -> np.ndarray:
        """Rows R's ``na.omit`` drops (NA or NaN in any column)."""
        return np.isnan(self.values).any(axis=1)


@dataclass(frozen=True, eq=False)
class Factor:
    """A factor: 0-based ``codes`` (-1 = NA) into ``levels`` (R's labels, in R's order).

    ``contrasts`` is R's ``contrasts`` attribute (set by ``C()``; None: R's default);
    ``order_sure`` is False when the levels come from text whose order in R's locale
    hlmbridge cannot be sure of (:func:`hlmbridge.design.collation.r_sort`): such a factor
    may group rows but not be coded into columns. ``params`` keeps what a transform learned
    (``cut``'s breaks), for prediction on new data.
    """

    codes: np.ndarray
    levels: tuple[str, ...]
    ordered: bool = False
    logical: bool = False
    character: bool = False
    contrasts: Contrast | None = None
    order_sure: bool = True
    params: dict = field(default_factory=dict)

    @property
    def missing(self) -> np.ndarray:
        """Rows with NA."""
        return self.codes < 0

    def dropped(self, rows: np.ndarray) -> Factor:
        """The factor on ``rows`` with unused levels dropped (lme4's ``drop.unused.levels``;
        as R's ``model.frame``, a factor that loses levels loses its ``contrasts`` too)."""
        codes = self.codes[rows]
        if self.logical:  # R codes a logical by factor(x, levels = c(FALSE, TRUE)): both always
            return Factor(codes, self.levels, logical=True, contrasts=self.contrasts)
        used = np.zeros(len(self.levels), dtype=bool)
        used[codes[codes >= 0]] = True
        remap = np.cumsum(used) - 1
        new = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        return Factor(new, tuple(lv for lv, u in zip(self.levels, used) if u), self.ordered,
                      contrasts=self.contrasts if used.all() else None, order_sure=self.order_sure,
                      params=self.params)


Value = Numeric | Factor


def _r_label(value: object, integer: bool) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if integer and isinstance(value, (int, np.integer, float, np.floating)) and float(value).is_integer():
        return str(int(value))  # an R integer column prints without exponent
    if isinstance(value, (float, np.floating, int, np.integer)):
        return format_r_number(float(value))
    return str(value)


def _sorted_factor(values: np.ndarray, missing: np.ndarray, integer: bool, name: str,
                   text: bool = False) -> Factor:
    """factor(x): levels are the sorted distinct values, labelled as R prints them (text in
    the order of R's locale, :func:`hlmbridge.design.collation.r_sort`)."""
    present = values[~missing]
    sure = True
    if text:
        uniques, sure = r_sort(present.tolist())
        uniques = list(uniques)
    else:
        uniques = sorted(set(present.tolist()))
    labels = [_r_label(u, integer) for u in uniques]
    if len(set(labels)) != len(labels):
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise DataError(f"the values of {name!r} give the same R level label {dup[0]!r} to different values; "
                        "R would merge them into one level")
    index = {u: i for i, u in enumerate(uniques)}
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[~missing] = [index[v] for v in present.tolist()]
    return Factor(codes, tuple(labels), character=text, order_sure=sure)


def unsure_order_message(label: str) -> str:
    """Why a text factor whose level order hlmbridge cannot be sure of is not coded, and the fix."""
    return (f"the levels of {label} come from text that R sorts by the collation of its locale "
            f"({collation_locale()}), and hlmbridge cannot be sure of that order for these labels (it reproduces "
            "ICU's root collation for ASCII and accented Latin letters, and the C locale's code-point order); "
            "pass the column as a pandas Categorical with its categories in the order you want, or run with "
            "LC_ALL=C")


def column_value(data: pd.DataFrame, name: str) -> Value:
    """A data column as R sees it: numeric, logical (a factor FALSE/TRUE), character or factor."""
    if name not in data.columns:
        raise DataError(f"variable not in the data: {name}")
    col = data[name]
    if isinstance(col, pd.DataFrame):
        raise DataError(f"the data have several columns named {name!r}")
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        integer = pd.api.types.is_integer_dtype(cats.dtype)
        labels = [_r_label(c, integer) for c in cats]
        if len(set(labels)) != len(labels):
            raise DataError(f"the categories of {name!r} give the same R level label to different values")
        return Factor(col.cat.codes.to_numpy(dtype=np.int64), tuple(labels), ordered=bool(dtype.ordered))
    if pd.api.types.is_bool_dtype(dtype):
        arr = col.to_numpy(dtype=object, na_value=None)
        codes = np.array([-1 if v is None else int(bool(v)) for v in arr], dtype=np.int64)
        return Factor(codes, ("FALSE", "TRUE"), logical=True)
    if pd.api.types.is_complex_dtype(dtype):
        raise DataError(f"the column {name!r} holds complex numbers; a model needs real ones")
    if pd.api.types.is_numeric_dtype(dtype):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        return Numeric(values[:, None])
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        arr = col.to_numpy(dtype=object, na_value=None)
        missing = np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in arr], dtype=bool)
        kinds = {type(v) for v, m in zip(arr, missing) if not m}
        if kinds and not kinds <= {str, np.str_}:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise DataError(f"the column {name!r} mixes value types ({names}); R would read them all as "
                            "text and could merge distinct values: give the column one type")
        return _sorted_factor(arr, missing, False, name, text=True)
    raise DataError(f"the column {name!r} has dtype {dtype}, which a model cannot use")


def _num(v: Value, expr: Expr, what: str) -> np.ndarray:
    if isinstance(v, Factor):
        if v.logical:
            out = v.codes.astype(float)
            out[v.codes < 0] = np.nan
            return out
        raise SpecError(f"{what} needs a number, but {expr.deparse()} is a factor")
    if v.values.shape[1] != 1:
        raise SpecError(f"{what} needs one column, but {expr.deparse()} has {v.values.shape[1]}")
    return v.values[:, 0]


def _scalar(expr: Expr, what: str) -> float:
    if expr.kind == "num":
        return float(expr.value.rstrip("L"))
    if expr.kind == "neg" and expr.args[0].kind == "num":
        return -float(expr.args[0].value.rstrip("L"))
    raise SpecError(f"{what} must be a number, got {expr.deparse()}")


def _logical(expr: Expr, what: str) -> bool:
    if expr.kind == "name" and expr.value in ("TRUE", "T", "FALSE", "F"):
        return expr.value in ("TRUE", "T")
    raise SpecError(f"{what} must be TRUE or FALSE, got {expr.deparse()}")


def _args(expr: Expr, names: tuple[str, ...]) -> dict[str, Expr]:
    """Match a call's arguments to ``names`` as R does (by name, then by position)."""
    out: dict[str, Expr] = {}
    positional = [a for a, k in zip(expr.args, expr.keys) if k is None]
    for a, k in zip(expr.args, expr.keys):
        if k is not None:
            matches = [n for n in names if n == k] or [n for n in names if n.startswith(k)]
            if len(matches) != 1:
                raise SpecError(f"{expr.value}() has no argument {k!r} (it takes {', '.join(names)})")
            if matches[0] in out:
                raise SpecError(f"{expr.value}() got the argument {matches[0]!r} twice")
            out[matches[0]] = a
    free = [n for n in names if n not in out]
    if len(positional) > len(free):
        raise SpecError(f"{expr.value}() takes at most {len(names)} arguments ({', '.join(names)})")
    for n, a in zip(free, positional):
        out[n] = a
    return out


_UNARY = {
    "log2": np.log2, "log10": np.log10, "log1p": np.log1p, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs,
}


def _arith(expr: Expr, data: pd.DataFrame) -> np.ndarray:
    """Arithmetic inside a call or I(): + - * / ^, numbers, columns and calls."""
    k = expr.kind
    if k == "num":
        return np.full(len(data), float(expr.value.rstrip("L")))
    if k == "paren":
        return _arith(expr.args[0], data)
    if k == "neg":
        return -_arith(expr.args[0], data)
    if k == "bin":
        a, b = _arith(expr.args[0], data), _arith(expr.args[1], data)
        with np.errstate(all="ignore"):
            if expr.value == "+":
                return a + b
            if expr.value == "-":
                return a - b
            if expr.value == "*":
                return a * b
            if expr.value == "/":
                return a / b
            if expr.value == "^":
                return np.power(a, b)
        raise SpecError(f"the operator {expr.value} cannot be used in arithmetic ({expr.deparse()})")
    if k == "str":
        raise SpecError(f"a string cannot be used in arithmetic ({expr.deparse()})")
    return _num(evaluate(expr, data), expr, "arithmetic")


def _scale(expr: Expr, data: pd.DataFrame) -> Numeric:
    a = _args(expr, ("x", "center", "scale"))
    x = _arith(a["x"], data)
    ok = ~np.isnan(x)
    params: dict[str, float] = {}
    center: float | None = None
    if "center" in a:
        c = a["center"]
        center = None if (c.kind == "name" and not _logical(c, "center")) else (
            _scalar(c, "center") if c.kind in ("num", "neg") else float(np.mean(x[ok])))
    else:
        center = float(np.mean(x[ok]))
    if center is not None:
        x = x - center
        params["center"] = center
    do_scale = True
    scale: float | None = None
    if "scale" in a:
        s = a["scale"]
        if s.kind == "name":
            do_scale = _logical(s, "scale")
        else:
            scale = _scalar(s, "scale")
    if do_scale:
        if scale is None:
            n = int(ok.sum())
            scale = float(np.sqrt(np.sum(x[ok] ** 2) / max(n - 1, 1)))
        x = x / scale
        params["scale"] = scale
    return Numeric(x[:, None], None, matrix=True, params=params)


def _poly(expr: Expr, data: pd.DataFrame) -> Numeric:
    a = _args(expr, ("x", "degree", "coefs", "raw", "simple"))
    if "coefs" in a or "simple" in a:
        raise SpecError("poly(): the coefs= and simple= arguments are not supported")
    x = _arith(a["x"], data)
    degree = int(_scalar(a["degree"], "poly()'s degree")) if "degree" in a else 1
    raw = _logical(a["raw"], "poly()'s raw") if "raw" in a else False
    if degree < 1:
        raise SpecError("poly(): 'degree' must be at least 1")
    if np.isnan(x).any():
        raise DataError(f"missing values are not allowed in 'poly' ({expr.deparse()}), as in R")
    names = tuple(str(i) for i in range(1, degree + 1))
    if raw:
        return Numeric(np.column_stack([x**i for i in range(1, degree + 1)]), names, matrix=True,
                       params={"raw": True})
    if degree >= len(np.unique(x)):
        raise DataError(f"poly(): 'degree' must be less than number of unique points ({expr.deparse()})")
    xbar = float(np.mean(x))
    xc = x - xbar
    X = np.column_stack([xc**i for i in range(degree + 1)])
    q, r = np.linalg.qr(X)
    Z = q * np.diag(r)[None, :]
    norm2 = np.sum(Z**2, axis=0)
    alpha = (np.sum(xc[:, None] * Z**2, axis=0) / norm2 + xbar)[:degree]
    Z = Z / np.sqrt(norm2)[None, :]
    return Numeric(Z[:, 1:], names, matrix=True,
                   params={"alpha": alpha.tolist(), "norm2": [1.0] + norm2.tolist()})


def _as_factor(v: Value, expr: Expr, refactor: bool) -> Factor:
    if isinstance(v, Factor):
        if v.logical:
            present = sorted(set(v.codes[v.codes >= 0].tolist()))
            labels = tuple(v.levels[i] for i in present)
            remap = {c: i for i, c in enumerate(present)}
            codes = np.array([remap.get(c, -1) for c in v.codes.tolist()], dtype=np.int64)
            return Factor(codes, labels)
        if refactor:  # factor() makes a new factor without unused levels (and without contrasts)
            return Factor(v.codes, v.levels, v.ordered, order_sure=v.order_sure).dropped(np.arange(len(v.codes)))
        return Factor(v.codes, v.levels, v.ordered, contrasts=v.contrasts, order_sure=v.order_sure)
    if v.values.shape[1] != 1:
        raise SpecError(f"{expr.value}() needs one column, but its argument has {v.values.shape[1]}")
    x = v.values[:, 0]
    missing = np.isnan(x)
    # An integer column's levels print as R prints integers (100000, not 1e+05).
    fac = _sorted_factor(x, missing, bool(v.params.get("integer_column", False)), expr.deparse())
    return fac


def _labels_of(v: Value) -> tuple[np.ndarray, np.ndarray]:
    """R's ``as.character(x)`` of a variable: each row's text, and the missing mask."""
    if isinstance(v, Factor):
        lv = np.array(list(v.levels) + [""], dtype=object)
        return lv[np.where(v.codes >= 0, v.codes, len(v.levels))], v.codes < 0
    if v.values.shape[1] != 1:
        raise SpecError("factor() needs one column")
    x = v.values[:, 0]
    integer = bool(v.params.get("integer_column", False))
    missing = np.isnan(x)
    cache: dict[float, str] = {}
    out = np.empty(len(x), dtype=object)
    for i, u in enumerate(x.tolist()):
        if not missing[i]:
            out[i] = cache.get(u) or cache.setdefault(u, _r_label(u, integer))
    return out, missing


def _vector(expr: Expr, what: str) -> list[float | str | bool]:
    """An R vector literal: ``c(...)`` of numbers, strings or TRUE/FALSE, a number, a string, ``a:b``."""
    if expr.kind == "call" and expr.value == "c":
        if any(k is not None for k in expr.keys):
            raise SpecError(f"{what}: named elements in c() are not supported")
        out: list[float | str | bool] = []
        for a in expr.args:
            out += _vector(a, what)
        return out
    if expr.kind == "str":
        return [expr.value]
    if expr.kind == "name" and expr.value in ("TRUE", "FALSE", "T", "F"):
        return [expr.value in ("TRUE", "T")]
    if expr.kind == "bin" and expr.value == ":":
        a, b = _scalar(expr.args[0], what), _scalar(expr.args[1], what)
        step = 1.0 if b >= a else -1.0
        return [a + step * i for i in range(int(abs(b - a)) + 1)]
    if expr.kind == "paren":
        return _vector(expr.args[0], what)
    return [_scalar(expr, what)]


def _numbers(expr: Expr, what: str) -> np.ndarray:
    vals = _vector(expr, what)
    if any(isinstance(v, str) for v in vals):
        raise SpecError(f"{what} must be numbers, got {expr.deparse()}")
    return np.array(vals, dtype=float)


def _text_vector(expr: Expr, what: str) -> list[str]:
    """A vector literal as R's ``as.character`` gives it (numbers as R prints them)."""
    out = []
    for v in _vector(expr, what):
        if isinstance(v, bool):
            out.append("TRUE" if v else "FALSE")
        elif isinstance(v, float):
            out.append(format_r_number(v))
        else:
            out.append(v)
    return out


def _factor_call(expr: Expr, data: pd.DataFrame) -> Factor:
    """``factor(x, levels, labels = levels, exclude = NA, ordered = is.ordered(x))`` as R's."""
    fn = expr.value
    a = _args(expr, ("x", "levels", "labels", "exclude", "ordered", "nmax"))
    for bad in ("exclude", "nmax"):
        if bad in a:
            raise SpecError(f"{fn}(): the {bad}= argument is not supported")
    inner = evaluate(a["x"], data)
    ordered = _logical(a["ordered"], f"{fn}()'s ordered") if "ordered" in a else (
        fn == "ordered" or (isinstance(inner, Factor) and inner.ordered))
    if "levels" not in a:
        if "labels" in a:
            fac = _as_factor(inner, expr, refactor=True)
            return _relabel(fac, _text_vector(a["labels"], f"{fn}()'s labels"), ordered, fn)
        fac = _as_factor(inner, expr, refactor=True)
        return Factor(fac.codes, fac.levels, ordered, order_sure=fac.order_sure)
    levels = list(dict.fromkeys(_text_vector(a["levels"], f"{fn}()'s levels")))
    text, missing = _labels_of(inner)
    index = {lab: i for i, lab in enumerate(levels)}
    codes = np.array([-1 if m else index.get(t, -1) for t, m in zip(text.tolist(), missing.tolist())],
                     dtype=np.int64)
    fac = Factor(codes, tuple(levels), ordered)
    if "labels" in a:
        return _relabel(fac, _text_vector(a["labels"], f"{fn}()'s labels"), ordered, fn)
    return fac


def _relabel(fac: Factor, labels: list[str], ordered: bool, fn: str) -> Factor:
    """factor()'s ``labels =``: one per level (equal labels merge levels), or one prefix."""
    n = len(fac.levels)
    if len(labels) == 1 and n != 1:
        labels = [f"{labels[0]}{i}" for i in range(1, n + 1)]
    if len(labels) != n:
        raise DataError(f"{fn}(): invalid 'labels'; length {len(labels)} should be 1 or {n} (R's rule)")
    new_levels = list(dict.fromkeys(labels))
    remap = np.array([new_levels.index(lab) for lab in labels] + [-1], dtype=np.int64)
    return Factor(remap[np.where(fac.codes >= 0, fac.codes, n)], tuple(new_levels), ordered,
                  order_sure=fac.order_sure)


def _r_seq(start: float, stop: float, n: int) -> np.ndarray:
    """R's ``seq.int(start, stop, length.out = n)``: filled from both ends, as R's C code does."""
    out = np.empty(n)
    out[0] = start
    if n > 1:
        out[-1] = stop
    by = (stop - start) / (n - 1) if n > 1 else 0.0
    for i in range(1, n - 1):
        out[i] = start + i * by if i < n / 2 else stop - (n - 1 - i) * by
    return out


def _format_c(value: float, digits: int) -> str:
    """R's ``formatC(value, digits = digits, width = 1)`` of a double (C's ``%.*g``)."""
    return "%.*g" % (digits, value + 0.0)


def _cut(expr: Expr, data: pd.DataFrame, breaks_learned: list[float] | None = None) -> Value:
    """``cut(x, breaks, labels = NULL, include.lowest = FALSE, right = TRUE, dig.lab = 3,
    ordered_result = FALSE)``, as R's ``cut.default``."""
    a = _args(expr, ("x", "breaks", "labels", "include.lowest", "right", "dig.lab", "ordered_result"))
    if "breaks" not in a:
        raise SpecError("cut() needs breaks = (a number of intervals or a vector of break points)")
    x = _arith(a["x"], data)
    right = _logical(a["right"], "cut()'s right") if "right" in a else True
    lowest = _logical(a["include.lowest"], "cut()'s include.lowest") if "include.lowest" in a else False
    dig = int(_scalar(a["dig.lab"], "cut()'s dig.lab")) if "dig.lab" in a else 3
    ordered = _logical(a["ordered_result"], "cut()'s ordered_result") if "ordered_result" in a else False
    if breaks_learned is not None:
        breaks = np.array(breaks_learned, dtype=float)
    else:
        given = _numbers(a["breaks"], "cut()'s breaks")
        if len(given) == 1:
            if not given[0] >= 2:
                raise SpecError("cut(): invalid number of intervals (breaks must be at least 2)")
            nb = int(given[0] + 1)
            ok = x[~np.isnan(x)]
            if not ok.size:
                raise DataError(f"cut(): {a['x'].deparse()} has no non-missing values")
            lo, hi = float(ok.min()), float(ok.max())
            dx = hi - lo
            if dx == 0:
                dx = abs(lo) if lo != 0 else 1.0
                breaks = _r_seq(lo - dx / 1000, hi + dx / 1000, nb)
            else:
                breaks = _r_seq(lo, hi, nb)
                breaks[0], breaks[-1] = lo - dx / 1000, hi + dx / 1000
        else:
            breaks = np.sort(given)
    nb = len(breaks)
    if len(set(breaks.tolist())) != nb:
        raise SpecError("cut(): 'breaks' are not unique")
    # .bincode: interval i holds breaks[i] < x <= breaks[i+1] (right) or breaks[i] <= x < breaks[i+1].
    with np.errstate(invalid="ignore"):
        idx = np.searchsorted(breaks, x, side="left" if right else "right")
        if lowest:
            idx = np.where(x == breaks[0], 1, idx) if right else np.where(x == breaks[-1], nb - 1, idx)
    codes = np.where(np.isnan(x) | (idx < 1) | (idx > nb - 1), -1, idx - 1).astype(np.int64)
    params = {"breaks": breaks.tolist()}
    labels_arg = a.get("labels")
    if labels_arg is not None and labels_arg.kind == "name" and labels_arg.value in ("FALSE", "F"):
        return Numeric(np.where(codes >= 0, codes + 1.0, np.nan)[:, None], params=params)
    if labels_arg is not None and not (labels_arg.kind == "name" and labels_arg.value == "NULL"):
        labels = _text_vector(labels_arg, "cut()'s labels")
        if len(labels) != nb - 1:
            raise SpecError("cut(): lengths of 'breaks' and 'labels' differ")
    else:
        for d in range(dig, max(12, dig) + 1):
            ch = [_format_c(b, d) for b in breaks.tolist()]
            if all(ch[i] != ch[i + 1] for i in range(nb - 1)):
                labels = [f"{'(' if right else '['}{ch[i]},{ch[i + 1]}{']' if right else ')'}" for i in range(nb - 1)]
                if lowest:
                    if right:
                        labels[0] = "[" + labels[0][1:]
                    else:
                        labels[-1] = labels[-1][:-1] + "]"
                break
        else:
            labels = [f"Range_{i}" for i in range(1, nb)]
    fac = _relabel(Factor(codes, tuple(str(i) for i in range(1, nb))), labels, ordered, "cut")
    return Factor(fac.codes, fac.levels, ordered, params=params)


def _interaction(expr: Expr, data: pd.DataFrame) -> Factor:
    """``interaction(..., drop = FALSE, sep = ".", lex.order = FALSE)`` as R's."""
    factors = [a for a, k in zip(expr.args, expr.keys) if k is None]
    opts = {k: a for a, k in zip(expr.args, expr.keys) if k is not None}
    for k in opts:
        if k not in ("drop", "sep", "lex.order"):
            raise SpecError(f"interaction() has no argument {k!r} (it takes ..., drop, sep, lex.order)")
    if not factors:
        raise SpecError("interaction(): no factors specified")
    drop = _logical(opts["drop"], "interaction()'s drop") if "drop" in opts else False
    lex = _logical(opts["lex.order"], "interaction()'s lex.order") if "lex.order" in opts else False
    sep = opts["sep"].value if "sep" in opts and opts["sep"].kind == "str" else "."
    if "sep" in opts and opts["sep"].kind != "str":
        raise SpecError("interaction()'s sep must be a string")
    parts = []
    for e in factors:
        f = _as_factor(evaluate(e, data), e, refactor=False)
        parts.append(f.dropped(np.arange(len(f.codes))) if drop else f)
    sure = all(p.order_sure for p in parts)
    ans = parts[-1].codes.copy()
    lvs = list(parts[-1].levels)
    missing = parts[-1].codes < 0
    for f in reversed(parts[:-1]):
        missing |= f.codes < 0
        l_ = list(f.levels)
        if lex:
            ans = ans + len(lvs) * f.codes
            lvs = [f"{a}{sep}{b}" for a in l_ for b in lvs]
        else:
            ans = ans * len(l_) + f.codes
            lvs = [f"{a}{sep}{b}" for b in lvs for a in l_]
        if len(set(lvs)) != len(lvs):  # equal labels merge, at the first one's place
            first = {}
            new_index = []
            for lab in lvs:
                first.setdefault(lab, len(first))
                new_index.append(first[lab])
            ans = np.where(missing, -1, np.array(new_index + [-1])[np.where(missing, -1, ans)])
            lvs = list(first)
        if drop:
            used = sorted(set(ans[~missing].tolist()))
            remap = {c: i for i, c in enumerate(used)}
            ans = np.array([remap.get(c, -1) for c in ans.tolist()], dtype=np.int64)
            lvs = [lvs[c] for c in used]
    codes = np.where(missing, -1, ans).astype(np.int64)
    return Factor(codes, tuple(lvs), order_sure=sure)


_CONTR_NAMES = {"poly": "poly", "helmert": "helmert", "sum": "sum", "treatment": "treatment", "SAS": "SAS"}


def _c_call(expr: Expr, data: pd.DataFrame) -> Factor:
    """``C(object, contr, how.many, ...)``: the factor with R's ``contrasts`` attribute."""
    positional = [a for a, k in zip(expr.args, expr.keys) if k is None]
    keyed = {k: a for a, k in zip(expr.args, expr.keys) if k is not None}
    obj = keyed.pop("object", None) or (positional.pop(0) if positional else None)
    if obj is None:
        raise SpecError("C() needs a factor: C(f, contr.sum)")
    contr = keyed.pop("contr", None) or (positional.pop(0) if positional else None)
    if "how.many" in keyed or positional:
        raise SpecError("C(): the how.many argument is not supported")
    base = keyed.pop("base", None)
    if keyed:
        raise SpecError(f"C(): the argument(s) {', '.join(keyed)} are not supported (it takes contr and base)")
    value = evaluate(obj, data)
    if not isinstance(value, Factor) or value.character or value.logical:
        # R's C() leaves text, numbers and logicals as they are, then finds no levels.
        raise SpecError(f"C() needs a factor, as in R (which says 'object not interpretable as a factor'): "
                        f"write C(factor({obj.deparse()}), ...)")
    fac = _as_factor(value, obj, refactor=False)
    if contr is None:
        kind, by_number = ("poly" if fac.ordered else "treatment"), False
    elif contr.kind == "name" and contr.value in _CONTR_NAMES:  # C(f, sum): R's "contr.sum", by name
        kind, by_number = _CONTR_NAMES[contr.value], False
    elif contr.kind == "name" and contr.value.startswith("contr.") and contr.value[6:] in _CONTR_NAMES:
        kind, by_number = contr.value[6:], True  # the function: called on the number of levels
    elif contr.kind == "str" and contr.value.startswith("contr.") and contr.value[6:] in _CONTR_NAMES:
        kind, by_number = contr.value[6:], False
    else:
        raise SpecError(f"C(): unknown contrast {contr.deparse()} (use contr.treatment, contr.sum, contr.helmert, "
                        "contr.poly, contr.SAS or their short names)")
    b = None
    if base is not None:
        if kind not in ("treatment",):
            raise SpecError("C(): base= goes with contr.treatment only")
        b, by_number = int(_scalar(base, "C()'s base")), True  # contr(nlevels(object), base = ...)
    return Factor(fac.codes, fac.levels, fac.ordered, fac.logical, contrasts=Contrast(kind, base=b, by_number=by_number),
                  order_sure=fac.order_sure)


def _spline(expr: Expr, data: pd.DataFrame, learned: dict | None = None) -> Numeric:
    """``ns(x, df, knots, intercept, Boundary.knots)`` and ``bs(x, df, knots, degree, intercept,
    Boundary.knots)`` from R's splines package; ``learned`` (for new data) holds the fit's
    knots, as R's ``makepredictcall`` puts them in the call."""
    from hlmbridge.design.splines import bs_basis, ns_basis, spline_knots

    natural = expr.value == "ns"
    names = ("x", "df", "knots", "intercept", "Boundary.knots") if natural else (
        "x", "df", "knots", "degree", "intercept", "Boundary.knots", "warn.outside")
    a = _args(expr, names)
    x = _arith(a["x"], data)
    degree = 3 if natural else (int(_scalar(a["degree"], "bs()'s degree")) if "degree" in a else 3)
    if degree < 1:
        raise SpecError("bs(): 'degree' must be integer >= 1")
    intercept = _logical(a["intercept"], f"{expr.value}()'s intercept") if "intercept" in a else False
    if learned is not None:
        knots = np.array(learned["knots"], dtype=float)
        boundary = tuple(learned["boundary"])
    else:
        ok = x[~np.isnan(x)]
        if "Boundary.knots" in a:
            bk = np.sort(_numbers(a["Boundary.knots"], f"{expr.value}()'s Boundary.knots"))
            if len(bk) != 2:
                raise SpecError(f"{expr.value}(): Boundary.knots must be two numbers")
            boundary = (float(bk[0]), float(bk[1]))
        else:
            if not ok.size:
                raise DataError(f"{expr.value}(): {a['x'].deparse()} has no non-missing values")
            boundary = (float(ok.min()), float(ok.max()))
        if "knots" in a and not (a["knots"].kind == "name" and a["knots"].value == "NULL"):
            knots = np.sort(_numbers(a["knots"], f"{expr.value}()'s knots"))
        elif "df" in a:
            df = int(_scalar(a["df"], f"{expr.value}()'s df"))
            inside = ok[(ok >= boundary[0]) & (ok <= boundary[1])]
            knots = spline_knots(inside, df, degree, intercept, natural=natural)
            need = (1 + int(intercept)) if natural else (degree + 1 - (1 - int(intercept)))
            if df < need:
                raise SpecError(f"{expr.value}(): df = {df} is too small; R would warn and use {need}")
        else:
            knots = np.empty(0)
    basis = ns_basis(x, knots, boundary, intercept) if natural else bs_basis(x, knots, boundary, degree, intercept)
    params = {"knots": knots.tolist(), "boundary": list(boundary)}
    return Numeric(basis, tuple(str(i) for i in range(1, basis.shape[1] + 1)), matrix=True, params=params)


_SUMMARIES = ("mean", "sd", "median", "min", "max", "sum", "length")


def _summary(expr: Expr, data: pd.DataFrame) -> Numeric:
    """R's ``mean``, ``sd``, ``median``, ``min``, ``max``, ``sum``, ``length`` over every row of
    the frame (NA unless ``na.rm = TRUE``), recycled to a column."""
    fn = expr.value
    positional = [a for a, k in zip(expr.args, expr.keys) if k is None]
    keyed = {k: a for a, k in zip(expr.args, expr.keys) if k is not None}
    if "x" in keyed and fn in ("mean", "sd", "median", "length"):
        positional.insert(0, keyed.pop("x"))
    na_rm = _logical(keyed.pop("na.rm"), f"{fn}()'s na.rm") if "na.rm" in keyed and fn != "length" else False
    if keyed:
        raise SpecError(f"{fn}(): the argument(s) {', '.join(keyed)} are not supported")
    if not positional or (len(positional) > 1 and fn not in ("min", "max", "sum")):
        raise SpecError(f"{fn}() takes one vector here (and na.rm = TRUE or FALSE)")
    x = np.concatenate([_arith(p, data) for p in positional])
    n = len(data)
    if fn == "length":
        return Numeric(np.full((n, 1), float(len(x))))
    if np.isnan(x).any():
        if not na_rm:
            return Numeric(np.full((n, 1), np.nan))
        x = x[~np.isnan(x)]
    with np.errstate(all="ignore"):
        if fn == "mean":
            value = float(np.mean(x)) if x.size else np.nan
        elif fn == "sd":
            value = float(np.std(x, ddof=1)) if x.size > 1 else np.nan
        elif fn == "median":
            value = float(np.median(x)) if x.size else np.nan
        elif fn == "sum":
            value = float(np.sum(x))
        else:
            if not x.size:
                raise DataError(f"{fn}(): no non-missing arguments (R returns {'Inf' if fn == 'min' else '-Inf'})")
            value = float(np.min(x) if fn == "min" else np.max(x))
    return Numeric(np.full((n, 1), value))


def evaluate(expr: Expr, data: pd.DataFrame) -> Value:
    """Evaluate one formula variable over every row of ``data``.

    Raises
    ------
    SpecError
        An argument R would reject (``relevel`` of a non-factor, a bad ``poly`` degree).
    DataError
        A missing column, or data R cannot use this way.
    """
    k = expr.kind
    if k == "name":
        v = column_value(data, expr.value)
        if isinstance(v, Numeric) and pd.api.types.is_integer_dtype(data[expr.value].dtype):
            return Numeric(v.values, params={"integer_column": True})
        return v
    if k == "paren":
        return evaluate(expr.args[0], data)
    if k in ("num", "neg", "bin"):
        return Numeric(_arith(expr, data)[:, None])
    if k != "call":
        raise SpecError(f"cannot evaluate {expr.deparse()}")
    fn = expr.value
    if fn == "I":
        if len(expr.args) != 1 or expr.keys[0] is not None:
            raise SpecError("I() takes one expression")
        return Numeric(_arith(expr.args[0], data)[:, None])
    if fn == "offset":
        return Numeric(_arith(_args(expr, ("object",))["object"], data)[:, None])
    if fn in _UNARY or fn == "log":
        a = _args(expr, ("x", "base") if fn == "log" else ("x",))
        x = _arith(a["x"], data)
        with np.errstate(all="ignore"):
            if fn == "log":
                out = np.log(x)
                if "base" in a:
                    out = out / np.log(_scalar(a["base"], "log()'s base"))
            else:
                out = _UNARY[fn](x)
        return Numeric(out[:, None])
    if fn in _SUMMARIES:
        return _summary(expr, data)
    if fn == "scale":
        return _scale(expr, data)
    if fn == "poly":
        return _poly(expr, data)
    if fn in ("ns", "bs"):
        return _spline(expr, data)
    if fn == "cut":
        return _cut(expr, data)
    if fn == "interaction":
        return _interaction(expr, data)
    if fn == "C":
        return _c_call(expr, data)
    if fn in ("factor", "ordered"):
        return _factor_call(expr, data)
    if fn in ("as.factor", "as.ordered"):
        a = _args(expr, ("x",))
        fac = _as_factor(evaluate(a["x"], data), expr, refactor=False)
        if fn == "as.ordered" and not fac.ordered:
            return Factor(fac.codes, fac.levels, ordered=True, order_sure=fac.order_sure)
        return fac
    if fn == "relevel":
        a = _args(expr, ("x", "ref"))
        if "ref" not in a:
            raise SpecError("relevel() needs ref = <level>")
        inner = evaluate(a["x"], data)
        if not isinstance(inner, Factor) or inner.logical or inner.character or inner.ordered:
            raise SpecError(f"relevel() works on an unordered factor only, as in R: write "
                            f"relevel(factor({a['x'].deparse()}), ref = ...)")
        ref = a["ref"]
        if ref.kind == "str":
            if ref.value not in inner.levels:
                raise DataError(f"relevel(): ref = {ref.deparse()} is not a level of {a['x'].deparse()} "
                                f"(levels: {', '.join(inner.levels[:10])})")
            pos = inner.levels.index(ref.value)
        else:
            pos = int(_scalar(ref, "relevel()'s ref")) - 1  # R: a number is a position
            if not 0 <= pos < len(inner.levels):
                raise DataError(f"relevel(): ref = {ref.deparse()} is not a level position of {a['x'].deparse()}")
        order = [pos] + [i for i in range(len(inner.levels)) if i != pos]
        remap = np.empty(len(order), dtype=np.int64)
        remap[order] = np.arange(len(order))
        codes = np.where(inner.codes >= 0, remap[np.maximum(inner.codes, 0)], -1)
        return Factor(codes, tuple(inner.levels[i] for i in order), order_sure=inner.order_sure)
    raise SpecError(f"unknown function {fn}()")


def evaluate_learned(expr: Expr, data: pd.DataFrame, params: dict) -> Value:
    """Evaluate ``expr`` on new data with what it learned on the fit data (R's ``predict``
    through ``makepredictcall``): a top-level ``scale()`` uses the fit's centre and scale,
    a top-level ``poly()`` the fit's coefficients (``predict.poly``), ``ns()``/``bs()`` the
    fit's knots and boundary knots, and ``cut()`` the fit's breaks (R would recompute
    ``cut(x, breaks = k)``'s breaks from the new rows; the fit's keep its levels); anything
    else is evaluated afresh, as R does (so ``I(x - mean(x))`` takes the new rows' mean).

    >>> from hlmbridge.spec.rformula import parse_formula
    >>> e = parse_formula("y ~ scale(x) + (1 | g)").fixed.variables[0]
    >>> evaluate_learned(e, pd.DataFrame({"x": [3.0]}), {"center": 1.0, "scale": 2.0}).values.tolist()
    [[1.0]]
    """
    if expr.kind == "call" and expr.value in ("ns", "bs") and params:
        return _spline(expr, data, learned=params)
    if expr.kind == "call" and expr.value == "cut" and params:
        return _cut(expr, data, breaks_learned=params["breaks"])
    if expr.kind == "call" and expr.value == "scale" and params:
        x = _arith(_args(expr, ("x", "center", "scale"))["x"], data)
        if "center" in params:
            x = x - params["center"]
        if "scale" in params:
            x = x / params["scale"]
        return Numeric(x[:, None], None, matrix=True, params=dict(params))
    if expr.kind == "call" and expr.value == "poly" and params:
        a = _args(expr, ("x", "degree", "coefs", "raw", "simple"))
        x = _arith(a["x"], data)
        if params.get("raw"):
            degree = int(_scalar(a["degree"], "poly()'s degree")) if "degree" in a else 1
            cols = [x**i for i in range(1, degree + 1)]
        else:
            alpha, norm2 = params["alpha"], params["norm2"]
            degree = len(alpha)
            Z = [np.ones_like(x), x - alpha[0]]
            for i in range(1, degree):
                Z.append((x - alpha[i]) * Z[i] - (norm2[i + 1] / norm2[i]) * Z[i - 1])
            cols = [Z[i] / np.sqrt(norm2[i + 1]) for i in range(1, degree + 1)]
        return Numeric(np.column_stack(cols), tuple(str(i) for i in range(1, degree + 1)), matrix=True,
                       params=dict(params))
    return evaluate(expr, data)
