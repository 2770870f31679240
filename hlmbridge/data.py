"""Data layer: read Stata files, merge two levels with checks, summarize and center like Stata.

Every function returns a new frame (or series) and never modifies the caller's data; every
problem with the data is a :class:`~hlmbridge.errors.DataError` that says what is wrong.

Labels travel in ``DataFrame.attrs``: ``attrs["variable_labels"]`` maps a column to its
Stata variable label (or ``None``), ``attrs["value_labels"]`` maps a column to its
``{value: label}`` dict; ``attrs["file_label"]`` holds the dataset label.

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.data import merge_levels, center, tag_first
>>> students = pd.DataFrame({"id": ["a", "a", "b"], "ses": [1.0, 3.0, 5.0]})
>>> schools = pd.DataFrame({"id": ["a", "b"], "sector": [0, 1]})
>>> merged = merge_levels(students, schools)
>>> list(merged.columns)
['id', 'ses', 'sector']
>>> center(merged, "ses", by="id")["ses_cwc"].tolist()
[-1.0, 1.0, 0.0]
>>> tag_first(merged, "id").tolist()
[1, 0, 1]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError, UsageError

__all__ = ["read_dta", "merge_levels", "summarize", "center", "tag_first", "SUMMARY_COLUMNS"]

#: Column names of :func:`summarize`'s table, as Stata's ``summarize`` prints them.
SUMMARY_COLUMNS: tuple[str, ...] = ("Variable", "Obs", "Mean", "Std. dev.", "Min", "Max")

_MAX_NAMED = 5  # how many offending values an error message names


def _name_some(values: Iterable[Any]) -> str:
    """Render up to ``_MAX_NAMED`` values for an error message ("a, b, c, ...")."""
    items = list(values)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in items[:_MAX_NAMED])
    return shown + (", ..." if len(items) > _MAX_NAMED else "")


def _labels(df: pd.DataFrame, key: str) -> dict[str, Any]:
    """A deep copy of one label dict from ``df.attrs`` (empty when absent)."""
    value = df.attrs.get(key)
    return copy.deepcopy(dict(value)) if isinstance(value, dict) else {}


def read_dta(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Stata ``.dta`` file, keeping variable and value labels.

    Values are returned as stored (codes, not value labels); Stata missing values
    become NaN. String variables come back as text.

    Parameters
    ----------
    path : str or path-like
        The ``.dta`` file.

    Returns
    -------
    pandas.DataFrame
        One column per Stata variable, in file order, with ``attrs["variable_labels"]``
        (column -> label or None), ``attrs["value_labels"]`` (column -> {code: label}),
        ``attrs["file_label"]`` and ``attrs["source_path"]``.

    Raises
    ------
    DataError
        The file does not exist, or is not a Stata .dta file.

    Examples
    --------
    >>> from hlmbridge.datasets import hsb_path
    >>> df = read_dta(hsb_path("schools"))
    >>> df.shape
    (160, 7)
    >>> df.attrs["value_labels"]["sector"]
    {0: 'public', 1: 'catholic'}
    """
    import pyreadstat  # local: keeps `import hlmbridge` light

    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if not p.is_file():
        raise DataError(f"{p} is not a Stata .dta file (it is a directory)")
    try:
        df, meta = pyreadstat.read_dta(str(p))
    except Exception as exc:  # pyreadstat raises its own ReadstatError/PyreadstatError
        raise DataError(f"{p} is not a Stata .dta file ({exc})") from exc
    df.attrs["variable_labels"] = dict(zip(meta.column_names, meta.column_labels, strict=True))
    df.attrs["value_labels"] = {
        col: dict(labels) for col, labels in meta.variable_value_labels.items()
    }
    df.attrs["file_label"] = meta.file_label
    df.attrs["source_path"] = str(p)
    return df


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def _same_values(a: pd.Series, b: pd.Series) -> pd.Series:
    """Elementwise equality treating missing == missing."""
    a_na = a.isna().to_numpy()
    b_na = b.isna().to_numpy()
    eq = (a.to_numpy(dtype=object) == b.to_numpy(dtype=object)) | (a_na & b_na)
    return pd.Series(np.asarray(eq, dtype=bool), index=a.index)


