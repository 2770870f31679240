"""Estimated marginal means and their contrasts, as R's emmeans (1.8.4) computes them.

The **reference grid** (emmeans' ``ref_grid``) has one row per combination of the levels of
every factor of the fixed part and each covariate at its mean over the fit's rows (``at=``
replaces a covariate's mean by one or several values, or a factor's levels by some of them).
Variables are the data's columns, as emmeans sees them: ``log(x)`` is evaluated at the mean
of ``x``, and a numeric column inside ``factor()`` is a factor whose levels are its values.
Each grid row goes through the fit's own design rules (:mod:`hlmbridge.design.newdata`), so
the grid's linear functions are the model matrix R would build.

An **estimated marginal mean** of a cell of the ``specs`` factors (within each ``by`` group)
is the average of the grid's predictions over the other factors, with ``weights``:
``"equal"`` (emmeans' default), ``"proportional"`` (each combination of the other factors
weighted by its frequency in the fit's rows) or ``"outer"`` (by the product of each
factor's marginal frequencies; this is Stata's ``margins, atmeans``, see
:mod:`hlmbridge.results.margins`). Each mean is a linear combination of the fixed effects, so
its SE, df, t and CI come from :func:`hlmbridge.results.lincom.lincom` with the df method:
the fit's own when it has one (``with_df`` / ``fit(..., df_method=)``), otherwise emmeans'
default for ``lmer`` fits, Kenward-Roger (``lmer.df = "kenward-roger"``), which emmeans
replaces by asymptotic (z, df = Inf) when the fit has more than 3,000 observations
(``pbkrtest.limit`` and ``lmerTest.limit``). ``df_method="asymptotic"`` asks for z. On an ML
fit of at most 3,000 observations emmeans applies pbkrtest's Kenward-Roger to the ML fit,
which hlmbridge does not (its Kenward-Roger is for REML fits): there the df method must be
given.

**Contrasts** (emmeans' ``contrast``) are computed within each ``by`` group:
``"pairwise"`` (each mean minus each later one), ``"revpairwise"``, ``"trt.vs.ctrl"`` (each
mean minus the first), or a dict ``{name: weights}`` of custom contrasts. Multiplicity
adjustments within each group: ``"tukey"`` (Studentized range, the default of the pairwise
methods; for other families emmeans changes it to ``"sidak"`` and so does hlmbridge, with a
note), ``"dunnettx"`` (emmeans' approximation to Dunnett's, the default of
``trt.vs.ctrl``), ``"holm"``, ``"bonferroni"``, ``"sidak"``, ``"none"`` (the default of
custom contrasts). The CIs use the Tukey, Dunnett-x, Sidak and Bonferroni quantiles (Holm's
CIs are Bonferroni's, as emmeans'). emmeans finds the Dunnett-x quantile with ``uniroot(tol =
5e-4)``; hlmbridge solves it to machine precision, so those CI bounds can differ from
emmeans' in the 4th digit of the quantile (the p-values do not).

**GLMMs** (glmer fits): the means and contrasts are on the link scale (z tests, df = Inf, as
emmeans' for glmer), or with ``type="response"`` back-transformed as emmeans' ``type =
"response"``: each mean through the inverse link (SE by the delta method, CI the
back-transformed link-scale CI), contrasts of the logit and log links as odds ratios and
ratios (``"A / B"``; tests stay on the link scale).

Not supported (an error naming them): fits with an offset, fits with dropped (rank-deficient)
columns, and emmeans' ``"mvt"`` adjustment.

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.sleepstudy()
>>> df["phase"] = pd.cut(df["Days"], [-1, 2, 5, 9], labels=["early", "mid", "late"])
>>> res = hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", df, engine="statsmodels")
>>> em = emmeans(res, "pairwise ~ phase")      # Days at its mean; Kenward-Roger df
>>> em.emmeans[["phase", "emmean", "df"]].round(1).values.tolist()
[['early', 277.4, 157.8], ['mid', 299.8, 25.8], ['late', 289.4, 75.2]]
>>> em.contrasts[["contrast", "adjust"]].values.tolist()
[['early - mid', 'tukey'], ['early - late', 'tukey'], ['mid - late', 'tukey']]
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from hlmbridge.errors import UnsupportedSpecError, UsageError

__all__ = ["ADJUSTMENTS", "CONTRAST_COLUMNS", "EMM_COLUMNS", "EMMResult", "ReferenceGrid", "adjust_family",
           "contrast", "emmeans", "reference_grid"]

#: Columns of the means' table after the specs and by variables.
EMM_COLUMNS: tuple[str, ...] = ("emmean", "std_error", "df", "conf_low", "conf_high", "statistic", "p_value")
#: Columns of the contrasts' table after the by variables.
CONTRAST_COLUMNS: tuple[str, ...] = ("contrast", "estimate", "std_error", "df", "conf_low", "conf_high",
                                     "statistic", "p_value", "adjust")
#: Multiplicity adjustments of :func:`contrast`.
ADJUSTMENTS: tuple[str, ...] = ("tukey", "dunnettx", "holm", "bonferroni", "sidak", "none")
_METHODS = ("pairwise", "revpairwise", "trt.vs.ctrl")
_DEFAULT_ADJUST = {"pairwise": "tukey", "revpairwise": "tukey", "trt.vs.ctrl": "dunnettx"}
_RATIOS = {"logit": "odds ratio", "log": "ratio"}
_FACTOR_CALLS = ("factor", "as.factor", "ordered", "as.ordered")
_WRAPPERS = _FACTOR_CALLS + ("relevel", "C")
#: emmeans' pbkrtest.limit and lmerTest.limit: above this many observations its df are asymptotic.
DF_LIMIT = 3000


# ---------------------------------------------------------------------------- the data's variables
def _factor_columns(expr: Any, out: set[str], inside: bool = False) -> None:
    """The columns ``expr`` turns into a factor (``factor(x)``, ``relevel(factor(x), ...)``)."""
    if expr.kind == "name":
        if inside:
            out.add(expr.value)
        return
    if expr.kind == "paren":
        _factor_columns(expr.args[0], out, inside)
    elif expr.kind == "call" and expr.value in _WRAPPERS and expr.args:
        _factor_columns(expr.args[0], out, inside or expr.value in _FACTOR_CALLS)


def _label_float(labels: Sequence[str]) -> bool:
    try:
        [float(x) for x in labels]
    except ValueError:
        return False
    return True


def _raw_from_formula(result: Any) -> dict[str, Any]:
    """The data's columns of the fixed part on the fit rows, rebuilt from the design."""
    from hlmbridge.design.evaluate import Factor

    design = result.design
    out: dict[str, Any] = {}
    for e, v in zip(design.spec.formula.fixed.variables, design.fixed_values, strict=True):
        inner = e
        while inner.kind == "paren" or (inner.kind == "call" and inner.value in _WRAPPERS and inner.value != "relevel"
                                        and len(inner.args) == 1):
            inner = inner.args[0]
        if inner.kind != "name" or inner.value in out:
            continue
        name = inner.value
        if isinstance(v, Factor):
            labels = np.asarray(v.levels, dtype=object)[v.codes]
            if v.logical:
                out[name] = labels == "TRUE"
            elif e.kind == "name" and not v.character:
                out[name] = pd.Categorical.from_codes(v.codes, categories=list(v.levels), ordered=v.ordered)
            elif e.kind != "name" and _label_float(v.levels):
                out[name] = labels.astype(float)
            else:
                out[name] = labels
        elif e.kind == "name" and v.values.shape[1] == 1:
            out[name] = v.values[:, 0]
    return out


