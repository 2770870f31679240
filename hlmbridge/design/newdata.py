"""The design of new data under the rules of a fitted design (for ``predict``).

New rows get the fit's columns, built the way the fit built them: a factor keeps the fit's
levels and contrasts (``C()``, lmer's ``contrasts=``; a level the fit did not see is a
:class:`~hlmbridge.errors.DataError`, as R's ``model.frame(xlev = ...)`` says "factor has new
levels"), a top-level ``scale()``, ``poly()``, ``ns()`` or ``bs()`` uses the centre, scale,
polynomial coefficients or knots and boundary knots learned on the fit data (R's
``makepredictcall``), a top-level ``cut()`` the fit's breaks (where R would recompute
``cut(x, breaks = k)`` on the new rows and fail on "new levels"), a Stata-style factor variable
the fit's levels and base. Anything else is evaluated afresh on the new rows, as R does: so
``I(x - mean(x))`` centres the new rows at their own mean. Each grouping factor gives every
row the code of its group in the fit, or -1 for a group the fit did not see (lme4's
``allow.new.levels = TRUE``: that factor's random effects are zero); a missing group value
counts as such a group, as in lme4.

Rows with a missing value in a variable the prediction needs are flagged in ``missing``
(their entries in ``X`` and ``Z`` are meaningless; ``predict`` returns NaN there).

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> from hlmbridge.design.build import build_design
>>> fit_df = pd.DataFrame({"y": [1.0, 2, 3, 5, 4, 6], "x": [0.0, 1, 2, 3, 4, 5], "g": list("aabbcc")})
>>> d = build_design(ModelSpec.from_lme4("y ~ scale(x) + (1 | g)"), fit_df)
>>> nd = new_design(d, pd.DataFrame({"x": [2.5, None], "g": ["a", "z"]}))
>>> nd.X[0].round(6).tolist(), nd.missing.tolist(), nd.levels[0].codes.tolist()
([1.0, 0.0], [False, True], [0, -1])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design, LevelDesign
from hlmbridge.design.evaluate import Factor, Numeric, Value, column_value, evaluate_learned
from hlmbridge.errors import DataError, HlmbridgeError, UsageError

__all__ = ["NewDesign", "NewLevel", "NewTerm", "VariableInfo", "learned_variables", "new_design", "new_terms",
           "term_level", "term_names"]


@dataclass(frozen=True)
class VariableInfo:
    """What one formula variable was on the fit rows: a factor's levels (and contrasts), or
    what a transform learned (``params``: scale's centre/scale, poly's coefficients, the
    knots of ns/bs, cut's breaks)."""

    expr: str
    factor: bool
    levels: tuple[str, ...] = ()
    ordered: bool = False
    logical: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    ncol: int = 1
    contrasts: Any = None  # the factor's own contrasts (C()), a design.contrasts.Contrast


def learned_variables(exprs: list[Any], values: list[Value], rows: np.ndarray) -> tuple[VariableInfo, ...]:
    """One :class:`VariableInfo` per formula variable, from its value on the fit's frame."""
    out: dict[str, VariableInfo] = {}
    for e, v in zip(exprs, values, strict=True):
        key = e.deparse()
        if isinstance(v, Factor):
            f = v.dropped(rows)
            out[key] = VariableInfo(key, True, f.levels, f.ordered, f.logical, params=dict(v.params),
                                    contrasts=f.contrasts)
        else:
            out[key] = VariableInfo(key, False, params=dict(v.params), ncol=int(v.values.shape[1]))
    return tuple(out.values())


@dataclass(frozen=True, eq=False)
class NewLevel:
    """One grouping factor on new rows: ``codes`` index the fit's groups (-1: unseen)."""

    codes: np.ndarray
    Z: np.ndarray


@dataclass(frozen=True, eq=False)
class NewDesign:
    """X (the fit's columns), offset, and per grouping factor the codes and Z, on new rows."""

    X: np.ndarray
    offset: np.ndarray | None
    levels: tuple[NewLevel, ...]
    missing: np.ndarray
    index: pd.Index

    @property
    def n_new(self) -> int:
        """Rows (without missing values) with at least one group the fit did not see."""
        if not self.levels:
            return 0
        unseen = np.zeros(len(self.missing), dtype=bool)
        for lv in self.levels:
            unseen |= lv.codes < 0
        return int(np.sum(unseen & ~self.missing))


def new_design(design: Design, newdata: pd.DataFrame, *, random: bool = True) -> NewDesign:
    """The design of ``newdata`` by the rules of ``design`` (``newdata`` is never modified).

    ``random=False`` skips the random part (the grouping columns and random slopes are
    then not needed). The response is never needed.

    Raises
    ------
    DataError
        Not a DataFrame, no rows, a needed column missing, a value of the wrong type, or a
        factor level the fit did not have.
    UsageError
        The fit used lmer's ``offset=`` argument, which has no value on new rows.
    """
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    if len(newdata) == 0:
        raise DataError("newdata has no rows")
    if not newdata.columns.is_unique:
        raise DataError("newdata has several columns with the same name")
    if design.offset_argument is not None:
        raise UsageError("the model was fitted with offset=, which has no value on new rows; put the offset "
                         "in the formula (offset(...)) to predict on new data")
    if design.spec.formula is not None:
        return _formula_new(design, newdata, random)
    return _stata_new(design, newdata, random)


def _need(data: pd.DataFrame, names: list[str]) -> None:
    missing = [c for c in dict.fromkeys(names) if c not in data.columns]
    if missing:
        raise DataError(f"newdata lacks the column(s) the prediction needs: {', '.join(missing)}")


# ---------------------------------------------------------------------------- lme4 formulas
def _factor_labels(expr: Any, data: pd.DataFrame, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's factor label (as R labels it) and the missing mask, ignoring relevel()."""
    while expr.kind == "paren" or (expr.kind == "call" and expr.value == "relevel"):
        expr = expr.args[0]
        params = {}
    v = evaluate_learned(expr, data, dict(params))
    if isinstance(v, Numeric):
        from hlmbridge.design.evaluate import _as_factor

        v = _as_factor(v, expr, refactor=True)
    labels = np.array(v.levels, dtype=object)[np.maximum(v.codes, 0)] if len(v.levels) else \
        np.full(len(v.codes), "", dtype=object)
    return labels, v.codes < 0


def _new_value(expr: Any, info: VariableInfo, data: pd.DataFrame) -> Value:
    name = expr.deparse()
    try:
        if info.factor:
            labels, missing = _factor_labels(expr, data, info.params)
            index = {lab: i for i, lab in enumerate(info.levels)}
            codes = np.array([-1 if m else index.get(lab, -2) for lab, m in zip(labels, missing)], dtype=np.int64)
            if np.any(codes == -2):
                bad = sorted({str(lab) for lab, c in zip(labels, codes) if c == -2})
                raise DataError(f"newdata: {name} has level(s) the fit did not have: {', '.join(bad[:5])} "
                                f"(the fit's levels: {', '.join(info.levels[:10])})")
            return Factor(codes, info.levels, info.ordered, info.logical, contrasts=info.contrasts)
        v = evaluate_learned(expr, data, dict(info.params))
    except DataError:
        raise
    except HlmbridgeError as exc:  # e.g. arithmetic on a text column
        raise DataError(f"newdata: {name} cannot be evaluated: {exc}") from None
    if isinstance(v, Factor):
        raise DataError(f"newdata: {name} is numeric in the fit but not in newdata (a text, logical or "
                        "categorical column)")
    if v.values.shape[1] != info.ncol:
        raise DataError(f"newdata: {name} has {v.values.shape[1]} column(s), the fit had {info.ncol}")
    return v


def _formula_new(design: Design, data: pd.DataFrame, random: bool) -> NewDesign:
    from hlmbridge.design.model_matrix import model_matrix

    f = design.spec.formula
    info = {v.expr: v for v in design.predvars}
    if not info and (f.fixed.variables or any(b.lhs.variables for b in f.random)):
        raise UsageError("this design does not record what its variables learned on the fit data; refit to predict")
    cols = list(f.fixed.columns())
    if random:
        for bar in f.random:
            cols += list(bar.lhs.columns()) + list(bar.group)
    _need(data, cols)
    n = len(data)
    missing = np.zeros(n, dtype=bool)

    def values_of(terms: Any) -> list[Value]:
        nonlocal missing
        vals = []
        for e in terms.variables:
            v = _new_value(e, info[e.deparse()], data)
            missing |= v.missing
            vals.append(v)
        return vals

    mm = model_matrix(f.fixed, values_of(f.fixed), n, dict(design.contrasts))
    names, X = mm.names, mm.X
    if design.dropped_lme4:  # the fit's rank-deficient columns (lme4's predict drops them too)
        keep = [j for j, name in enumerate(names) if name not in design.dropped_lme4]
        names, X = tuple(names[j] for j in keep), X[:, keep]
    if names != design.fixed_lme4:
        raise DataError(f"newdata gives the fixed-effect columns {list(names)}, the fit had "
                        f"{list(design.fixed_lme4)}")
    offset = None
    if f.fixed.offsets:
        offset = np.zeros(n)
        for o in f.fixed.offsets:
            v = _new_value(o, VariableInfo(o.deparse(), False), data)
            missing |= v.missing
            offset += v.values[:, 0]
    levels: list[NewLevel] = []
    if random:
        for ld in design.levels:
            bars = [b for b in f.random if b.label == ld.key]
            zs: list[np.ndarray] = []
            names: list[str] = []
            for bar in bars:
                zm = model_matrix(bar.lhs, values_of(bar.lhs), n)
                zs.append(zm.X)
                names += list(zm.names)
            if tuple(names) != ld.terms_lme4:
                raise DataError(f"newdata gives the random terms {names} for {ld.key}, the fit had "
                                f"{list(ld.terms_lme4)}")
            labels, _ = _group_labels([column_value(data, g) for g in bars[0].group])  # NA: an unseen group
            levels.append(NewLevel(_codes(ld, labels), np.column_stack(zs)))
    return NewDesign(X, offset, tuple(levels), missing, data.index)


def _group_labels(values: list[Value]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's label of the interaction of grouping variables (as the fit labels groups)."""
    from hlmbridge.spec.rformula import format_r_number

    parts = []
    missing = np.zeros(len(values[0].missing), dtype=bool)
    for v in values:
        missing |= v.missing
        if isinstance(v, Factor):
            lv = np.array(v.levels + ("",), dtype=object)
            parts.append(lv[np.where(v.codes >= 0, v.codes, len(v.levels))])
        else:
            x = v.values[:, 0]
            parts.append(np.array(["" if np.isnan(u) else format_r_number(float(u)) for u in x], dtype=object))
    labels = parts[0]
    for p in parts[1:]:
        labels = np.char.add(np.char.add(labels.astype(str), ":"), p.astype(str)).astype(object)
    return labels, missing


def _codes(ld: LevelDesign, labels: np.ndarray) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(ld.group_labels)}
    return np.array([index.get(str(lab), -1) for lab in labels], dtype=np.int64)


# ---------------------------------------------------------------------------- Stata commands
def _numbers(data: pd.DataFrame, name: str) -> np.ndarray:
    col = data[name]
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) or \
            pd.api.types.is_complex_dtype(col):
        raise DataError(f"newdata: the variable {name!r} is not numeric (dtype {col.dtype})")
    return col.to_numpy(dtype=float, na_value=np.nan)


def _stata_new(design: Design, data: pd.DataFrame, random: bool) -> NewDesign:
    from hlmbridge.design.build import _fmt_level, _label, _term_columns

    spec = design.spec
    n = len(data)
    fixed_vars = list(dict.fromkeys(v for t in spec.fixed for v in t.variables))
    need = list(fixed_vars)
    if random:
        for lv in spec.levels:
            need += list(lv.slopes) + [lv.group]
    _need(data, need)
    bases = dict(design.factor_bases)
    values = {v: _numbers(data, v) for v in dict.fromkeys(fixed_vars + [s for lv in spec.levels for s in lv.slopes
                                                                         if random])}
    missing = np.zeros(n, dtype=bool)
    for v in fixed_vars:
        missing |= np.isnan(values[v])
    # A factor's levels in the fit: its base and every level that names a column.
    fit_levels: dict[str, set[float]] = {name: {base} for name, base in bases.items()}
    for col in design.fixed_stata:
        for piece in col.split("#"):
            lv, dot, var = piece.partition(".")
            if dot and var in fit_levels and lv.isdigit():
                fit_levels[var].add(float(lv))
    sub = pd.DataFrame({v: values[v] for v in fixed_vars}, index=range(n))
    for var, levels in fit_levels.items():
        x = sub[var].to_numpy()
        ok = ~np.isnan(x)
        bad = sorted({float(u) for u in x[ok]} - levels)
        if bad:
            raise DataError(f"newdata: the factor variable {var!r} has level(s) the fit did not have: "
                            f"{', '.join(_fmt_level(b) if float(b).is_integer() else str(b) for b in bad[:5])}")
        sub[var] = np.where(ok, x, bases[var])
    sub = sub.fillna(0.0)
    first_seen: dict[str, int] = {}
    for term in spec.fixed:
        for v in term.variables:
            first_seen.setdefault(v, len(first_seen))
    X = np.zeros((n, len(design.fixed_stata)))
    where = {name: j for j, name in enumerate(design.fixed_stata)}
    for term in spec.fixed:
        cols, stata, _ = _term_columns(term, sub, bases, first_seen)
        for c, s in zip(cols, stata):
            if s not in where:
                if s in design.dropped_stata:  # omitted from the fit as collinear
                    continue
                raise DataError(f"newdata gives the column {s}, which the fit does not have")
            X[:, where[s]] = c
    if spec.constant:
        X[:, where["_cons"]] = 1.0
    levels: list[NewLevel] = []
    if random:
        chain: list[np.ndarray] = []
        for lv, ld in zip(spec.levels, design.levels, strict=True):
            raw = data[lv.group]
            miss = raw.isna().to_numpy()  # a missing group is a group the fit did not see (as lme4)
            text = np.array(["" if m else _label(v) for v, m in zip(raw.to_numpy(dtype=object), miss)], dtype=object)
            chain = chain + [text] if (lv.nested and chain) else [text]
            labels = chain[0]
            for p in chain[1:]:
                labels = np.array([f"{a}:{b}" for a, b in zip(labels, p)], dtype=object)
            zcols = ([np.ones(n)] if lv.intercept else []) + [values[s] for s in lv.slopes]
            for s in lv.slopes:
                missing |= np.isnan(values[s])
            levels.append(NewLevel(_codes(ld, labels), np.column_stack(zcols)))
    return NewDesign(X, None, tuple(levels), missing, data.index)


# ---------------------------------------------------------------------------- re_form terms
@dataclass(frozen=True, eq=False)
class NewTerm:
    """One random-effects term of a ``re_form`` (``(1 | g)``) on new rows: the fit's grouping
    factor it belongs to (``level``, an index into ``design.levels``), the fit's columns it
    names (``columns``, indices into that level's ``terms_lme4``), each row's group code (-1:
    a group the fit did not see, or a missing group) and the term's columns on the rows."""

    level: int
    columns: tuple[int, ...]
    codes: np.ndarray
    Z: np.ndarray
    missing: np.ndarray


def term_level(design: Design, bar: Any) -> int:
    """The index in ``design.levels`` of the grouping factor a ``re_form`` term names (lme4's
    name: ``Subject``, ``batch:cask``), or a UsageError naming the fit's grouping factors."""
    keys = [ld.key for ld in design.levels]
    if bar.label not in keys:
        raise UsageError(f"re_form names the grouping factor {bar.label!r}, which the model does not have "
                         f"(its grouping factors: {', '.join(keys)})")
    return keys.index(bar.label)


def term_names(design: Design, lhs: Any) -> tuple[str, ...]:
    """The column names lme4 gives the left-hand side ``lhs`` (a :class:`Terms`) of a
    ``re_form`` term, from what the fit's variables were (no data needed): ``(Intercept)``,
    a numeric variable's name, a factor's ``f<level>`` columns."""
    from hlmbridge.design.model_matrix import model_matrix

    info = {v.expr: v for v in design.predvars}
    values: list[Value] = []
    for e in lhs.variables:
        v = info.get(e.deparse())
        if v is None and design.spec.formula is not None:
            raise UsageError(f"re_form uses {e.deparse()!r}, which is not a variable of the model's random "
                             "effects (lme4: random effects specified in re.form that were not present in "
                             "original model)")
        if v is not None and v.factor:
            values.append(Factor(np.zeros(1, dtype=np.int64), v.levels, v.ordered, v.logical, contrasts=v.contrasts))
        elif v is not None and v.ncol > 1:
            raise UsageError(f"re_form: the matrix variable {e.deparse()!r} in a random-effects term is not "
                             "supported (write the term exactly as the model has it, or leave re_form=None)")
        else:
            values.append(Numeric(np.zeros((1, 1))))
    return tuple(model_matrix(lhs, values, 1).names)


def new_terms(design: Design, newdata: pd.DataFrame, bars: list[Any],
              columns: list[tuple[int, tuple[int, ...]]]) -> tuple[NewTerm, ...]:
    """The ``re_form`` terms ``bars`` on ``newdata`` (``columns``: each term's fit level and
    columns, from :func:`term_level` and :func:`term_names`). Only the variables of these
    terms are read, as lme4's ``mkNewReTrms`` builds only ``re.form``'s terms.

    A Stata-command fit gives each level's whole random part on new rows (so newdata needs
    every grouping variable and random slope of the model) and the term's columns are taken
    from it.
    """
    if design.spec.formula is None:
        nd = new_design(design, newdata, random=True)
        return tuple(NewTerm(lev, cols, nd.levels[lev].codes, nd.levels[lev].Z[:, list(cols)], nd.missing)
                     for (lev, cols) in columns)
    from hlmbridge.design.model_matrix import model_matrix

    info = {v.expr: v for v in design.predvars}
    out = []
    for bar, (lev, cols) in zip(bars, columns, strict=True):
        _need(newdata, list(bar.lhs.columns()) + list(bar.group))
        n = len(newdata)
        missing = np.zeros(n, dtype=bool)
        vals = []
        for e in bar.lhs.variables:
            v = _new_value(e, info[e.deparse()], newdata)
            missing |= v.missing
            vals.append(v)
        Z = model_matrix(bar.lhs, vals, n).X
        labels, _ = _group_labels([column_value(newdata, g) for g in bar.group])  # NA: an unseen group
        out.append(NewTerm(lev, cols, _codes(design.levels[lev], labels), Z, missing))
    return tuple(out)