def merge_levels(level1: pd.DataFrame, level2: pd.DataFrame, on: str = "id") -> pd.DataFrame:
    """Attach level-2 (group) variables to every level-1 row, with checks.

    Like Stata's ``merge m:1 id using level2`` restricted to matched level-1 rows, but
    strict: every level-1 id must have exactly one level-2 row. The result keeps the
    level-1 rows in their order (and index), then the level-2 columns not already present.

    Parameters
    ----------
    level1 : pandas.DataFrame
        One row per level-1 unit (e.g. students), with the group id column.
    level2 : pandas.DataFrame
        One row per group (e.g. schools), with the group id column.
    on : str, default "id"
        The group id column, present in both frames.

    Returns
    -------
    pandas.DataFrame
        A new frame; labels in ``attrs`` are the union of both inputs' labels.

    Raises
    ------
    DataError
        The id column is missing on either side (names the side); its type differs
        (text vs number); level-2 ids repeat (names a few); level-1 ids have no level-2
        row (how many, names a few); or a non-key column is in both frames with
        different values (names it). A column in both with identical values is kept once.

    Examples
    --------
    >>> import pandas as pd
    >>> l1 = pd.DataFrame({"id": [1, 1, 2], "y": [1.0, 2.0, 3.0]})
    >>> l2 = pd.DataFrame({"id": [2, 1], "z": [20, 10]})
    >>> merge_levels(l1, l2)["z"].tolist()
    [10, 10, 20]
    """
    for side, frame in (("level-1", level1), ("level-2", level2)):
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{side} data must be a pandas DataFrame, not {type(frame).__name__}")
        if on not in frame.columns:
            raise DataError(
                f"{side} data has no id column {on!r} (columns: {_name_some(frame.columns)})"
            )
    key1, key2 = level1[on], level2[on]
    if _is_text(key1) != _is_text(key2):
        kind = {True: "text", False: "numeric"}
        raise DataError(
            f"id column {on!r} is {kind[_is_text(key1)]} in the level-1 data but "
            f"{kind[_is_text(key2)]} in the level-2 data; convert one side first"
        )
    if key2.isna().any():
        raise DataError(f"level-2 data has {int(key2.isna().sum())} row(s) with a missing {on!r}")
    dup = key2[key2.duplicated()].unique()
    if len(dup):
        raise DataError(
            f"level-2 ids in {on!r} repeat ({len(dup)} id(s) appear more than once: "
            f"{_name_some(dup)}); the level-2 data must have one row per group"
        )
    known = set(key2.tolist())
    missing_mask = ~key1.isin(known) | key1.isna()
    if missing_mask.any():
        absent = pd.unique(key1[missing_mask])
        raise DataError(
            f"{len(absent)} level-1 id(s) in {on!r} have no level-2 row "
            f"({int(missing_mask.sum())} level-1 rows affected): {_name_some(absent)}"
        )
    aligned = level2.set_index(on).reindex(key1.to_numpy())
    aligned.index = level1.index
    shared = [c for c in level2.columns if c != on and c in level1.columns]
    conflicts = [c for c in shared if not _same_values(level1[c], aligned[c]).all()]
    if conflicts:
        raise DataError(
            f"column(s) {_name_some(conflicts)} are in both the level-1 and the level-2 data "
            f"with different values; rename or drop one before merging"
        )
    added = [c for c in level2.columns if c != on and c not in level1.columns]
    merged = pd.concat([level1.copy(), aligned[added].copy()], axis=1)
    merged.attrs = {}
    for key in ("variable_labels", "value_labels"):
        combined = _labels(level2, key)
        combined.update(_labels(level1, key))
        merged.attrs[key] = {c: combined[c] for c in merged.columns if c in combined}
    return merged


