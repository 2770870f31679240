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

from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError, UsageError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term

__all__ = ["RANK_TOL", "Design", "LevelDesign", "build_design", "drop_rank_deficient", "factor_levels",
           "rank_deficient_columns", "rank_notes", "require_columns"]


@dataclass(frozen=True, eq=False)
class LevelDesign:
    """One grouping factor: group codes per row and its random-effects columns.

    ``key`` is the factor's name in lme4's vocabulary (``id``; ``school:class`` for a
    Stata level nested in ``school``; ``cask:batch`` for lme4's ``(1 | batch/cask)``).
    ``Z`` holds the columns in lme4's order (intercept first) named ``terms_lme4``
    (Stata's names in ``terms_stata``). ``blocks`` partitions the columns into correlated
    blocks (one per lme4 random-effects term); ``cov`` names the structure: Stata's
    ``identity``/``independent``/``exchangeable``/``unstructured``, or ``blocks`` for a
    block-diagonal one. ``nested`` says whether every group lies inside one group of the
    first level (decides how inference blocks the computation, never the model).
    ``level`` is the Stata-style spec level, None for an lme4 formula.
    """

    level: RandomLevel | None
    key: str
    codes: np.ndarray
    n_groups: int
    Z: np.ndarray
    terms_lme4: tuple[str, ...] = ()
    terms_stata: tuple[str, ...] = ()
    cov: str = "identity"
    blocks: tuple[tuple[int, ...], ...] = ()
    nested: bool = True
    group_labels: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The level's label in results: the spec's grouping variable, or lme4's factor name."""
        return self.level.group if self.level is not None else self.key

    @property
    def sizes(self) -> np.ndarray:
        """Number of rows in each group."""
        return np.bincount(self.codes, minlength=self.n_groups)


@dataclass(frozen=True, eq=False)
class Design:
    """The numeric design of ``spec`` on the complete cases of a data set.

    ``weights`` (lme4's precision weights) and ``offset`` are None when not given;
    ``n_data`` is the number of rows of the caller's frame (``rows`` index into it).
    """

    spec: ModelSpec
    y: np.ndarray
    X: np.ndarray
    fixed_stata: tuple[str, ...]
    fixed_lme4: tuple[str, ...]
    levels: tuple[LevelDesign, ...]
    rows: np.ndarray  # positions (0-based) of the rows used, in the caller's frame
    n_dropped: int
    factor_bases: tuple[tuple[str, float], ...]  # factor variable -> base level used
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    n_data: int = -1
    n_subset_out: int = 0
    offset_argument: np.ndarray | None = None  # the part of ``offset`` given as fit(offset=...)
    predvars: tuple[Any, ...] = ()  # what formula variables learned on the fit data (design.newdata)
    contrasts: tuple[tuple[str, Any], ...] = ()  # lmer's contrasts=: variable label -> design.contrasts.Contrast
    # The fixed part's evaluated variables on the fit rows (lme4-formula specs; one
    # design.evaluate Value per Terms variable): what the ANOVA contrasts (results.anova) recode.
    fixed_values: tuple[Any, ...] = ()
    # Columns left out because they are linear combinations of the others (lme4's
    # chkRank.drop.cols, Stata's "omitted because of collinearity"), in both vocabularies.
    dropped_lme4: tuple[str, ...] = ()
    dropped_stata: tuple[str, ...] = ()

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

    @property
    def y_fit(self) -> np.ndarray:
        """The response the likelihood sees: y minus the offset."""
        return self.y if self.offset is None else self.y - self.offset


def _numeric(data: pd.DataFrame, name: str, role: str) -> np.ndarray:
    col = data[name]
    if pd.api.types.is_complex_dtype(col):
        raise DataError(f"the {role} {name!r} holds complex numbers; a model needs real ones")
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


def _r(name: str) -> str:
    """A column name as R's model.matrix writes it (backticks around non-syntactic names)."""
    from hlmbridge.spec.rformula import Expr

    return Expr("name", name).deparse()


def _fmt_level(v: float) -> str:
    return str(int(v))