def _raw_from_stata(result: Any) -> dict[str, Any]:
    design = result.design
    bases = dict(design.factor_bases)
    out: dict[str, Any] = {}
    for j, s in enumerate(design.fixed_stata):
        if s in (t.stata_name for t in design.spec.fixed) and s not in bases:
            out[s] = design.X[:, j]
    for var, base in bases.items():
        cols = [(float(s.split(".", 1)[0].rstrip("b")), j) for j, s in enumerate(design.fixed_stata)
                if "#" not in s and s.split(".", 1)[-1] == var and s.split(".", 1)[0].rstrip("b").isdigit()]
        if cols:
            x = np.full(design.nobs, float(base))
            for lv, j in cols:
                x = np.where(design.X[:, j] == 1.0, lv, x)
            out[var] = x
    return out


@dataclass(frozen=True, eq=False)
class _Variables:
    """The fixed part's data columns on the fit rows: ``frame``; ``factors`` maps each factor
    column to its levels (raw values, in R's order), the other columns are covariates."""

    frame: pd.DataFrame
    factors: dict[str, list[Any]]


def _variables(result: Any, data: pd.DataFrame | None) -> _Variables:
    design = result.design
    spec = design.spec
    if spec.formula is not None:
        exprs = list(spec.formula.fixed.variables)
        columns = list(dict.fromkeys(c for e in exprs for c in e.columns()))
        coerced: set[str] = set()
        for e in exprs:
            _factor_columns(e, coerced)
    else:
        columns = list(dict.fromkeys(v for t in spec.fixed for v in t.variables))
        coerced = set(dict(design.factor_bases))
    if data is not None:
        if not isinstance(data, pd.DataFrame) or len(data) != design.n_data:
            raise UsageError(f"data must be the data frame the model was fitted on ({design.n_data} rows), got "
                             f"{type(data).__name__} with {len(data) if hasattr(data, '__len__') else '?'} rows")
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise UsageError(f"data lacks the model's column(s) {', '.join(missing)}")
        frame = data.iloc[design.rows][columns].reset_index(drop=True)
    else:
        raw = _raw_from_formula(result) if spec.formula is not None else _raw_from_stata(result)
        lacking = [c for c in columns if c not in raw]
        if lacking:
            raise UsageError(f"the reference grid needs the data's column(s) {', '.join(lacking)}, which the fit's "
                             "design holds only transformed: pass data= (the data frame of the fit)")
        frame = pd.DataFrame({c: raw[c] for c in columns})
    factors: dict[str, list[Any]] = {}
    for c in columns:
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            used = set(col.dropna().unique())
            factors[c] = [lv for lv in col.cat.categories if lv in used]
        elif pd.api.types.is_bool_dtype(col):
            factors[c] = [v for v in (False, True) if v in set(col.dropna())]
        elif not pd.api.types.is_numeric_dtype(col):
            from hlmbridge.design.collation import r_sort

            factors[c] = list(r_sort([str(v) for v in col.dropna().unique()])[0])
        elif c in coerced:
            factors[c] = sorted(float(v) for v in col.dropna().unique())
    return _Variables(frame, factors)