def _expand_varlist(df: pd.DataFrame, variables: str | Sequence[str] | None) -> list[str]:
    """Resolve a list of names or a Stata-style varlist string ("a b c-f") to columns."""
    columns = [str(c) for c in df.columns]
    if variables is None:
        return columns
    tokens = variables.split() if isinstance(variables, str) else [str(v) for v in variables]
    out: list[str] = []
    for token in tokens:
        if "-" in token and token not in columns:
            first, _, last = token.partition("-")
            first, last = first.strip(), last.strip()
            for end in (first, last):
                if end not in columns:
                    raise DataError(f"variable {end!r} not found (columns: {_name_some(columns)})")
            i, j = columns.index(first), columns.index(last)
            if j < i:
                raise DataError(f"variable range {token!r} runs backwards in the data's order")
            out.extend(columns[i : j + 1])
        elif token in columns:
            out.append(token)
        else:
            raise DataError(f"variable {token!r} not found (columns: {_name_some(columns)})")
    return out


def tag_first(df: pd.DataFrame, by: str | Sequence[str]) -> pd.Series:
    """Stata's ``egen tag = tag(by)``: 1 on the first row of each group, else 0.

    "First" is in data order. Rows with a missing value in ``by`` are 0 (Stata's
    default without the ``missing`` option).

    Parameters
    ----------
    df : pandas.DataFrame
    by : str or sequence of str
        Grouping column(s).

    Returns
    -------
    pandas.Series
        Integer 0/1 series named ``"tag"`` with ``df``'s index.

    Raises
    ------
    DataError
        A grouping column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> tag_first(pd.DataFrame({"g": [2, 2, 1, 2, 1]}), "g").tolist()
    [1, 0, 1, 0, 0]
    """
    cols = [by] if isinstance(by, str) else list(by)
    for c in cols:
        if c not in df.columns:
            raise DataError(f"grouping column {c!r} not found (columns: {_name_some(df.columns)})")
    first = ~df.duplicated(subset=cols, keep="first")
    complete = df[cols].notna().all(axis=1)
    return (first & complete).astype("int64").rename("tag")


