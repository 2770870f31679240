"""The design of an lme4 formula, built by R's rules (:mod:`hlmbridge.design.model_matrix`).

Every variable is evaluated on all rows of the caller's frame (R's ``model.frame``), then
``subset`` and the missing values decide the rows (:mod:`hlmbridge.design.rows`); factors
lose the levels the estimation sample does not use (lme4's ``drop.unused.levels``).
Random-effects terms that share a grouping factor become one level with a
block-diagonal covariance (one block per term, as lme4 fits them); levels are ordered
from the fewest groups to the most (Stata's outermost first).

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.spec.model import ModelSpec
>>> df = pd.DataFrame({"y": [1.0, 2, 3, 5, 4, 6], "s": list("abcabc"), "g": list("uuvvww")})
>>> d = build_formula_design(ModelSpec.from_lme4("y ~ 0 + s + (1 | g)"), df)
>>> d.fixed_lme4, d.levels[0].key, d.levels[0].n_groups
(('sa', 'sb', 'sc'), 'g', 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design, LevelDesign, check_design
from hlmbridge.design.contrasts import Contrast, parse_contrast
from hlmbridge.design.evaluate import Factor, Numeric, Value, column_value, evaluate
from hlmbridge.design.model_matrix import model_matrix
from hlmbridge.design.rows import RowPlan, select_rows
from hlmbridge.errors import DataError, SpecError, UsageError
from hlmbridge.spec.model import ModelSpec

__all__ = ["build_formula_design"]


def _take(v: Value, rows: np.ndarray) -> Value:
    if isinstance(v, Factor):
        return v.dropped(rows)
    return Numeric(v.values[rows], v.colnames, v.matrix, v.params)


def _finite(v: Value, rows: np.ndarray, label: str) -> None:
    if isinstance(v, Numeric):
        bad = np.isinf(v.values[rows]).any(axis=1)
        if bad.any():
            raise DataError(f"{label} is infinite in {int(bad.sum())} row(s) of the estimation sample; "
                            "a model needs finite values")


def _group_codes(values: list[Value], rows: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes of the interaction of the grouping variables on ``rows`` (levels in lexical order)."""
    parts = []
    labels = []
    for v, name in zip(values, names):
        if isinstance(v, Factor):
            f = v.dropped(rows)
            parts.append(f.codes)
            labels.append(f.levels)
        else:
            if v.values.shape[1] != 1:
                raise SpecError(f"the grouping variable {name!r} must be one column")
            x = v.values[rows, 0]
            uniq, codes = np.unique(x, return_inverse=True)
            parts.append(codes)
            from hlmbridge.spec.rformula import format_r_number

            labs = tuple(format_r_number(float(u)) for u in uniq)
            if len(set(labs)) != len(labs):
                raise DataError(f"the grouping variable {name!r} has distinct values that R prints alike "
                                "(more than 15 significant digits); R would merge those groups")
            labels.append(labs)
    key = np.zeros(len(rows), dtype=np.int64)
    for codes, labs in zip(parts, labels):
        key = key * len(labs) + codes
    uniq, codes = np.unique(key, return_inverse=True)
    glabels = []
    for k in uniq.tolist():
        pieces = []
        for labs in reversed(labels):
            pieces.append(labs[k % len(labs)])
            k //= len(labs)
        glabels.append(":".join(reversed(pieces)))
    return codes.astype(np.int64), tuple(glabels)


def _fixed_contrasts(contrasts: Mapping[str, Any] | None, f: Any, fixed_vals: list[Value]) -> dict[str, Contrast]:
    """lmer's ``contrasts=``: each name must be a factor (or logical) variable of the fixed part,
    written as R labels it (``f``, ``factor(x)``); it codes the fixed part only, as in lme4."""
    if contrasts is None:
        return {}
    if not isinstance(contrasts, Mapping):
        raise UsageError(f"contrasts= must be a dict of variable -> contrast, got {type(contrasts).__name__}.")
    labels = {e.deparse(): v for e, v in zip(f.fixed.variables, fixed_vals)}
    factors = [lab for lab, v in labels.items() if isinstance(v, Factor)]
    out: dict[str, Contrast] = {}
    for name, value in contrasts.items():
        if name not in labels:
            raise UsageError(f"contrasts= names {name!r}, which is not a variable of the fixed part (its factors: "
                             f"{', '.join(factors) or 'none'}); lmer would ignore it with a warning")
        if not isinstance(labels[name], Factor):
            raise UsageError(f"contrasts= names {name!r}, which is numeric; contrasts apply only to factors (as in R)")
        out[name] = parse_contrast(value, name)
    return out


