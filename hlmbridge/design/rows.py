"""Which rows a fit uses, and with what weights and offset: lmer's ``subset=``,
``weights=``, ``offset=`` and ``na.action=`` arguments, the same for every engine.

As R's ``model.frame`` does, ``subset`` is applied first, then rows with a missing value
in any model variable (or in the weights or offset) are dropped (``na.omit`` and
``na.exclude`` both drop them for the fit; ``na.fail`` refuses).

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"w": [1.0, 2.0, 3.0]})
>>> plan = row_plan(df, weights="w", subset=[True, False, True])
>>> plan.weights.tolist(), plan.subset.tolist(), plan.na_action
([1.0, 2.0, 3.0], [True, False, True], 'omit')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError, UsageError

__all__ = ["NA_ACTIONS", "RowPlan", "row_plan", "select_rows"]

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


def _vector(value: Any, data: pd.DataFrame, what: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in data.columns:
            raise UsageError(f"{what}= names a column that is not in the data: {value!r}")
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
    action = "omit"
    if na_action is not None:
        if not isinstance(na_action, str) or na_action not in NA_ACTIONS:
            raise UsageError(f"na_action= must be one of {', '.join(NA_ACTIONS)}, got {na_action!r}")
        action = NA_ACTIONS[na_action]
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