def _level_label(value: Any) -> str:
    from hlmbridge.spec.rformula import format_r_number

    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format_r_number(float(value))
    return str(value)

def at_values(what: str, values: Any, factor_levels: Sequence[Any] | None) -> list[Any]:
    """The values an ``at`` setting gives one variable, as a list: a factor's levels (matched by
    their printed label, so ``"2"`` and ``2`` name the same level) or a covariate's numbers;
    ``what`` names the setting in the errors."""
    vals = list(values) if isinstance(values, (list, tuple, np.ndarray, pd.Series)) else [values]
    if not vals:
        raise UsageError(f"{what} gives no values")
    if factor_levels is not None:
        labels = {_level_label(x): x for x in factor_levels}
        bad = [x for x in vals if _level_label(x) not in labels]
        if bad:
            raise UsageError(f"{what}: {bad} not among the factor's levels {list(labels)}")
        return [labels[_level_label(x)] for x in vals]
    try:
        return [float(x) for x in vals]
    except (TypeError, ValueError):
        raise UsageError(f"{what}: a covariate takes numbers, got {vals!r}") from None



# ---------------------------------------------------------------------------- the reference grid
@dataclass(frozen=True, eq=False)
class ReferenceGrid:
    """emmeans' reference grid of a fit.

    ``frame`` has one row per grid point (the first variable varying fastest, as R's
    ``expand.grid``), ``levels`` each variable's values in the grid (a covariate: its mean or
    the ``at=`` values), ``factors`` the variables that are factors, ``X`` the fixed-effect
    row of each grid point and ``counts`` the number of fit rows in each point's combination
    of factor levels (emmeans' ``.wgt.``).
    """

    frame: pd.DataFrame
    levels: dict[str, list[Any]]
    factors: tuple[str, ...]
    X: np.ndarray
    counts: np.ndarray
    raw: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        from hlmbridge.results.display_margins import short_repr

        return short_repr(self, points=len(self.frame), variables=tuple(self.levels), factors=self.factors)


def _check_lmm(result: Any, what: str, glmm: bool = False) -> None:
    """Refuse what ``what`` cannot compute (a GLMM unless ``glmm``, no design, an offset, dropped columns)."""
    if result.spec.is_glmm and not glmm:
        raise UnsupportedSpecError(what, result.engine, message=(
            f"{what} is computed for linear mixed models only; hlmbridge does not compute it for a "
            f"{result.spec.family} GLMM yet (emmeans() does, on the link and response scales)."))
    design = result.design
    if design is None:
        raise UsageError(f"{what} needs the fit's design, which a result rebuilt from JSON (from_dict) does not "
                         "carry: refit")
    if design.offset is not None:
        raise UnsupportedSpecError("an offset", what, message=f"{what}: the model has an offset, which the "
                                   "reference grid would have to set; hlmbridge does not compute it")
    if design.dropped_lme4:
        raise UnsupportedSpecError("rank-deficient fixed effects", what, message=(
            f"{what}: the fit dropped the column(s) {', '.join(design.dropped_lme4)} as rank deficient; "
            "hlmbridge does not check the estimability of marginal means"))