def _term_columns(
    term: Term, data: pd.DataFrame, bases: dict[str, float], first_seen: dict[str, int] | None = None
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Columns of one term, with Stata and lme4 labels, in Stata's order.

    lme4's label joins the variables in the order they first appear in the model (R's
    ``terms()`` rule), given by ``first_seen``.
    """
    pieces: list[list[tuple[np.ndarray, str, str]]] = []  # per variable: (column, stata piece, lme4 piece)
    for var in term.vars:
        x = data[var.name].to_numpy(dtype=float)
        if var.factor:
            levels = factor_levels(x, var.name)
            base = bases[var.name]
            pieces.append(
                [
                    ((x == lv).astype(float), f"{_fmt_level(lv)}.{var.name}", f"{_r(var.name)}{_fmt_level(lv)}")
                    for lv in levels
                    if lv != base
                ]
            )
        else:
            label = f"c.{var.name}" if len(term.vars) > 1 else var.name
            pieces.append([(x, label, _r(var.name))])
    # Stata names factors first, then continuous variables; lme4 keeps the written order.
    order = sorted(range(len(term.vars)), key=lambda i: 0 if term.vars[i].factor else 1)
    cols, stata, lme4 = [], [], []
    for combo in product(*[pieces[i] for i in order]):
        col = np.ones(len(data))
        for c, _, _ in combo:
            col = col * c
        cols.append(col)
        stata.append("#".join(s for _, s, _ in combo))
        rank = (lambda i: first_seen.get(term.vars[i].name, i)) if first_seen else (lambda i: i)
        by_written = sorted(zip(order, combo), key=lambda t: rank(t[0]))
        names = [term.vars[i].name for i, _ in by_written]
        parts: list[str] = []
        for j, (_, piece) in enumerate(by_written):
            if names[j] in names[:j]:
                continue  # a repeated continuous variable: one I(x^k) piece (Stata's c.x#c.x)
            k = names.count(names[j])
            parts.append(piece[2] if k == 1 else f"I({piece[2]}^{k})")
        lme4.append(":".join(parts))
    return cols, stata, lme4


def _base_by_rule(rule: str, levels: np.ndarray, values: np.ndarray, name: str) -> float:
    """The base level Stata's ``ib(last)``, ``ib(freq)`` (the most frequent level; the lowest of
    equally frequent ones) or ``ib(#k)`` (the k-th level) picks in the estimation sample."""
    if rule == "last":
        return float(levels[-1])
    if rule == "freq":
        counts = [(values == lv).sum() for lv in levels]
        return float(levels[int(np.argmax(counts))])
    k = int(rule[1:])
    if k > len(levels):
        raise DataError(f"ib(#{k}).{name}: {name!r} has only {len(levels)} levels in the estimation sample")
    return float(levels[k - 1])


def require_columns(spec: ModelSpec, data: pd.DataFrame) -> None:
    """Raise DataError unless ``data`` is a DataFrame holding every variable of ``spec``."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [v for v in spec.variables if v not in data.columns]
    if missing:
        raise DataError(f"variable(s) not in the data: {', '.join(missing)}")
    if not data.columns.is_unique:
        dup = [c for c in spec.variables if int((data.columns == c).sum()) > 1]
        if dup:
            raise DataError(f"the data have several columns named {dup[0]!r}: a model variable must be one column")


def build_design(spec: ModelSpec, data: pd.DataFrame, *, subset: Any = None, weights: Any = None,
                 offset: Any = None, na_action: str | None = None, contrasts: Any = None) -> Design:
    """Build y, X and the Z blocks of ``spec`` on ``data`` (never modifies ``data``).

    A spec read from an lme4 formula is built by R's ``model.matrix`` rules
    (:mod:`hlmbridge.design.formula_design`); a Stata-style spec by Stata's. ``subset``,
    ``weights``, ``offset`` and ``na_action`` are lmer's arguments
    (:func:`hlmbridge.design.rows.row_plan`). Rows with a missing value in any model
    variable are dropped (Stata's listwise deletion, R's ``na.omit``); how many is
    recorded in ``n_dropped``. ``contrasts`` is lmer's ``contrasts=`` (an lme4 formula only;
    :func:`hlmbridge.design.contrasts.parse_contrast`).
    """
    from hlmbridge.design.rows import row_plan

    require_columns(spec, data)
    plan = row_plan(data, subset=subset, weights=weights, offset=offset, na_action=na_action)
    if spec.formula is not None:
        from hlmbridge.design.formula_design import build_formula_design

        return drop_rank_deficient(build_formula_design(spec, data, plan, contrasts=contrasts))
    if contrasts:
        raise UsageError("contrasts= applies to an lme4 formula; a Stata command codes its factors by ib#. bases")
    return drop_rank_deficient(_build_stata_design(spec, data, plan))


#: lme4's tolerance for a rank-deficient fixed-effects design (``chkRank.drop.cols``:
#: ``qr(X, tol = 1e-7, LAPACK = FALSE)``).
RANK_TOL = 1e-7


def rank_deficient_columns(X: np.ndarray, order: list[int] | None = None, tol: float = RANK_TOL) -> list[int]:
    """The columns of ``X`` that R's QR with limited pivoting (LINPACK ``dqrdc2``, what
    ``qr(X, LAPACK = FALSE)`` runs) moves to the end, so lme4 drops them: taken in ``order``
    (default: as they stand), a column is dropped when the part of it that the columns kept
    before it do not explain has a norm below ``tol`` times its own norm (an all-zero column
    always).

    >>> x = np.array([1.0, 2, 3, 5])
    >>> X = np.column_stack([np.ones(4), x, 2 * x, x ** 2])
    >>> rank_deficient_columns(X)
    [2]
    >>> rank_deficient_columns(X, order=[0, 2, 1, 3])
    [1]
    """
    n, p = X.shape
    order = list(range(p)) if order is None else list(order)
    norms = np.linalg.norm(X, axis=0)
    thresh = tol * np.where(norms > 0, norms, 1.0)
    cand = list(order)
    dropped: list[int] = []
    start = 0  # the columns before ``start`` of ``cand`` are kept already
    while start < len(cand):
        # dqrdc2 moves a negligible column out before its Householder step; an unpivoted QR
        # gives each column's part unexplained by every column before it, so the QR is redone
        # without a dropped column (lme4 designs drop few).
        r = np.abs(np.diag(_qr_r(X, cand))) if n else np.zeros(0)
        bad = [j for j in range(start, min(len(cand), r.size)) if r[j] < thresh[cand[j]]]
        if not bad:
            if len(cand) > n:  # more columns than rows: dqrdc2 stops at rank n
                dropped += cand[n:]
                cand = cand[:n]
            break
        dropped.append(cand.pop(bad[0]))
        start = bad[0]
    return sorted(dropped, key=order.index)


def _qr_r(X: np.ndarray, columns: list[int]) -> np.ndarray:
    """R of the unpivoted QR of ``X[:, columns]`` (LAPACK on a Fortran-ordered copy: 3-15x
    faster than numpy's on a wide design)."""
    from scipy.linalg import qr

    return qr(np.asfortranarray(X[:, columns]), mode="r", overwrite_a=True, check_finite=False)[0]


def rank_notes(design: Design) -> tuple[str, ...]:
    """What R or Stata says about the dropped columns: lme4's message for an lme4 formula,
    Stata's note per column for a Stata command."""
    if not design.dropped_lme4:
        return ()
    if design.spec.formula is None:
        return tuple(f"note: {name} omitted because of collinearity" for name in design.dropped_stata)
    k = len(design.dropped_lme4)
    return (f"fixed-effect model matrix is rank deficient so dropping {k} column{'s' if k > 1 else ''} / "
            f"coefficient{'s' if k > 1 else ''}",)


def drop_rank_deficient(design: Design) -> Design:
    """``design`` without the fixed-effect columns lme4 drops as rank deficient (its default
    ``check.rankX = "message+drop.cols"``), the same for every engine; their names are kept in
    ``dropped_lme4``/``dropped_stata``. A Stata command's columns are taken with ``_cons``
    first, then in the command's order, as Stata omits the later of collinear variables."""
    X = design.X
    if X.shape[1] == 0:
        return design
    cons = design.constant_index if design.spec.formula is None else None
    order = list(range(X.shape[1]))
    if cons is not None:
        order = [cons] + [j for j in order if j != cons]
    drop = set(rank_deficient_columns(X, order))
    if not drop:
        return design
    keep = [j for j in range(X.shape[1]) if j not in drop]
    gone = sorted(drop, key=order.index)
    return replace(design, X=np.ascontiguousarray(X[:, keep]),
                   fixed_stata=tuple(design.fixed_stata[j] for j in keep),
                   fixed_lme4=tuple(design.fixed_lme4[j] for j in keep),
                   dropped_lme4=tuple(design.fixed_lme4[j] for j in gone),
                   dropped_stata=tuple(design.fixed_stata[j] for j in gone))


def _build_stata_design(spec: ModelSpec, data: pd.DataFrame, plan: Any) -> Design:
    from hlmbridge.design.rows import select_rows

    group_names = {lv.group for lv in spec.levels}
    numeric_vars = [v for v in spec.variables if v not in group_names]
    values = {v: _numeric(data, v, "response" if v == spec.response else "predictor") for v in numeric_vars}
    missing = np.zeros(len(data), dtype=bool)
    for arr in values.values():
        missing |= np.isnan(arr)
    for g in group_names:
        missing |= data[g].isna().to_numpy()
    rows, n_out = select_rows(plan, missing)
    for v in numeric_vars:
        if np.isinf(values[v][rows]).any():
            raise DataError(f"the variable {v!r} is infinite in {int(np.isinf(values[v][rows]).sum())} row(s); "
                            "a model needs finite values")
    sub = data.iloc[rows][list(spec.variables)].reset_index(drop=True)
    for v in numeric_vars:
        sub[v] = values[v][rows]

    bases: dict[str, float] = {}
    for term in spec.fixed:
        for var in term.vars:
            if var.factor and var.name not in bases:
                levels = factor_levels(sub[var.name].to_numpy(dtype=float), var.name)
                if len(levels) < 2:
                    raise DataError(f"the factor variable {var.name!r} has a single level in the estimation sample, "
                                    "so its term has no column (Stata omits it, R refuses it)")
                if var.base is None:
                    bases[var.name] = float(levels[0])
                elif isinstance(var.base, str):  # Stata's ib(last)., ib(freq)., ib(#k).
                    bases[var.name] = _base_by_rule(var.base, levels, sub[var.name].to_numpy(dtype=float), var.name)
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
    first_seen: dict[str, int] = {}
    for term in spec.fixed:
        for v in term.variables:
            first_seen.setdefault(v, len(first_seen))
    for term in spec.fixed:
        c, s, r = _term_columns(term, sub, bases, first_seen)
        cols += c
        stata += s
        lme4 += r
    if spec.constant:
        cols.append(np.ones(len(sub)))
        stata.append("_cons")
        lme4.append("(Intercept)")
    X = np.column_stack(cols) if cols else np.empty((len(sub), 0))
    y = sub[spec.response].to_numpy(dtype=float)
    weights = plan.weights[rows] if plan.weights is not None else None
    offset = plan.offset[rows] if plan.offset is not None else None
    if spec.trials is not None or spec.offset is not None or spec.exposure is not None:
        y, weights, offset = _glmm_columns(spec, sub, y, weights, offset)

    levels: list[LevelDesign] = []
    chain: list[str] = []
    outer_codes: np.ndarray | None = None
    label_parts: list[np.ndarray] = []
    for lv in spec.levels:
        raw = sub[lv.group]
        if lv.nested and outer_codes is not None:
            keyframe = pd.DataFrame({"outer": outer_codes, "g": raw.to_numpy()})
            codes = keyframe.groupby(["outer", "g"], sort=True, observed=True).ngroup().to_numpy()
            chain.append(lv.group)
        else:
            codes = pd.factorize(raw, sort=True)[0]
            chain = [lv.group]
            label_parts = []
        label_parts.append(raw.to_numpy())
        key = ":".join(chain)
        n_groups = int(codes.max()) + 1
        if n_groups < 2:
            raise DataError(f"the grouping variable {lv.group!r} has only one group: a mixed model needs several")
        first = np.full(n_groups, -1, dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes))[::-1]
        glabels = tuple(":".join(_label(p[i]) for p in label_parts) for i in first.tolist())
        zcols = ([np.ones(len(sub))] if lv.intercept else []) + [sub[s].to_numpy(dtype=float) for s in lv.slopes]
        q = len(zcols)
        blocks = (tuple(range(q)),) if lv.cov == "unstructured" else tuple((j,) for j in range(q))
        levels.append(LevelDesign(lv, key, codes.astype(np.int64), n_groups, np.column_stack(zcols),
                                  tuple(t if t == "(Intercept)" else _r(t) for t in lv.lme4_terms),
                                  tuple("_cons" if t == "(Intercept)" else t for t in lv.lme4_terms),
                                  lv.cov or "identity", blocks, bool(lv.nested), glabels))
        outer_codes = codes
    design = Design(
        spec=spec,
        y=y,
        X=X,
        fixed_stata=tuple(stata),
        fixed_lme4=tuple(lme4),
        levels=tuple(levels),
        rows=rows,
        n_dropped=int(len(data) - rows.size - n_out),
        factor_bases=tuple(bases.items()),
        weights=weights,
        offset=offset,
        n_data=len(data),
        n_subset_out=n_out,
        offset_argument=plan.offset[rows] if plan.offset is not None else None,
    )
    check_design(design, spec.response)
    return design


