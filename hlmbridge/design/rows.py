"""Which rows a fit uses, and with what weights and offset: lmer's ``subset=``,
``weights=``, ``offset=`` and ``na.action=`` arguments, the same for every engine.

As R's ``model.frame`` does, ``subset`` is applied first, then rows with a missing value
in any model variable (or in the weights or offset) are dropped (``na.omit`` and
``na.exclude`` both drop them for the fit; ``na.fail`` refuses).

Each argument may be written as an lmer user writes it, an R expression over the data's
columns (``subset="Days >= 2 & Subject != '308'"``, ``weights="1 / (Days + 1)"``): it is
parsed by :func:`hlmbridge.spec.rformula.parse_r_expression` and evaluated here with R's
rules (:func:`argument_values`), never with Python's ``eval``.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"w": [1.0, 2.0, 3.0]})
>>> plan = row_plan(df, weights="w", subset=[True, False, True])
>>> plan.weights.tolist(), plan.subset.tolist(), plan.na_action
([1.0, 2.0, 3.0], [True, False, True], 'omit')
>>> row_plan(df, subset="w >= 2 & !is.na(w)").subset.tolist()
[False, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError, SpecError, UsageError

__all__ = ["NA_ACTIONS", "RowPlan", "argument_values", "row_argument", "row_plan", "select_rows"]

#: Accepted spellings of ``na_action`` and what they mean.
NA_ACTIONS: dict[str, str] = {
    "na.omit": "omit", "omit": "omit", "na.exclude": "exclude", "exclude": "exclude",
    "na.fail": "fail", "fail": "fail",
}


@dataclass(frozen=True, eq=False)
class RowPlan:
    """Per-row arrays over the caller's frame (None when not given)."""

    subset: np.ndarray | None = None
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    na_action: str = "omit"

    @property
    def is_default(self) -> bool:
        """True when nothing but listwise deletion applies."""
        return self.subset is None and self.weights is None and self.offset is None and self.na_action == "omit"


# ---------------------------------------------------------------------------- R expressions
# A value is (kind, array): "num" (float, NaN = NA), "lgl" (float 0/1, NaN = NA) or "chr"
# (object, None = NA); an array of length 1 is recycled over the rows, as R does.
_Val = tuple[str, np.ndarray]
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}
_CMP = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
        ">=": np.greater_equal}


def argument_values(text: str, data: pd.DataFrame, what: str) -> np.ndarray:
    """lmer's ``subset=``/``weights=``/``offset=`` written as R code, evaluated over ``data``'s
    columns as R evaluates it: one value per row, a float array (NaN for NA; a logical
    expression gives 1.0/0.0). Columns are read as R reads them (strings and categoricals
    compare by their labels); the names ``TRUE``, ``FALSE``, ``T``, ``F`` and ``NA`` are R's
    constants unless ``T``/``F`` is a column. Supported: numbers, strings, ``+ - * / ^``,
    ``== != < <= > >=``, ``! & | && ||``, ``%in%``, ``c()``, ``is.na()`` and the formula
    functions (``log()``, ``sqrt()`` ...). Anything else is a UsageError naming it.

    >>> df = pd.DataFrame({"d": [0, 3, 5, None], "s": ["a", "b", "a", "c"]})
    >>> argument_values("d >= 2 & s %in% c('a', 'c')", df, "subset").tolist()
    [0.0, 0.0, 1.0, nan]
    """
    from hlmbridge.spec.rformula import parse_r_expression

    try:
        expr = parse_r_expression(text)
        kind, values = _eval(expr, data, what)
    except SpecError as exc:
        raise UsageError(f"{what}={text!r} is not an R expression hlmbridge evaluates: {exc}") from None
    except _Unsupported as exc:
        raise UsageError(f"{what}={text!r}: {exc}") from None
    if kind == "chr":
        raise UsageError(f"{what}={text!r} gives strings, not {'TRUE/FALSE' if what == 'subset' else 'numbers'}")
    if values.shape[0] == 1:
        values = np.repeat(values, len(data))
    if values.shape[0] != len(data):
        raise UsageError(f"{what}={text!r} gives {values.shape[0]} values for {len(data)} rows")
    if what == "subset" and kind != "lgl":
        raise UsageError(f"subset={text!r} gives numbers; subset= takes a condition that is TRUE or FALSE for "
                         "each row (R would read numbers as row indices)")
    return values.astype(float)