def reference_grid(result: Any, data: pd.DataFrame | None = None, at: Mapping[str, Any] | None = None
                   ) -> ReferenceGrid:
    """emmeans' ``ref_grid(fit, at = at)`` (see the module docstring).

    ``data`` is the fit's data frame; without it the variables are rebuilt from the design,
    which works when each appears bare or inside ``factor()`` (otherwise a UsageError asks
    for ``data``).
    """
    from hlmbridge.design.newdata import new_design

    _check_lmm(result, "the reference grid", glmm=True)
    v = _variables(result, data)
    at = dict(at or {})
    unknown = [k for k in at if k not in v.frame.columns]
    if unknown:
        raise UsageError(f"at= names {', '.join(map(repr, unknown))}, not a variable of the fixed part "
                         f"({', '.join(v.frame.columns)})")
    levels: dict[str, list[Any]] = {}
    for c in v.frame.columns:
        if c in at:
            levels[c] = at_values(f"at={c!r}", at[c], v.factors.get(c))
        elif c in v.factors:
            levels[c] = list(v.factors[c])
        else:
            levels[c] = [float(np.mean(v.frame[c].to_numpy(dtype=float)))]
    names = list(levels)
    combos = [tuple(reversed(t)) for t in itertools.product(*(levels[n] for n in reversed(names)))]
    grid = pd.DataFrame(combos, columns=names)
    for c in names:
        col = v.frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            grid[c] = pd.Categorical(grid[c], categories=col.cat.categories, ordered=col.cat.ordered)
        elif pd.api.types.is_bool_dtype(col):
            grid[c] = grid[c].astype(bool)
    X = new_design(result.design, grid, random=False).X
    factors = tuple(c for c in names if c in v.factors)
    if factors:
        key = v.frame[list(factors)].astype(object).apply(lambda r: tuple(_level_label(x) for x in r), axis=1)
        freq = key.value_counts().to_dict()
        counts = np.array([freq.get(tuple(_level_label(x) for x in row), 0)
                           for row in grid[list(factors)].astype(object).itertuples(index=False, name=None)], float)
    else:
        counts = np.full(len(grid), float(len(v.frame)))
    return ReferenceGrid(grid, levels, factors, X, counts, v.frame)


# ---------------------------------------------------------------------------- specs
def _parse_specs(specs: Any, by: Any) -> tuple[str | None, list[str], list[str]]:
    """(contrast method or None, specs variables, by variables) of ``"pairwise ~ a + b | c"``."""
    method = None
    if isinstance(specs, str):
        text = specs
        if "~" in text:
            lhs, text = text.split("~", 1)
            method = lhs.strip() or None
        if "|" in text:
            text, by_text = text.split("|", 1)
            if by is not None:
                raise UsageError("the by variables are given twice: in specs after '|' and in by=")
            by = [b for b in re.split(r"[+*\s]+", by_text.strip()) if b]
        names = [s for s in re.split(r"[+*\s]+", text.strip()) if s]
    elif isinstance(specs, (list, tuple)) and all(isinstance(s, str) for s in specs):
        names = list(specs)
    else:
        raise UsageError(f"specs must be a formula string ('pairwise ~ f | g', '~ f') or a list of names, "
                         f"got {specs!r}")
    if by is None:
        by_names: list[str] = []
    elif isinstance(by, str):
        by_names = [by]
    elif isinstance(by, (list, tuple)) and all(isinstance(b, str) for b in by):
        by_names = list(by)
    else:
        raise UsageError(f"by must be a name or a list of names, got {by!r}")
    if not names:
        raise UsageError(f"specs names no variable: {specs!r}")
    dup = set(names) & set(by_names)
    if dup or len(set(names)) != len(names) or len(set(by_names)) != len(by_names):
        raise UsageError(f"a variable is named twice in specs and by: {specs!r}, by={by!r}")
    return method, names, by_names


def _cell_weights(grid: ReferenceGrid, rows: np.ndarray, nuisance: list[str], weights: str) -> np.ndarray:
    if weights == "equal" or not nuisance:
        return np.ones(len(rows))
    frame = grid.frame.iloc[rows]
    if weights == "proportional":
        # each combination of the averaged-over factors by its frequency in the fit's rows
        raw = grid.raw[[n for n in nuisance if n in grid.factors]]
        if raw.shape[1] == 0:
            return np.ones(len(rows))
        key = raw.astype(object).apply(lambda r: tuple(_level_label(x) for x in r), axis=1)
        freq = key.value_counts().to_dict()
        return np.array([freq.get(tuple(_level_label(x) for x in r), 0) for r in
                         frame[list(raw.columns)].astype(object).itertuples(index=False, name=None)], float)
    # outer: the product of each averaged-over factor's marginal frequency
    w = np.ones(len(rows))
    for n in nuisance:
        if n in grid.factors:
            counts = grid.raw[n].astype(object).map(_level_label).value_counts()
            w *= frame[n].astype(object).map(_level_label).map(counts).fillna(0).to_numpy(float)
    return w