def _glmm_columns(spec: ModelSpec, sub: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None,
                  offset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Stata's ``binomial(varname|#)``, ``offset()`` and ``exposure()`` in glmer's terms: the
    response as the proportion of successes with the trials as prior weights, and the offset
    (exposure: its log) added to any offset= given."""
    if spec.trials is not None:
        n = (np.full(len(y), float(spec.trials)) if isinstance(spec.trials, int)
             else sub[spec.trials].to_numpy(dtype=float))
        if np.any(n <= 0) or np.any(n != np.round(n)):
            bad = n[(n <= 0) | (n != np.round(n))][0]
            raise DataError(f"the binomial trials {spec.trials!r} must be positive whole numbers; one is {bad:g}")
        if weights is not None:
            raise UsageError(f"weights= with binomial({spec.trials}): the trials are given already; give them once")
        y = y / n
        weights = n
    extra = None
    if spec.offset is not None:
        extra = sub[spec.offset].to_numpy(dtype=float)
    elif spec.exposure is not None:
        t = sub[spec.exposure].to_numpy(dtype=float)
        if np.any(t <= 0):
            raise DataError(f"exposure({spec.exposure}) must be positive (its log enters the model); one value is "
                            f"{t[t <= 0][0]:g}")
        extra = np.log(t)
    if extra is not None:
        offset = extra if offset is None else offset + extra
    return y, weights, offset


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def check_design(design: Design, response: str) -> None:
    """Refuse designs no engine can fit: a constant response, a last level whose groups are
    all single observations. (Collinear fixed-effect columns are dropped, as lme4 and Stata
    do: :func:`drop_rank_deficient`.)"""
    if np.nanstd(design.y) == 0:
        raise DataError(f"the response {response!r} is constant")
    if not np.all(np.isfinite(design.X)):
        raise DataError("the fixed-effects design has non-finite values")
    for ld in design.levels:
        if not np.all(np.isfinite(ld.Z)):
            raise DataError(f"the random-effects design of {ld.name} has non-finite values")
    spec = design.spec
    # A GLMM without a residual (Poisson counts, binomial trials) takes an observation-level random
    # effect: the overdispersion model glmer fits (grouseticks' (1 | INDEX)). A 0/1 response cannot.
    overdispersion = spec.is_glmm and (spec.family == "poisson" or (design.weights is not None
                                                                     and np.any(design.weights != 1)))
    if max(ld.n_groups for ld in design.levels) >= design.nobs and not overdispersion:
        worst = max(design.levels, key=lambda ld: ld.n_groups)
        raise DataError(
            f"every group of {worst.name!r} has a single observation: the random effect "
            "cannot be told apart from the residual"
        )
