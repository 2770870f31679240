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
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

__all__ = ["FrameCache", "column_fingerprint", "fingerprints"]

T = TypeVar("T")


def column_fingerprint(column: pd.Series) -> tuple[Any, ...]:
    """A cheap content fingerprint: length, dtype and a hash of the values."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        values = column.to_numpy()
        if values.dtype != object:
            digest = hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).hexdigest()
            return (len(column), str(column.dtype), digest)
    digest = int(pd.util.hash_pandas_object(column, index=False).to_numpy().sum())
    return (len(column), str(column.dtype), digest)


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