def row_argument(text: str, data: pd.DataFrame, what: str, na_action: str | None = None) -> np.ndarray:
    """lmer's argument ``what`` written as R code (:func:`argument_values`), ready for
    :func:`row_plan`: ``subset`` a boolean mask (a row where the condition is NA is left out,
    as R's ``na.omit`` drops the row of NAs ``model.frame`` makes of it; ``na.fail`` refuses
    it), ``weights`` and ``offset`` numbers (NaN for NA)."""
    values = argument_values(text, data, what)
    if what != "subset":
        return values
    na = np.isnan(values)
    if na.any() and na_action is not None and NA_ACTIONS.get(na_action) == "fail":
        raise DataError(f"na_action='na.fail': subset={text!r} is NA in {int(na.sum())} row(s)")
    return values == 1.0


class _Unsupported(Exception):
    """What the expression asks that hlmbridge does not evaluate (re-raised as a UsageError
    quoting the expression)."""


def _fail(what: str, message: str) -> _Unsupported:
    return _Unsupported(message)


def _num(v: _Val, what: str, op: str) -> np.ndarray:
    if v[0] == "chr":
        raise _fail(what, f"{op} needs numbers or logicals, not strings")
    return v[1]


def _as_chr(v: _Val) -> np.ndarray:
    if v[0] == "chr":
        return v[1]
    from hlmbridge.spec.rformula import format_r_number

    if v[0] == "lgl":
        return np.array([None if np.isnan(x) else ("TRUE" if x else "FALSE") for x in v[1]], dtype=object)
    return np.array([None if np.isnan(x) else format_r_number(float(x)) for x in v[1]], dtype=object)


def _na_of(v: _Val) -> np.ndarray:
    return np.array([x is None for x in v[1]], dtype=bool) if v[0] == "chr" else np.isnan(v[1])


def _column(data: pd.DataFrame, name: str) -> _Val:
    from hlmbridge.design.evaluate import Factor, column_value

    value = column_value(data, name)
    if isinstance(value, Factor):
        if value.logical:
            return "lgl", np.where(value.codes < 0, np.nan, value.codes.astype(float))
        labels = np.array(list(value.levels) + [None], dtype=object)
        return "chr", labels[np.where(value.codes < 0, len(value.levels), value.codes)]
    if value.values.shape[1] != 1:
        raise DataError(f"the column {name!r} is not one vector")
    return "num", value.values[:, 0].astype(float)


