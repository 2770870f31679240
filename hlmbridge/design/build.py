"""The design of a model on a data set: y, X and Z with labels in both vocabularies.

Every engine gets the same rows (listwise deletion on the model's variables, as
Stata does) and the same fixed-effect columns, so estimates can be compared term by
term. Factor variables use treatment coding with the spec's base level.

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var
>>> df = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 7], "x": [0.0, 1, 0, 1, 0, 2], "g": list("aabbcc")})
>>> spec = ModelSpec("y", (Term((Var("x"),)),), (RandomLevel("g"),))
>>> d = build_design(spec, df)
>>> d.fixed_stata, d.fixed_lme4
(('x', '_cons'), ('x', '(Intercept)'))
>>> d.levels[0].n_groups
3
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term

__all__ = ["Design", "LevelDesign", "build_design", "factor_levels", "require_columns"]


@dataclass(frozen=True, eq=False)
class LevelDesign:
    """One grouping level: group codes per row and the random-effects columns.

    ``key`` is the level's name in lme4's vocabulary (``school:class`` for a level
    nested in ``school``); ``Z`` holds the random terms in lme4 order (intercept first).
    """

    level: RandomLevel
    key: str
    codes: np.ndarray
    n_groups: int
    Z: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Number of rows in each group."""
        return np.bincount(self.codes, minlength=self.n_groups)


@dataclass(frozen=True, eq=False)
class Design:
    """The numeric design of ``spec`` on the complete cases of a data set."""

    spec: ModelSpec
    y: np.ndarray
    X: np.ndarray
    fixed_stata: tuple[str, ...]
    fixed_lme4: tuple[str, ...]
    levels: tuple[LevelDesign, ...]
    rows: np.ndarray  # positions (0-based) of the rows used, in the caller's frame
    n_dropped: int
    factor_bases: tuple[tuple[str, float], ...]  # factor variable -> base level used

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return int(self.y.shape[0])

    @property
    def n_fixed(self) -> int:
        """Number of fixed-effect columns."""
        return int(self.X.shape[1])

    @property
    def constant_index(self) -> int | None:
        """Column of ``_cons`` in X, or None for a model without constant."""
        return self.fixed_stata.index("_cons") if "_cons" in self.fixed_stata else None


def _numeric(data: pd.DataFrame, name: str, role: str) -> np.ndarray:
    col = data[name]
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise DataError(f"the {role} {name!r} is not numeric (dtype {col.dtype})")
    return col.to_numpy(dtype=float, na_value=np.nan)


def factor_levels(values: np.ndarray, name: str) -> np.ndarray:
    """Sorted distinct levels of a factor variable; Stata requires non-negative integers."""
    levels = np.unique(values)
    if np.any(levels != np.round(levels)) or np.any(levels < 0):
        raise DataError(
            f"the factor variable {name!r} must hold non-negative integers (Stata's i. rule); "
            f"found {levels[:5].tolist()}"
        )
    return levels


def _fmt_level(v: float) -> str:
    return str(int(v))