# ---------------------------------------------------------------------------- inference
def _link(result: Any) -> Any:
    """A GLMM's link (:mod:`hlmbridge.families`), None for a linear mixed model."""
    if not result.spec.is_glmm:
        return None
    from hlmbridge.families import family

    return family(result.spec.family).link

def _resolve_method(result: Any, df_method: str | None) -> str:
    from hlmbridge.results.small_sample import resolve_df_method

    if result.spec.is_glmm:  # emmeans' df for glmer fits: Inf (z)
        if df_method is not None and not (isinstance(df_method, str) and df_method.strip().lower() in
                                          ("asymptotic", "z", "inf")):
            raise UsageError(f"df_method={df_method!r}: a GLMM's marginal means have asymptotic (z) inference "
                             "only, as in emmeans")
        return "asymptotic"
    if df_method is not None:
        if isinstance(df_method, str) and df_method.strip().lower() in ("asymptotic", "z", "inf"):
            return "asymptotic"
        return resolve_df_method(df_method)
    if result.df_method:
        return result.df_method
    if result.nobs > DF_LIMIT:
        return "asymptotic"
    if not result.spec.reml:
        raise UsageError(
            "emmeans' default df for this fit are Kenward-Roger's (lmer.df), which emmeans gets from pbkrtest "
            "even for an ML fit; hlmbridge defines Kenward-Roger for REML fits only: pass "
            "df_method='satterthwaite' or 'asymptotic', or refit with REML")
    return "kenward-roger"


def _combinations(result: Any, W: np.ndarray, method: str) -> np.ndarray:
    """(estimate, SE, df) of each row of ``W`` (df = inf for ``"asymptotic"``)."""
    from hlmbridge.results.lincom import lincom

    if method == "asymptotic":
        beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
        V = np.asarray(result.fixed_vcov, dtype=float)
        return np.column_stack([W @ beta, np.sqrt(np.einsum("ij,jk,ik->i", W, V, W)), np.full(len(W), np.inf)])
    t = lincom(result, W, df_method=method)
    return t[["estimate", "std_error", "df"]].to_numpy(float)


def _t_quantile(p: float, df: np.ndarray) -> np.ndarray:
    return np.where(np.isinf(df), stats.norm.ppf(p), stats.t.ppf(p, np.where(np.isinf(df), 1.0, df)))