def _eval(e: Any, data: pd.DataFrame, what: str) -> _Val:
    k = e.kind
    if k == "num":
        return "num", np.array([float(e.value.rstrip("L"))])
    if k == "str":
        return "chr", np.array([e.value], dtype=object)
    if k == "name":
        if e.value in ("TRUE", "FALSE") or (e.value in ("T", "F") and e.value not in data.columns):
            return "lgl", np.array([1.0 if e.value in ("TRUE", "T") else 0.0])
        if e.value == "NA":
            return "lgl", np.array([np.nan])
        if e.value not in data.columns:
            raise _fail(what, f"{e.value!r} is not in the data (not a column, nor one of R's constants)")
        return _column(data, e.value)
    if k == "paren":
        return _eval(e.args[0], data, what)
    if k == "neg":
        return "num", -_num(_eval(e.args[0], data, what), what, "unary -")
    if k == "not":
        x = _num(_eval(e.args[0], data, what), what, "!")
        return "lgl", np.where(np.isnan(x), np.nan, (x == 0).astype(float))
    if k == "call":
        return _call(e, data, what)
    op = e.value
    a, b = _eval(e.args[0], data, what), _eval(e.args[1], data, what)
    _recyclable(a, b, what, op)
    with np.errstate(all="ignore"):
        if op in _ARITH:
            return "num", _ARITH[op](_num(a, what, op), _num(b, what, op))
        if op in _CMP:
            na = _na_of(a) | _na_of(b)
            if a[0] == "chr" or b[0] == "chr":
                if op not in ("==", "!="):
                    raise _fail(what, f"{op} on strings compares them in R's locale collation; compare numbers, "
                                      "or use == / != / %in% on labels")
                x, y = _as_chr(a), _as_chr(b)
                eq = np.array([p == q for p, q in np.broadcast(x, y)], dtype=float)
                out = eq if op == "==" else 1.0 - eq
            else:
                out = _CMP[op](a[1], b[1]).astype(float)
            return "lgl", np.where(na, np.nan, out)
        if op in ("&", "|", "&&", "||"):
            if op in ("&&", "||") and (a[1].shape[0] != 1 or b[1].shape[0] != 1):
                raise _fail(what, f"{op} takes single values (R 4.3 refuses longer ones); use {op[0]} for a "
                                  "condition per row")
            x, y = _num(a, what, op), _num(b, what, op)
            tx, ty = np.where(np.isnan(x), np.nan, x != 0), np.where(np.isnan(y), np.nan, y != 0)
            if op[0] == "&":
                out = np.where((tx == 0) | (ty == 0), 0.0, np.where(np.isnan(tx) | np.isnan(ty), np.nan, 1.0))
            else:
                out = np.where((tx == 1) | (ty == 1), 1.0, np.where(np.isnan(tx) | np.isnan(ty), np.nan, 0.0))
            return "lgl", out
        if op == "%in%":
            if a[0] == "chr" or b[0] == "chr":
                table = set(_as_chr(b).tolist())
                return "lgl", np.array([x in table for x in _as_chr(a)], dtype=float)
            tb = b[1]
            has_na = bool(np.isnan(tb).any())
            return "lgl", np.where(np.isnan(a[1]), float(has_na), np.isin(a[1], tb[~np.isnan(tb)]).astype(float))
    raise _fail(what, f"the operator {op} is not supported here")


def _recyclable(a: _Val, b: _Val, what: str, op: str) -> None:
    la, lb = a[1].shape[0], b[1].shape[0]
    if op != "%in%" and la != lb and 1 not in (la, lb):
        raise _fail(what, f"{op} between {la} and {lb} values (R would recycle them); compare with one value "
                          "or use %in%")


def _call(e: Any, data: pd.DataFrame, what: str) -> _Val:
    fn = e.value
    if any(key is not None for key in e.keys) and fn in ("c", "is.na"):
        raise _fail(what, f"{fn}() with named arguments is not supported")
    if fn == "c":
        parts = [_eval(a, data, what) for a in e.args]
        if not parts:
            return "lgl", np.array([np.nan])[:0]
        if any(p[0] == "chr" for p in parts):
            return "chr", np.concatenate([_as_chr(p) for p in parts])
        kind = "lgl" if all(p[0] == "lgl" for p in parts) else "num"
        return kind, np.concatenate([p[1] for p in parts])
    if fn == "is.na":
        if len(e.args) != 1:
            raise _fail(what, "is.na() takes one argument")
        return "lgl", _na_of(_eval(e.args[0], data, what)).astype(float)
    from hlmbridge.design.evaluate import Factor, evaluate
    from hlmbridge.spec.rformula import FUNCTIONS

    if fn not in FUNCTIONS or fn in ("offset", "poly"):
        known = ", ".join(["c()", "is.na()"] + [f"{f}()" for f in FUNCTIONS if f not in ("offset", "poly")])
        raise _fail(what, f"unknown function {fn}() (hlmbridge evaluates: {known})")
    value = evaluate(e, data)
    if isinstance(value, Factor):
        labels = np.array(list(value.levels) + [None], dtype=object)
        return "chr", labels[np.where(value.codes < 0, len(value.levels), value.codes)]
    if value.values.shape[1] != 1:
        raise _fail(what, f"{e.deparse()} gives {value.values.shape[1]} columns, not one value per row")
    return "num", value.values[:, 0].astype(float)


