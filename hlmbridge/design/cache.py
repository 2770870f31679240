"""Caches tied to one data frame and checked against its columns' contents.

Fitting several models to one data set (the seed fits eight) should prepare each
column once: the lme4 engine keeps R copies of columns, :func:`hlmbridge.fit` keeps
designs. An entry lives as long as its data frame and is rebuilt whenever the content of
a column it was made from changes (a frame modified in place is never served stale).

Examples
--------
>>> import pandas as pd
>>> cache = FrameCache()
>>> df = pd.DataFrame({"x": [1.0, 2.0]})
>>> stamp = lambda: tuple(fingerprints(df, ["x"]).values())
>>> cache.get(df, "sum", stamp(), lambda: float(df["x"].sum()))
3.0
>>> df.loc[0, "x"] = 5.0
>>> cache.get(df, "sum", stamp(), lambda: float(df["x"].sum()))
7.0
"""

from __future__ import annotations

import hashlib
import pickle
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

__all__ = ["FrameCache", "column_fingerprint", "fingerprints"]

T = TypeVar("T")


def column_fingerprint(column: pd.Series) -> tuple[Any, ...]:
    """A content fingerprint that covers every value and the dtype: ``(length, dtype, digest)``.

    Two columns get the same fingerprint only when they hold the same values in the same
    order with the same dtype: categories and their order, the type of each value of an
    object column (``0`` and ``"0"`` differ) and the missing-value mask of a nullable dtype
    all count. A column whose values cannot be serialized gets a fingerprint equal to
    nothing else (its cache entries are never reused).

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.Series([0, "0"], dtype=object)
    >>> column_fingerprint(a) == column_fingerprint(pd.Series(["0", 0], dtype=object))
    False
    >>> c = pd.Series(pd.Categorical(["a", "b"]))
    >>> column_fingerprint(c) == column_fingerprint(c.cat.reorder_categories(["b", "a"]))
    False
    """
    dtype = column.dtype
    h = hashlib.blake2b(digest_size=16)
    try:
        if isinstance(dtype, pd.CategoricalDtype):
            key = f"category(ordered={bool(dtype.ordered)})"
            h.update(_array_bytes(column.cat.codes.to_numpy()))
            h.update(repr(column_fingerprint(pd.Series(dtype.categories))).encode())
        else:
            key = repr(dtype)
            _update(h, column)
    except Exception:  # noqa: BLE001 - values that cannot be serialized: never reuse
        return (len(column), repr(dtype), _Unique())
    return (len(column), key, h.hexdigest())


class _Unique:
    """A fingerprint part equal only to itself (for columns that cannot be hashed)."""


def _array_bytes(values: np.ndarray) -> bytes:
    return str(values.dtype).encode() + b":" + np.ascontiguousarray(values).tobytes()


def _update(h: Any, column: pd.Series) -> None:
    dtype = column.dtype
    if isinstance(dtype, np.dtype):
        values = column.to_numpy()
        if dtype != object:
            h.update(_array_bytes(values))
        else:
            _update_objects(h, values)
        return
    if isinstance(dtype, pd.StringDtype):
        # Strings compare exactly, so codes (the order) plus the distinct values (in
        # order of appearance) are the content; missing values have code -1.
        codes, uniques = column.factorize()
        h.update(_array_bytes(codes))
        h.update(pickle.dumps([str(u) for u in uniques], protocol=pickle.HIGHEST_PROTOCOL))
        return
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if isinstance(numpy_dtype, np.dtype) and numpy_dtype.kind in "biufc":
        # Nullable numbers and booleans: the missing-value mask plus every value.
        mask = column.isna().to_numpy(dtype=bool)
        h.update(_array_bytes(mask))
        h.update(_array_bytes(column.to_numpy(dtype=numpy_dtype, na_value=np.zeros(1, numpy_dtype)[0])))
        return
    h.update(pickle.dumps(column.array, protocol=pickle.HIGHEST_PROTOCOL))  # any other dtype: exact


def _update_objects(h: Any, values: np.ndarray) -> None:
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        # Only str values (the common case): exact and fast through factorize.
        codes, uniques = pd.factorize(values)
        h.update(_array_bytes(codes))
        h.update(pickle.dumps([str(u) for u in uniques], protocol=pickle.HIGHEST_PROTOCOL))
        return
    # Mixed types. factorize merges values that compare equal across types (0 == 0.0 ==
    # False), so each value's type is coded too: (type, equality class) is the value.
    try:
        codes, uniques = pd.factorize(values)
        type_codes, types = pd.factorize(_TYPE_OF(values).astype(object))
    except TypeError:  # unhashable values (lists, dicts ...): pickle them all, slower but exact
        h.update(pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))
        return
    h.update(_array_bytes(codes))
    h.update(_array_bytes(type_codes))
    h.update(pickle.dumps([f"{t.__module__}.{t.__qualname__}" for t in types], protocol=pickle.HIGHEST_PROTOCOL))
    h.update(pickle.dumps(list(uniques), protocol=pickle.HIGHEST_PROTOCOL))


_TYPE_OF = np.frompyfunc(type, 1, 1)


def fingerprints(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """:func:`column_fingerprint` of each of ``columns``."""
    return {c: column_fingerprint(frame[c]) for c in columns}


class FrameCache:
    """Values computed from a data frame, reused while the columns they came from are unchanged."""

    def __init__(self) -> None:
        self._by_frame: dict[int, dict[Hashable, tuple[tuple[Any, ...], Any]]] = {}

    def get(self, owner: pd.DataFrame, key: Hashable, stamp: tuple[Any, ...], make: Callable[[], T]) -> T:
        """The value for ``key`` on ``owner``, made by ``make()`` unless cached with this ``stamp``.

        ``stamp`` is the fingerprint of the columns the value is made from (see
        :func:`fingerprints`); a different stamp means the columns changed.
        """
        entries = self._by_frame.get(id(owner))
        if entries is None:
            entries = self._by_frame[id(owner)] = {}
            weakref.finalize(owner, self._by_frame.pop, id(owner), None)
        hit = entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = make()
        entries[key] = (stamp, value)
        return value

    def clear(self) -> None:
        """Forget everything."""
        self._by_frame.clear()