def _term_columns(
    term: Term, data: pd.DataFrame, bases: dict[str, float]
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Columns of one term, with Stata and lme4 labels, in Stata's order."""
    pieces: list[list[tuple[np.ndarray, str, str]]] = []  # per variable: (column, stata piece, lme4 piece)
    for var in term.vars:
        x = data[var.name].to_numpy(dtype=float)
        if var.factor:
            levels = factor_levels(x, var.name)
            base = bases[var.name]
            pieces.append(
                [
                    ((x == lv).astype(float), f"{_fmt_level(lv)}.{var.name}", f"{var.name}{_fmt_level(lv)}")
                    for lv in levels
                    if lv != base
                ]
            )
        else:
            label = f"c.{var.name}" if len(term.vars) > 1 else var.name
            pieces.append([(x, label, var.name)])
    # Stata names factors first, then continuous variables; lme4 keeps the written order.
    order = sorted(range(len(term.vars)), key=lambda i: 0 if term.vars[i].factor else 1)
    cols, stata, lme4 = [], [], []
    for combo in product(*[pieces[i] for i in order]):
        col = np.ones(len(data))
        for c, _, _ in combo:
            col = col * c
        cols.append(col)
        stata.append("#".join(s for _, s, _ in combo))
        by_written = sorted(zip(order, combo), key=lambda t: t[0])
        lme4.append(":".join(piece[2] for _, piece in by_written))
    return cols, stata, lme4


def require_columns(spec: ModelSpec, data: pd.DataFrame) -> None:
    """Raise DataError unless ``data`` is a DataFrame holding every variable of ``spec``."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [v for v in spec.variables if v not in data.columns]
    if missing:
        raise DataError(f"variable(s) not in the data: {', '.join(missing)}")


def build_design(spec: ModelSpec, data: pd.DataFrame) -> Design:
    """Build y, X and the Z blocks of ``spec`` on ``data`` (never modifies ``data``).

    Rows with a missing value in any model variable are dropped (Stata's listwise
    deletion); how many is recorded in ``n_dropped``.
    """
    require_columns(spec, data)
    group_names = {lv.group for lv in spec.levels}
    numeric_vars = [v for v in spec.variables if v not in group_names]
    values = {v: _numeric(data, v, "response" if v == spec.response else "predictor") for v in numeric_vars}
    complete = np.ones(len(data), dtype=bool)
    for arr in values.values():
        complete &= ~np.isnan(arr)
    for g in group_names:
        complete &= data[g].notna().to_numpy()
    rows = np.flatnonzero(complete)
    if rows.size == 0:
        raise DataError("no complete observations: every row has a missing value in a model variable")
    sub = data.iloc[rows][list(spec.variables)].reset_index(drop=True)
    for v in numeric_vars:
        sub[v] = values[v][rows]

    bases: dict[str, float] = {}
    for term in spec.fixed:
        for var in term.vars:
            if var.factor and var.name not in bases:
                levels = factor_levels(sub[var.name].to_numpy(dtype=float), var.name)
                if var.base is None:
                    bases[var.name] = float(levels[0])
                elif var.base in levels:
                    bases[var.name] = float(var.base)
                else:
                    raise DataError(
                        f"base level {var.base} of {var.name!r} does not occur in the data "
                        f"(levels: {[int(v) for v in levels]})"
                    )

    cols: list[np.ndarray] = []
    stata: list[str] = []
    lme4: list[str] = []
    for term in spec.fixed:
        c, s, r = _term_columns(term, sub, bases)
        cols += c
        stata += s
        lme4 += r
    if spec.constant:
        cols.append(np.ones(len(sub)))
        stata.append("_cons")
        lme4.append("(Intercept)")
    X = np.column_stack(cols) if cols else np.empty((len(sub), 0))
    y = sub[spec.response].to_numpy(dtype=float)
    _check_columns(X, stata, y, spec.response)

    levels: list[LevelDesign] = []
    chain: list[str] = []
    outer_codes: np.ndarray | None = None
    for lv in spec.levels:
        raw = sub[lv.group]
        if lv.nested and outer_codes is not None:
            keyframe = pd.DataFrame({"outer": outer_codes, "g": raw.to_numpy()})
            codes = keyframe.groupby(["outer", "g"], sort=True, observed=True).ngroup().to_numpy()
            chain.append(lv.group)
        else:
            codes = pd.factorize(raw, sort=True)[0]
            chain = [lv.group]
        key = ":".join(chain)
        n_groups = int(codes.max()) + 1
        if n_groups < 2:
            raise DataError(f"the grouping variable {lv.group!r} has only one group: a mixed model needs several")
        zcols = ([np.ones(len(sub))] if lv.intercept else []) + [sub[s].to_numpy(dtype=float) for s in lv.slopes]
        levels.append(LevelDesign(lv, key, codes.astype(np.int64), n_groups, np.column_stack(zcols)))
        outer_codes = codes
    if levels[-1].n_groups >= len(sub):
        raise DataError(
            f"every group of {spec.levels[-1].group!r} has a single observation: the random effect "
            "cannot be told apart from the residual"
        )
    return Design(
        spec=spec,
        y=y,
        X=X,
        fixed_stata=tuple(stata),
        fixed_lme4=tuple(lme4),
        levels=tuple(levels),
        rows=rows,
        n_dropped=int(len(data) - rows.size),
        factor_bases=tuple(bases.items()),
    )


def _check_columns(X: np.ndarray, labels: list[str], y: np.ndarray, response: str) -> None:
    if np.nanstd(y) == 0:
        raise DataError(f"the response {response!r} is constant")
    for j, label in enumerate(labels):
        if label != "_cons" and np.ptp(X[:, j]) == 0:
            raise DataError(f"the predictor column {label!r} is constant in the estimation sample")
    if X.shape[1] == 0:
        return
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        # Name the first column that is a linear combination of the ones before it.
        for j in range(1, X.shape[1] + 1):
            if np.linalg.matrix_rank(X[:, :j]) < j:
                others = ", ".join(labels[: j - 1])
                raise DataError(f"the predictor column {labels[j - 1]!r} is collinear with {others}")
