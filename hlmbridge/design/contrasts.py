"""R's contrasts: how a factor becomes columns, and what R names them.

A :class:`Contrast` is what R keeps in a factor's ``contrasts`` attribute (set by ``C()`` in
a formula, by lmer's ``contrasts=`` argument, or R's defaults: ``contr.treatment`` for a
factor, ``contr.poly`` for an ordered one). :meth:`Contrast.coding` gives the matrix (one
row per level) and the column names ``model.matrix`` appends to the variable's label:

- ``contr.treatment``/``contr.SAS`` given by name (``contrasts = list(f = "contr.sum")``,
  ``C(f, treatment)``) are called on the levels, so the columns are named by level
  (``fb``, ``fc``); given as a function (``C(f, contr.treatment)``) R calls them on the
  number of levels and names the columns by position (``2``, ``3``);
- ``contr.sum`` and ``contr.helmert`` have no column names: ``f1``, ``f2``, ...;
- ``contr.poly``: ``.L``, ``.Q``, ``.C``, ``^4``, ...;
- a matrix: its column names, else ``1``, ``2``, ...

Examples
--------
>>> m, names = parse_contrast("contr.sum", "f").coding(("a", "b", "c"))
>>> m.tolist(), names
([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], ('1', '2'))
>>> parse_contrast("contr.treatment(base = 2)", "f").coding(("a", "b", "c"))[1]
('a', 'c')
>>> Contrast("helmert").coding(("a", "b", "c"))[0].tolist()
[[-1.0, -1.0], [1.0, -1.0], [0.0, 2.0]]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from hlmbridge.errors import DataError, UsageError

__all__ = ["CONTRAST_FUNCTIONS", "Contrast", "contr_poly", "parse_contrast", "poly_names"]

#: R's contrast functions hlmbridge applies (stats::contr.*).
CONTRAST_FUNCTIONS = ("contr.treatment", "contr.sum", "contr.helmert", "contr.poly", "contr.SAS")


def contr_poly(n: int) -> np.ndarray:
    """R's ``contr.poly(n)``: orthonormal polynomial contrasts (n x n-1)."""
    y = np.arange(1, n + 1, dtype=float)
    y = y - y.mean()
    X = np.column_stack([y**i for i in range(n)])
    q, r = np.linalg.qr(X)
    raw = q * np.diag(r)[None, :]
    Z = raw / np.sqrt(np.sum(raw**2, axis=0))[None, :]
    return Z[:, 1:]


def poly_names(n: int) -> tuple[str, ...]:
    """``contr.poly``'s column names for ``n`` levels: .L .Q .C ^4 ..."""
    names = [f"^{i}" for i in range(n)]
    for i, lab in enumerate((".L", ".Q", ".C")[: n - 1], start=1):
        names[i] = lab
    return tuple(names[1:])


@dataclass(frozen=True)
class Contrast:
    """One factor's contrasts: ``kind`` is treatment, sum, helmert, poly, SAS or matrix.

    ``by_number``: R called the function on the number of levels (columns named by
    position); ``base``: treatment's baseline (1-based); ``matrix``/``colnames``: a matrix
    given by the user (rows are levels).
    """

    kind: str
    base: int | None = None
    by_number: bool = False
    matrix: tuple[tuple[float, ...], ...] | None = None
    colnames: tuple[str, ...] | None = None

    @property
    def r_name(self) -> str | None:
        """The R function name to hand lmer as ``contrasts=``, when R gives the same coding
        from the name alone (else None: hand R the matrix)."""
        if self.kind in ("treatment", "sum", "helmert", "poly", "SAS") and self.base is None and not self.by_number:
            return f"contr.{self.kind}"
        return None

    def coding(self, levels: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
        """The contrast matrix for ``levels`` (len(levels) rows) and its column names."""
        n = len(levels)
        if n < 2:
            raise DataError("contrasts can be applied only to factors with 2 or more levels (R's rule)")
        if self.kind in ("treatment", "SAS"):
            base = (n if self.kind == "SAS" else 1) if self.base is None else self.base
            if not 1 <= base <= n:
                raise DataError(f"contr.treatment: baseline group number {base} out of range (the factor has "
                                f"{n} levels)")
            keep = [j for j in range(n) if j != base - 1]
            names = tuple(str(j + 1) for j in keep) if self.by_number else tuple(levels[j] for j in keep)
            return np.eye(n)[:, keep], names
        if self.kind == "sum":
            return np.vstack([np.eye(n - 1), -np.ones((1, n - 1))]), tuple(str(i) for i in range(1, n))
        if self.kind == "helmert":
            m = np.zeros((n, n - 1))
            for j in range(n - 1):
                m[: j + 1, j] = -1.0
                m[j + 1, j] = float(j + 1)
            return m, tuple(str(i) for i in range(1, n))
        if self.kind == "poly":
            return contr_poly(n), poly_names(n)
        assert self.matrix is not None
        m = np.asarray(self.matrix, dtype=float)
        if m.shape[0] != n:
            raise DataError(f"a contrast matrix has {m.shape[0]} rows, but the factor has {n} levels "
                            "(R: wrong number of contrast matrix rows)")
        # lmer's contrasts= sets contrasts(f, ncol(m)) <- m: every column is kept, as given.
        names = self.colnames[: m.shape[1]] if self.colnames is not None else tuple(
            str(i) for i in range(1, m.shape[1] + 1))
        return m, tuple(names)


_CALL = re.compile(r"^\s*(contr\.[A-Za-z]+)\s*(?:\(\s*base\s*=\s*([0-9]+)L?\s*\))?\s*$")


def parse_contrast(value: Any, name: str) -> Contrast:
    """A ``contrasts=`` entry as hlmbridge takes it: R's function name (``"contr.sum"``,
    ``"contr.helmert"``, ``"contr.poly"``, ``"contr.SAS"``, ``"contr.treatment"``), the
    treatment contrast with another baseline (``"contr.treatment(base = 2)"``: R's
    ``contr.treatment(levels(f), base = 2)``), or a matrix (a 2-D numpy array, or a
    DataFrame whose columns name the model-matrix columns) with one row per level.

    Raises
    ------
    UsageError
        Anything else, naming the variable.
    """
    if isinstance(value, str):
        m = _CALL.match(value)
        if not m or m.group(1) not in CONTRAST_FUNCTIONS or (m.group(2) and m.group(1) != "contr.treatment"):
            raise UsageError(f"contrasts= for {name!r}: {value!r} is not one of {', '.join(CONTRAST_FUNCTIONS)} "
                             "or 'contr.treatment(base = k)'")
        return Contrast(m.group(1).split(".", 1)[1], base=int(m.group(2)) if m.group(2) else None)
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return Contrast("matrix", matrix=tuple(map(tuple, value.to_numpy(dtype=float).tolist())),
                        colnames=tuple(str(c) for c in value.columns))
    if isinstance(value, np.ndarray) and value.ndim == 2 and np.issubdtype(value.dtype, np.number):
        if not np.all(np.isfinite(value)):
            raise UsageError(f"contrasts= for {name!r}: the matrix has non-finite values")
        return Contrast("matrix", matrix=tuple(map(tuple, value.astype(float).tolist())))
    raise UsageError(f"contrasts= for {name!r} must be an R contrast name such as 'contr.sum', "
                     f"'contr.treatment(base = 2)', or a 2-D numeric matrix; got {type(value).__name__}")