def _t_sf2(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(np.isinf(df), 2 * stats.norm.sf(a), 2 * stats.t.sf(a, np.where(np.isinf(df), 1.0, df)))


def _pdunnx(x: float, k: int, df: float) -> float:
    """emmeans' ``.pdunnx``: a mix of the Tukey and Sidak distributions approximating Dunnett's."""
    twt = (k - 1) / k
    tukey = stats.studentized_range.cdf(np.sqrt(2) * x, (1 + np.sqrt(1 + 8 * k)) / 2, df)
    sidak = stats.f.cdf(x * x, 1, df) ** k if np.isfinite(df) else stats.chi2.cdf(x * x, 1) ** k
    return float(twt * tukey + (1 - twt) * sidak)


def _qdunnx(p: float, k: int, df: float) -> float:
    if k < 1.005:
        return float(_t_quantile(1 - 0.5 * (1 - p), np.array([df]))[0])
    lo = stats.studentized_range.ppf(p, (1 + np.sqrt(1 + 8 * k)) / 2, df) / np.sqrt(2)
    hi = np.sqrt(stats.f.ppf(p ** (1 / k), 1, df) if np.isfinite(df) else stats.chi2.ppf(p ** (1 / k), 1))
    a, b = min(lo, hi), max(lo, hi)
    if b - a < 1e-12:
        return float(a)
    return float(optimize.brentq(lambda x: _pdunnx(x, k, df) - p, a, b, xtol=1e-12))


def adjust_family(t: np.ndarray, df: np.ndarray, adjust: str, n_means: int, level: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(p-values, CI half-width multipliers) of one family of contrasts' t statistics.

    ``n_means`` is the number of means compared (Tukey's Studentized range); the family size
    is ``len(t)``.

    >>> p, q = adjust_family(np.array([2.0, -1.0]), np.array([10.0, 10.0]), "bonferroni", 3, 0.95)
    >>> p.round(4).tolist(), q.round(4).tolist()
    ([0.1468, 0.6818], [2.6338, 2.6338])
    """
    k = len(t)
    p_raw = _t_sf2(t, df)
    a = np.abs(t)
    if adjust == "none":
        return p_raw, _t_quantile(0.5 + level / 2, df)
    if adjust == "tukey":
        p = np.array([stats.studentized_range.sf(np.sqrt(2) * x, n_means, d) for x, d in zip(a, df)])
        q = np.array([stats.studentized_range.ppf(level, n_means, d) / np.sqrt(2) for d in df])
        return p, q
    if adjust == "dunnettx":
        p = np.array([1 - _pdunnx(x, k, d) for x, d in zip(a, df)])
        q = np.array([_qdunnx(level, k, d) for d in df])
        return p, q
    if adjust == "sidak":
        return 1 - (1 - p_raw) ** k, _t_quantile(1 - (1 - level ** (1 / k)) / 2, df)
    bonf_q = _t_quantile(1 - (1 - level) / (2 * k), df)
    if adjust == "bonferroni":
        return np.minimum(1.0, k * p_raw), bonf_q
    if adjust == "holm":
        order = np.argsort(p_raw, kind="stable")
        stepped = np.maximum.accumulate(np.minimum(1.0, (k - np.arange(k)) * p_raw[order]))
        p = np.empty(k)
        p[order] = stepped
        return p, bonf_q
    raise UsageError(f"unknown adjust {adjust!r}; choose one of {', '.join(ADJUSTMENTS)} (emmeans' 'mvt' needs "
                     "mvtnorm's randomized integration, which hlmbridge does not do)")


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class EMMResult:
    """Estimated marginal means: ``emmeans`` (one row per cell, specs and by variables first,
    then :data:`EMM_COLUMNS`), their fixed-effect weights ``L`` (one row each), the grid,
    ``contrasts`` when specs named a method (``"pairwise ~ f"``), ``df_method``, ``type``
    (``"link"`` or ``"response"``: the scale of ``emmean`` and the CI) and ``notes`` (what
    emmeans would print under the table)."""

    emmeans: pd.DataFrame
    L: np.ndarray
    specs: tuple[str, ...]
    by: tuple[str, ...]
    grid: ReferenceGrid
    df_method: str
    weights: str
    level: float
    result: Any = field(repr=False)
    contrasts: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()
    type: str = "link"

    def contrast(self, method: str | Mapping[str, Sequence[float]] = "pairwise", adjust: str | None = None,
                 level: float | None = None) -> pd.DataFrame:
        """emmeans' ``contrast(emm, method, adjust)`` within each by group (:func:`contrast`)."""
        return contrast(self, method, adjust, level)

    def __str__(self) -> str:
        """R's printed emmeans (:func:`hlmbridge.results.display_margins.emmeans_text`)."""
        from hlmbridge.results.display_margins import emmeans_text

        return emmeans_text(self)

    def __repr__(self) -> str:
        from hlmbridge.results.display_margins import short_repr

        return short_repr(self, specs=self.specs, by=self.by, means=len(self.emmeans),
                          contrasts=None if self.contrasts is None else len(self.contrasts),
                          df_method=self.df_method, weights=self.weights, type=self.type)

    def _repr_html_(self) -> str:
        from hlmbridge.results.display_margins import emmeans_html

        return emmeans_html(self)


def emmeans(result: Any, specs: Any, by: Any = None, *, data: pd.DataFrame | None = None,
            at: Mapping[str, Any] | None = None, weights: str = "equal", df_method: str | None = None,
            level: float = 0.95, adjust: str | None = None, type: str = "link") -> EMMResult:
    """emmeans' ``emmeans(fit, specs, by = by, at = at, weights = weights, lmer.df = df_method)``.

    ``type="response"`` (emmeans' ``type = "response"``; a GLMM only differs): the means
    through the inverse link (``prob`` of a logit model, ``rate`` of a log one, in the
    ``emmean`` column), SEs by the delta method, CIs the back-transformed link-scale CIs,
    tests on the link scale; contrasts become ratios (odds ratios for the logit link).

    ``specs``: ``"~ f"``, ``"~ f + g | h"``, ``"pairwise ~ f | g"`` (then ``contrasts`` holds
    the pairwise comparisons, adjusted by ``adjust`` or the method's default) or a list of
    names. ``weights``: ``"equal"``, ``"proportional"`` or ``"outer"``.
    """
    if not (isinstance(level, float) and 0 < level < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    if weights not in ("equal", "proportional", "outer"):
        raise UsageError(f"weights must be 'equal', 'proportional' or 'outer', got {weights!r}")
    if type not in ("link", "response"):
        raise UsageError(f"type must be 'link' or 'response', got {type!r}")
    method, names, by_names = _parse_specs(specs, by)
    grid = reference_grid(result, data, at)
    unknown = [n for n in names + by_names if n not in grid.levels]
    if unknown:
        raise UsageError(f"{', '.join(map(repr, unknown))} is not a variable of the reference grid "
                         f"({', '.join(grid.levels)})")
    if result.design.weights is not None and weights != "equal":
        raise UnsupportedSpecError("weights=" + weights, "emmeans", message=(
            f"weights={weights!r} with a weighted fit: emmeans weighs by the fit's weights, hlmbridge does not"))
    df_label = _resolve_method(result, df_method)
    used = names + by_names
    nuisance = [n for n in grid.levels if n not in used and len(grid.levels[n]) > 1]
    cells = [tuple(reversed(t)) for t in itertools.product(*(range(len(grid.levels[n])) for n in reversed(used)))]
    idx = {n: grid.frame[n].astype(object).map(_level_label).map(
        {_level_label(x): i for i, x in enumerate(grid.levels[n])}).to_numpy() for n in used}
    L = np.zeros((len(cells), grid.X.shape[1]))
    for i, cell in enumerate(cells):
        mask = np.ones(len(grid.frame), dtype=bool)
        for n, c in zip(used, cell):
            mask &= idx[n] == c
        rows = np.flatnonzero(mask)
        w = _cell_weights(grid, rows, nuisance, weights)
        if w.sum() <= 0:
            w = np.ones(len(rows))
        L[i] = (w / w.sum()) @ grid.X[rows]
    est = _combinations(result, L, df_label)
    q = _t_quantile(0.5 + level / 2, est[:, 2])
    stat = est[:, 0] / est[:, 1]
    table = pd.DataFrame({n: [grid.levels[n][cell[k]] for cell in cells] for k, n in enumerate(used)})
    table["emmean"], table["std_error"], table["df"] = est[:, 0], est[:, 1], est[:, 2]
    table["conf_low"], table["conf_high"] = est[:, 0] - q * est[:, 1], est[:, 0] + q * est[:, 1]
    table["statistic"], table["p_value"] = stat, _t_sf2(stat, est[:, 2])
    notes = []
    link = _link(result)
    if type == "response" and link is not None:
        table["emmean"] = link.linkinv(est[:, 0])
        table["std_error"] = np.abs(link.mu_eta(est[:, 0])) * est[:, 1]
        table["conf_low"] = link.linkinv(est[:, 0] - q * est[:, 1])
        table["conf_high"] = link.linkinv(est[:, 0] + q * est[:, 1])
        notes.append(f"Means back-transformed from the {link.name} scale; tests on the {link.name} scale")
    elif link is not None:
        notes.append(f"Results are given on the {link.name} (not the response) scale")
    if nuisance:
        notes.append(f"Results are averaged over the levels of: {', '.join(nuisance)} ({weights} weights)")
    if df_method is None and not result.df_method and df_label == "asymptotic":
        notes.append(f"df are asymptotic (z): the fit has {result.nobs} observations, more than emmeans' "
                     f"pbkrtest.limit and lmerTest.limit ({DF_LIMIT})")
    out = EMMResult(table, L, tuple(names), tuple(by_names), grid, df_label, weights, level, result,
                    notes=tuple(notes), type=type)
    if method is not None:
        out = EMMResult(table, L, tuple(names), tuple(by_names), grid, df_label, weights, level, result,
                        contrast(out, method, adjust), tuple(notes), type)
    elif adjust is not None:
        raise UsageError("adjust= applies to contrasts: name a method in specs ('pairwise ~ f') or call .contrast()")
    return out


def _cell_labels(em: EMMResult, rows: np.ndarray) -> list[str]:
    """emmeans' labels of the means in a contrast: the specs variables' levels joined by a space,
    a variable whose levels are all numbers prefixed by its name (``temp175``), a label with
    ``-``, ``+``, ``/`` or ``*`` in parentheses."""
    parts = []
    for n in em.specs:
        labels = [_level_label(v) for v in em.emmeans[n]]
        if _label_float(labels):
            labels = [n + lab for lab in labels]
        parts.append(labels)
    out = [" ".join(p[r] for p in parts) for r in rows]
    return [f"({lab})" if re.search(r"-|\+|/|\*", lab) else lab for lab in out]


def _method_matrix(method: Any, labels: list[str], sep: str = " - ") -> tuple[np.ndarray, list[str], str]:
    k = len(labels)
    if isinstance(method, Mapping):
        rows, names = [], []
        for name, w in method.items():
            w = np.asarray(w, dtype=float)
            if w.shape != (k,) or not np.all(np.isfinite(w)):
                raise UsageError(f"the contrast {name!r} needs {k} finite weights (one per mean: "
                                 f"{', '.join(labels)}), got {list(np.atleast_1d(w))}")
            rows.append(w)
            names.append(str(name))
        if not rows:
            raise UsageError("a custom contrast method needs at least one contrast")
        return np.array(rows), names, "none"
    if method not in _METHODS:
        raise UsageError(f"unknown contrast method {method!r}; choose one of {', '.join(_METHODS)} or pass "
                         "{name: weights}")
    rows, names = [], []
    if method == "pairwise":
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    elif method == "revpairwise":
        pairs = [(i, j) for i in range(1, k) for j in range(i)]
    else:
        pairs = [(i, 0) for i in range(1, k)]
    for i, j in pairs:
        c = np.zeros(k)
        c[i], c[j] = 1.0, -1.0
        rows.append(c)
        names.append(f"{labels[i]}{sep}{labels[j]}")
    if not rows:
        raise UsageError(f"{method} needs at least two means in each group, got {k}")
    return np.array(rows), names, _DEFAULT_ADJUST[method]


def contrast(em: EMMResult, method: Any = "pairwise", adjust: str | None = None, level: float | None = None
             ) -> pd.DataFrame:
    """Contrasts of the means within each by group (see the module docstring); one row each:
    the by variables, then :data:`CONTRAST_COLUMNS`. ``frame.attrs["notes"]`` says what
    emmeans prints under the table (the adjustment and family size)."""
    level = em.level if level is None else level
    if not (isinstance(level, float) and 0 < level < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    if adjust is not None and adjust not in ADJUSTMENTS:
        adjust_family(np.zeros(1), np.ones(1), str(adjust), 2, level)  # raises, naming it
    table = em.emmeans
    if em.by:
        keys = table[list(em.by)].astype(object).apply(lambda r: tuple(_level_label(x) for x in r), axis=1)
        groups = list(dict.fromkeys(keys))
        members = [np.flatnonzero((keys == g).to_numpy()) for g in groups]
    else:
        members = [np.arange(len(table))]
    out, notes = [], []
    for rows in members:
        labels = _cell_labels(em, rows)
        link = _link(em.result)
        ratios = em.type == "response" and link is not None and link.name in _RATIOS
        C, names, default = _method_matrix(method, labels)
        if ratios and np.all(np.abs(C.sum(axis=1)) < 1e-6):  # emmeans labels ratios "A / B"
            C, names, default = _method_matrix(method, labels, " / ")
        else:
            ratios = False
        adj = default if adjust is None else adjust
        pairwise = not isinstance(method, Mapping) and method in ("pairwise", "revpairwise")
        if adj == "tukey" and not pairwise:
            notes.append("adjust = 'tukey' was changed to 'sidak' because 'tukey' is only appropriate for one set "
                         "of pairwise comparisons")
            adj = "sidak"
        if len(names) == 1:  # a family of one: every adjustment is none (emmeans says nothing)
            adj = "none"
        Lc = C @ em.L[rows]
        est = _combinations(em.result, Lc, em.df_method)
        t = est[:, 0] / est[:, 1]
        p, q = adjust_family(t, est[:, 2], adj, len(rows), level)
        frame = pd.DataFrame({n: [table[n].iloc[rows[0]]] * len(names) for n in em.by})
        lo, hi = est[:, 0] - q * est[:, 1], est[:, 0] + q * est[:, 1]
        if ratios:  # contrasts of log odds / log rates: ratios
            est = np.column_stack([np.exp(est[:, 0]), np.exp(est[:, 0]) * est[:, 1], est[:, 2]])
            lo, hi = np.exp(lo), np.exp(hi)
            notes.append(f"{_RATIOS[link.name]}s: back-transformed from the {link.name} scale; tests on the "
                         f"log {_RATIOS[link.name]} scale")
        elif em.type == "response" and link is not None and link.name in _RATIOS:
            notes.append(f"contrasts whose weights do not sum to zero stay on the {link.name} scale")
        frame["contrast"] = names
        frame["estimate"], frame["std_error"], frame["df"] = est[:, 0], est[:, 1], est[:, 2]
        frame["conf_low"], frame["conf_high"] = lo, hi
        frame["statistic"], frame["p_value"], frame["adjust"] = t, p, adj
        out.append(frame)
        if adj != "none":
            notes.append(f"P value adjustment: {adj} method for {len(rows) if adj == 'tukey' else len(names)} "
                         f"{'means' if adj == 'tukey' else 'tests'}")
    result = pd.concat(out, ignore_index=True)
    result.attrs["notes"] = list(dict.fromkeys(notes))
    return result
