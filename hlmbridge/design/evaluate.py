"""hlmbridge's own evaluator for the variables of a formula (never ``eval``, never R).

A variable (:class:`~hlmbridge.spec.rformula.Expr`) is evaluated over the data columns on
*all* rows of the caller's frame, as R's ``model.frame`` does before it applies
``subset`` and ``na.action``: so ``scale(x)`` and ``poly(x, 2)`` use the same rows R uses.
The result is a :class:`Numeric` (a vector or a matrix with column names, as ``poly``
gives) or a :class:`Factor` (codes, levels in R's order, ordered or not); a logical
column is a factor with levels ``FALSE``/``TRUE`` (R's ``model.matrix`` rule).

Column types follow R: numbers are numeric; ``bool`` is logical; strings are character
(a factor with sorted levels: hlmbridge sorts by code point, R's order under
``LC_COLLATE=C``); pandas ``Categorical`` is a factor with its categories' order (an
ordered one is an ordered factor); pandas nullable dtypes keep their NA.

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
    """A factor: 0-based ``codes`` (-1 = NA) into ``levels`` (R's labels, in R's order)."""

    codes: np.ndarray
    levels: tuple[str, ...]
    ordered: bool = False
    logical: bool = False
    character: bool = False

    @property
    def missing(self) -> np.ndarray:
        """Rows with NA."""
        return self.codes < 0

    def dropped(self, rows: np.ndarray) -> Factor:
        """The factor on ``rows`` with unused levels dropped (lme4's ``drop.unused.levels``)."""
        codes = self.codes[rows]
        if self.logical:  # R codes a logical by factor(x, levels = c(FALSE, TRUE)): both always
            return Factor(codes, self.levels, logical=True)
        used = np.zeros(len(self.levels), dtype=bool)
        used[codes[codes >= 0]] = True
        remap = np.cumsum(used) - 1
        new = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        return Factor(new, tuple(lv for lv, u in zip(self.levels, used) if u), self.ordered)


Value = Numeric | Factor


def _r_label(value: object, integer: bool) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if integer and isinstance(value, (int, np.integer, float, np.floating)) and float(value).is_integer():
        return str(int(value))  # an R integer column prints without exponent
    if isinstance(value, (float, np.floating, int, np.integer)):
        return format_r_number(float(value))
    return str(value)


def _sorted_factor(values: np.ndarray, missing: np.ndarray, integer: bool, name: str) -> Factor:
    """factor(x): levels are the sorted distinct values, labelled as R prints them."""
    present = values[~missing]
    uniques = sorted(set(present.tolist()))
    labels = [_r_label(u, integer) for u in uniques]
    if len(set(labels)) != len(labels):
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise DataError(f"the values of {name!r} give the same R level label {dup[0]!r} to different values; "
                        "R would merge them into one level")
    index = {u: i for i, u in enumerate(uniques)}
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[~missing] = [index[v] for v in present.tolist()]
    return Factor(codes, tuple(labels))


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
        fac = _sorted_factor(arr, missing, False, name)
        return Factor(fac.codes, fac.levels, character=True)
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
        if refactor:  # factor() drops unused levels; as.factor() keeps a factor as it is
            return Factor(v.codes, v.levels, v.ordered).dropped(np.arange(len(v.codes)))
        return Factor(v.codes, v.levels, v.ordered)
    if v.values.shape[1] != 1:
        raise SpecError(f"{expr.value}() needs one column, but its argument has {v.values.shape[1]}")
    x = v.values[:, 0]
    missing = np.isnan(x)
    # An integer column's levels print as R prints integers (100000, not 1e+05).
    fac = _sorted_factor(x, missing, bool(v.params.get("integer_column", False)), expr.deparse())
    return fac


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
    if fn == "scale":
        return _scale(expr, data)
    if fn == "poly":
        return _poly(expr, data)
    if fn in ("factor", "as.factor", "ordered", "as.ordered"):
        a = _args(expr, ("x",))
        inner = evaluate(a["x"], data)
        fac = _as_factor(inner, expr, refactor=fn in ("factor", "ordered"))
        if fn in ("ordered", "as.ordered"):
            return Factor(fac.codes, fac.levels, ordered=True)
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
        return Factor(codes, tuple(inner.levels[i] for i in order))
    raise SpecError(f"unknown function {fn}()")


def evaluate_learned(expr: Expr, data: pd.DataFrame, params: dict) -> Value:
    """Evaluate ``expr`` on new data with what it learned on the fit data (R's ``predict``
    through ``makepredictcall``): a top-level ``scale()`` uses the fit's centre and scale,
    a top-level ``poly()`` the fit's coefficients (``predict.poly``); anything else is
    evaluated afresh, as R does.

    >>> from hlmbridge.spec.rformula import parse_formula
    >>> e = parse_formula("y ~ scale(x) + (1 | g)").fixed.variables[0]
    >>> evaluate_learned(e, pd.DataFrame({"x": [3.0]}), {"center": 1.0, "scale": 2.0}).values.tolist()
    [[1.0]]
    """
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