def build_formula_design(spec: ModelSpec, data: pd.DataFrame, plan: RowPlan | None = None,
                         contrasts: Mapping[str, Any] | None = None) -> Design:
    """Build y, X and the random-effects levels of an lme4-formula spec on ``data``
    (``contrasts``: lmer's ``contrasts=``, variable label -> contrast)."""
    f = spec.formula
    if f is None:
        raise SpecError("build_formula_design needs a spec read from an lme4 formula")
    plan = plan or RowPlan()
    n_all = len(data)
    trials = None
    if f.response.kind == "call" and f.response.value == "cbind":
        if spec.family != "binomial":
            raise SpecError(f"the response {f.response.deparse()} is a binomial response (successes, failures): "
                            "give family='binomial'")
        # glmer's binomial cbind(s, f): the proportion s / (s + f) with s + f trials as prior weights
        # (R's binomial()$initialize; a row of no trials has proportion 0 and weight 0)
        parts = [evaluate(a, data) for a in f.response.args]
        if any(isinstance(v, Factor) or v.values.shape[1] != 1 for v in parts):
            raise DataError(f"each column of the response {f.response.deparse()} must be one numeric column")
        succ, fail = (v.values[:, 0] for v in parts)
        total = succ + fail
        with np.errstate(divide="ignore", invalid="ignore"):
            prop = np.where(total == 0, 0.0, succ / np.where(total == 0, 1.0, total))
        response = Numeric(np.where(parts[0].missing | parts[1].missing, np.nan, prop)[:, None])
        trials = total
    else:
        response = evaluate(f.response, data)
    if isinstance(response, Factor) or response.values.shape[1] != 1:
        raise DataError(f"the response {f.response.deparse()} must be one numeric column")
    fixed_vals = [evaluate(v, data) for v in f.fixed.variables]
    fixed_contrasts = _fixed_contrasts(contrasts, f, fixed_vals)
    offsets = [evaluate(o, data) for o in f.fixed.offsets]
    for o, e in zip(offsets, f.fixed.offsets):
        if isinstance(o, Factor) or o.values.shape[1] != 1:
            raise DataError(f"offset({e.deparse()}) must be one numeric column")
    bar_vals = [[evaluate(v, data) for v in bar.lhs.variables] for bar in f.random]
    group_vals = {g: column_value(data, g) for bar in f.random for g in bar.group}

    missing = response.missing.copy()
    for v in fixed_vals + offsets + [x for vals in bar_vals for x in vals] + list(group_vals.values()):
        missing |= v.missing
    for name in (spec.residuals.variables if spec.residuals is not None else ()):
        missing |= column_value(data, name).missing  # residuals(t(), by()) columns, as Stata drops them
    rows, n_out = select_rows(plan, missing)

    _finite(response, rows, f"the response {f.response.deparse()}")
    for v, e in zip(fixed_vals, f.fixed.variables):
        _finite(v, rows, e.deparse())
    for vals, bar in zip(bar_vals, f.random):
        for v, e in zip(vals, bar.lhs.variables):
            _finite(v, rows, e.deparse())
    y = response.values[rows, 0]
    fixed_taken = tuple(_take(v, rows) for v in fixed_vals)
    mm = model_matrix(f.fixed, list(fixed_taken), len(rows), fixed_contrasts)
    offset = None
    if offsets or plan.offset is not None:
        offset = np.zeros(len(rows))
        for o, e in zip(offsets, f.fixed.offsets):
            _finite(o, rows, f"offset({e.deparse()})")
            offset += o.values[rows, 0]
        if plan.offset is not None:
            offset += plan.offset[rows]
    weights = plan.weights[rows] if plan.weights is not None else None
    if trials is not None:
        if weights is not None:
            raise UsageError(f"weights= with the response {f.response.deparse()}: the trials are given by cbind() "
                             "already; give them once (hlmbridge does not multiply further weights in, as glmer would)")
        weights = trials[rows]

    # Random-effects terms grouped by grouping factor, in order of appearance.
    order: list[str] = []
    by_label: dict[str, list[int]] = {}
    for i, bar in enumerate(f.random):
        if bar.label not in by_label:
            order.append(bar.label)
            by_label[bar.label] = []
        by_label[bar.label].append(i)
    levels: list[LevelDesign] = []
    for label in order:
        idx = by_label[label]
        bar0 = f.random[idx[0]]
        codes, glabels = _group_codes([group_vals[g] for g in bar0.group], rows, bar0.group)
        zcols: list[np.ndarray] = []
        lme4_names: list[str] = []
        stata_names: list[str] = []
        blocks: list[tuple[int, ...]] = []
        for i in idx:
            bar = f.random[i]
            zm = model_matrix(bar.lhs, [_take(v, rows) for v in bar_vals[i]], len(rows))
            start = len(lme4_names)
            for j, name in enumerate(zm.names):
                if name in lme4_names:
                    raise SpecError(f"the random term {name} for {label} appears in two random-effects terms; "
                                    "lme4 would fit a model that is not identified")
                lme4_names.append(name)
                stata_names.append(zm.stata_names[j])
                zcols.append(zm.X[:, j])
            blocks.append(tuple(range(start, len(lme4_names))))
        q = len(lme4_names)
        if len(blocks) == 1:
            cov = "identity" if q == 1 else "unstructured"
        elif all(len(b) == 1 for b in blocks):
            cov = "independent"
        else:
            cov = "blocks"
        n_groups = int(codes.max()) + 1
        if n_groups < 2:
            raise DataError(f"the grouping factor {label} has only one group: a mixed model needs several")
        levels.append(LevelDesign(None, label, codes, n_groups, np.column_stack(zcols), tuple(lme4_names),
                                  tuple(stata_names), cov, tuple(blocks), True, glabels))
    levels.sort(key=lambda ld: ld.n_groups)  # stable: outermost (fewest groups) first
    top = levels[0].codes
    final = []
    for i, ld in enumerate(levels):
        nested = i == 0 or _nested_in(ld.codes, ld.n_groups, top)
        final.append(LevelDesign(None, ld.key, ld.codes, ld.n_groups, ld.Z, ld.terms_lme4, ld.terms_stata,
                                 ld.cov, ld.blocks, nested, ld.group_labels))
    design = Design(
        spec=spec, y=y, X=mm.X, fixed_stata=mm.stata_names, fixed_lme4=mm.names, levels=tuple(final), rows=rows,
        n_dropped=int(n_all - rows.size - n_out), factor_bases=(), weights=weights, offset=offset, n_data=n_all,
        n_subset_out=n_out, offset_argument=plan.offset[rows] if plan.offset is not None else None,
        predvars=_learned(f, fixed_vals, bar_vals, rows), contrasts=tuple(fixed_contrasts.items()),
        fixed_values=fixed_taken,
    )
    check_design(design, f.response.deparse())
    return design


def _learned(f, fixed_vals: list[Value], bar_vals: list[list[Value]], rows: np.ndarray) -> tuple:
    """What each variable learned on the fit rows, for prediction on new data."""
    from hlmbridge.design.newdata import learned_variables

    exprs = list(f.fixed.variables) + [e for bar in f.random for e in bar.lhs.variables]
    return learned_variables(exprs, fixed_vals + [v for vals in bar_vals for v in vals], rows)


def _nested_in(codes: np.ndarray, n_groups: int, outer: np.ndarray) -> bool:
    """True when every group of ``codes`` lies inside one group of ``outer``."""
    first = np.full(n_groups, -1, dtype=np.int64)
    first[codes[::-1]] = outer[::-1]
    return bool(np.all(first[codes] == outer))