def _vector(value: Any, data: pd.DataFrame, what: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in data.columns:
            # An R expression over the columns, as lmer evaluates its argument in the data.
            return row_argument(value, data, what)
        value = data[value]
    if isinstance(value, pd.Series):
        if not value.index.equals(data.index):
            raise UsageError(f"{what}= is a Series whose index differs from the data's; pass values aligned "
                             "with the data's rows (e.g. .to_numpy())")
        value = value.to_numpy()
    elif isinstance(value, pd.DataFrame):
        raise UsageError(f"{what}= must be one column, not a DataFrame")
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != len(data):
        raise UsageError(f"{what}= must have one value per row of the data ({len(data)}), got shape {arr.shape}")
    return arr


def _numbers(value: Any, data: pd.DataFrame, what: str) -> np.ndarray | None:
    """A finite-or-missing number per row (None when not given)."""
    if value is None:
        return None
    arr = _vector(value, data, what)
    try:
        out = pd.to_numeric(pd.Series(arr), errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what}= must be numbers: {exc}") from None
    if np.any(np.isinf(out)):
        raise DataError(f"{what}= has infinite values")
    return out


def row_plan(data: pd.DataFrame, *, subset: Any = None, weights: Any = None, offset: Any = None,
             na_action: str | None = None) -> RowPlan:
    """Check and align lmer's row arguments with ``data``.

    ``subset`` is a boolean mask (array-like, aligned Series, or the name of a boolean
    column); ``weights`` and ``offset`` are numbers per row (or a column name);
    ``na_action`` is ``"na.omit"`` (default), ``"na.exclude"`` or ``"na.fail"``.
    """
    sub = None
    action = "omit"
    if na_action is not None:
        if not isinstance(na_action, str) or na_action not in NA_ACTIONS:
            raise UsageError(f"na_action= must be one of {', '.join(NA_ACTIONS)}, got {na_action!r}")
        action = NA_ACTIONS[na_action]
    if isinstance(subset, str) and subset not in data.columns:
        subset = row_argument(subset, data, "subset", na_action)
    if subset is not None:
        arr = _vector(subset, data, "subset")
        if arr.dtype != bool:
            if arr.dtype == object and all(isinstance(v, (bool, np.bool_)) for v in arr):
                arr = arr.astype(bool)
            else:
                raise UsageError("subset= takes a boolean mask with one value per row (True = use the row)")
        sub = arr
        if not sub.any():
            raise DataError("subset= selects no rows")
    w = _numbers(weights, data, "weights")
    if w is not None:
        ok = ~np.isnan(w)
        if np.any(w[ok] <= 0):
            raise DataError("weights= must be positive (lme4's precision weights); drop rows with subset= instead "
                            "of giving them weight 0")
    off = _numbers(offset, data, "offset")
    return RowPlan(sub, w, off, action)


def select_rows(plan: RowPlan, missing: np.ndarray, variables: str = "a model variable") -> tuple[np.ndarray, int]:
    """Positions of the rows the fit uses, and how many ``subset`` left out.

    ``missing`` flags rows with a missing value in any model variable.
    """
    missing = missing.copy()
    for extra in (plan.weights, plan.offset):
        if extra is not None:
            missing |= np.isnan(extra)
    keep = np.ones(len(missing), dtype=bool) if plan.subset is None else plan.subset.copy()
    n_out = int((~keep).sum())
    if plan.na_action == "fail" and np.any(missing & keep):
        raise DataError(f"na_action='na.fail': {int(np.sum(missing & keep))} row(s) have a missing value in "
                        f"{variables}")
    keep &= ~missing
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise DataError("no complete observations: every row has a missing value in a model variable")
    return rows, n_out