def summarize(
    df: pd.DataFrame,
    by_group: str | Sequence[str] | None = None,
    variables: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Stata's ``summarize``: Obs, Mean, Std. dev., Min, Max per variable.

    Obs counts non-missing values; Std. dev. uses n - 1 (NaN with fewer than two
    observations). A string (non-numeric) variable has Obs 0 and NaN statistics, as
    Stata shows it.

    Parameters
    ----------
    df : pandas.DataFrame
    by_group : str or sequence of str, optional
        Summarize one row per group - the first in data order - like
        ``egen tag = tag(by_group)`` followed by ``summarize ... if tag == 1``.
    variables : str or sequence of str, optional
        Columns to summarize, in order; a string is a Stata varlist, where ``a-c``
        means every column from ``a`` to ``c``. Default: all columns.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS`, one row per variable.

    Raises
    ------
    DataError
        A variable or grouping column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"id": ["a", "a", "b"], "x": [1.0, 2.0, 6.0]})
    >>> summarize(df).to_dict("records")[1]
    {'Variable': 'x', 'Obs': 3, 'Mean': 3.0, 'Std. dev.': 2.6457513110645907, 'Min': 1.0, 'Max': 6.0}
    >>> summarize(df, by_group="id", variables="x")["Obs"].tolist()
    [2]
    """
    names = _expand_varlist(df, variables)
    rows = df if by_group is None else df[tag_first(df, by_group).to_numpy() == 1]
    records = []
    for name in names:
        col = rows[name]
        if _is_text(col):
            records.append((name, 0, np.nan, np.nan, np.nan, np.nan))
            continue
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
        x = x[~np.isnan(x)]
        n = int(x.size)
        if n == 0:
            records.append((name, 0, np.nan, np.nan, np.nan, np.nan))
            continue
        mean = float(np.mean(x))
        sd = float(np.std(x, ddof=1)) if n > 1 else np.nan
        records.append((name, n, mean, sd, float(x.min()), float(x.max())))
    table = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    table["Obs"] = table["Obs"].astype("int64")
    return table


def center(
    df: pd.DataFrame,
    column: str,
    by: str | None = None,
    group_mean_from: str | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Return a new frame with one added centered column.

    * ``by=None``: grand-mean centering, ``column - mean(column)`` over non-missing rows.
      Default name ``<column>_cgm``.
    * ``by="id"``: group-mean centering, ``column - group mean``. The group mean is the
      mean of the rows present, or - with ``group_mean_from="meanses"`` - that column's
      value (it must be constant within each group). HSB's ``meanses`` differs slightly
      from the mean of the students present (school 1224: -0.428 vs -0.434); choose
      explicitly. Default name ``<column>_cwc``.

    Parameters
    ----------
    df : pandas.DataFrame
    column : str
        A numeric column.
    by : str, optional
        Group id column for group-mean centering.
    group_mean_from : str, optional
        Column holding the group mean (requires ``by``).
    name : str, optional
        Name of the new column (must not exist yet).

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` plus the new column (labelled in ``attrs["variable_labels"]``).

    Raises
    ------
    DataError
        A named column is missing or not numeric, the new name already exists, or
        ``group_mean_from`` varies within a group.
    UsageError
        ``group_mean_from`` given without ``by``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": [1, 1, 2], "x": [1.0, 3.0, 8.0], "gm": [2.5, 2.5, 8.0]})
    >>> center(df, "x")["x_cgm"].tolist()
    [-3.0, -1.0, 4.0]
    >>> center(df, "x", by="g", group_mean_from="gm", name="xc")["xc"].tolist()
    [-1.5, 0.5, 0.0]
    """
    if group_mean_from is not None and by is None:
        raise UsageError("group_mean_from needs by= (the group id column)")
    needed = [("column", column)]
    if by is not None:
        needed.append(("by", by))
    if group_mean_from is not None:
        needed.append(("group_mean_from", group_mean_from))
    for role, col in needed:
        if col not in df.columns:
            raise DataError(f"{role} column {col!r} not found (columns: {_name_some(df.columns)})")
    for col in [column] + ([group_mean_from] if group_mean_from else []):
        if _is_text(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise DataError(f"column {col!r} is not numeric (dtype {df[col].dtype}); cannot center it")
    new = name or f"{column}_{'cgm' if by is None else 'cwc'}"
    if new in df.columns:
        raise DataError(f"column {new!r} already exists; pass another name=")
    x = df[column].astype("float64")
    if by is None:
        ref = pd.Series(float(x.mean()), index=df.index)
        label = f"{column} centered at its grand mean"
    elif group_mean_from is None:
        ref = x.groupby(df[by], dropna=True, sort=False).transform("mean")
        label = f"{column} centered at its {by} mean (rows present)"
    else:
        gm = df[group_mean_from].astype("float64")
        spread = gm.groupby(df[by], sort=False).agg(lambda s: s.max() - s.min())
        varying = spread[spread > 0].index.tolist()
        if varying:
            raise DataError(
                f"group_mean_from column {group_mean_from!r} varies within {by} "
                f"{_name_some(varying)}; it must hold one value per group"
            )
        ref = gm
        label = f"{column} centered at {group_mean_from} (group mean by {by})"
    out = df.copy()
    out.attrs = copy.deepcopy(df.attrs)
    out[new] = x - ref
    labels = _labels(df, "variable_labels")
    labels[new] = label
    out.attrs["variable_labels"] = labels
    return out
