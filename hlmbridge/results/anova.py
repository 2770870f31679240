"""ANOVA tables of the fixed part: lmerTest's type I, II and III contrasts and F tests.

The hypothesis matrices are built as lmerTest 3.1 builds them (``get_contrasts_type1``,
``get_contrasts_type2_unfolded``, ``get_contrasts_type3``), from hlmbridge's design:

- **type I** (sequential): the rows of ``t(doolittle(X'X)$L)`` that belong to each term;
- **type II**: a term no other term contains is tested by its own columns ("marginal");
  a contained term by the Doolittle rows of ``X'X`` with the term and the terms containing it
  moved last;
- **type III**: independent of the coding. The model matrix is remade with treatment
  contrasts for every factor (``Xt``, rank-deficient columns dropped as lmerTest's
  ``ensure_full_rank``), the over-parametrized cell design ``rdX`` (``~ 0 + term`` for each
  term) is projected on it, ``L = zapsmall(t(ginv(Xt) rdX))``, and each term's columns are made
  orthogonal to those of the terms containing it, highest order first; the rows named as
  ``Xt``'s columns, taken per term, are mapped to the fit's coding by ``zapsmall(ginv(Xt) X)``.

"Contains" is lmerTest's ``containment``: term A is contained in B when B has every variable
of A (those R's ``terms()`` codes by contrasts, ``factors == 1``), at least one more, and the
same plain numeric variables. Each matrix is then tested as lmerTest's ``contestMD``
(Satterthwaite: eigen-directions of ``L vcov L'``; Kenward-Roger: pbkrtest's ``KRmodcomp``;
hlmbridge's ``"residual"``: ``n - p`` denominator df). ``Sum Sq`` and ``Mean Sq`` are lmerTest's:
the unscaled F times the residual variance, times ``NumDF`` for the sum.

Examples
--------
>>> import hlmbridge
>>> hsb = hlmbridge.datasets.hsb("combined")
>>> res = hlmbridge.fit("mathach ~ ses * factor(sector) + (1 | id)", hsb, engine="statsmodels")
>>> tab, tests = res.anova("Satterthwaite", type=3, show_tests=True)
>>> tab["term"].tolist(), tab["num_df"].tolist()
(['ses', 'factor(sector)', 'ses:factor(sector)'], [1.0, 1.0, 1.0])
>>> tab.attrs["heading"]
"Type III Analysis of Variance Table with Satterthwaite's method"
>>> import numpy as np
>>> doolittle(np.array([[4.0, 2.0], [2.0, 3.0]]))[0]
array([[1. , 0. ],
       [0.5, 1. ]])
>>> zapsmall(np.array([1.0, 1e-12]))
array([1., 0.])
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hlmbridge.errors import UnsupportedSpecError, UsageError

__all__ = ["ANOVA_COLUMNS", "TermStructure", "anova_table", "doolittle", "term_structure", "type_contrasts",
           "zapsmall"]

#: Columns of :func:`anova_table` (lmerTest's ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``,
#: ``F value``, ``Pr(>F)``), then Kenward-Roger's F scaling and the df method.
ANOVA_COLUMNS: tuple[str, ...] = ("term", "sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value",
                                  "f_scaling", "df_method")

_EPS = float(np.sqrt(np.finfo(float).eps))


# ---- R's small numerical helpers -------------------------------------------------------------
def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R 4.2's ``zapsmall``: round to about ``digits`` significant digits of the largest entry."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return x.copy()
    mx = float(np.nanmax(np.abs(x)))
    if mx <= 0:
        return np.round(x, digits)
    # R 4.2's zapsmall passes digits - log10(mx) to round(), which rounds the digits to the
    # nearest integer (fround's floor(digits + 0.5)); R 4.4 takes the ceiling of log10(mx).
    d = max(0, int(np.floor(digits - np.log10(mx) + 0.5)))
    return np.round(x, d)


def doolittle(x: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """lmerTest's ``doolittle``: the LU factors of a square matrix (entries below ``eps`` zeroed)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = x[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            v = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else v / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


def _ginv(a: np.ndarray) -> np.ndarray:
    """MASS's ``ginv`` (singular values below sqrt(eps) of the largest dropped)."""
    return np.linalg.pinv(a, rcond=_EPS)


def _resid(x: np.ndarray, y: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Residuals of ``lm.fit(x, y)`` (least squares on the column space of ``x``)."""
    if x.shape[1] == 0:
        return y.copy()
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    u = u[:, s > tol * s[0]] if s.size and s[0] > 0 else u[:, :0]
    return y - u @ (u.T @ y)


def _full_rank_columns(X: np.ndarray, tol: float = 1e-7) -> list[int]:
    """The columns lmerTest's ``ensure_full_rank`` keeps (LINPACK's limited pivoting: a column
    nearly in the span of the kept ones goes to the end and is dropped)."""
    keep: list[int] = []
    Q = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        c = X[:, j]
        norm = float(np.linalg.norm(c))
        r = c - Q @ (Q.T @ c)
        rn = float(np.linalg.norm(r))
        if norm > 0 and rn > tol * norm:
            keep.append(j)
            Q = np.column_stack([Q, r / rn])
    return keep


# ---- the fixed part's terms -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TermStructure:
    """R's ``terms()`` view of the fixed part and the columns of the fit's ``X``.

    ``codes[k][v]`` is R's ``factors`` attribute (1 contrasts, 2 indicators, 0 absent);
    ``numeric[v]`` whether variable ``v`` is a plain numeric vector (R's dataClass
    ``"numeric"``); ``col_term[j]`` the term of column ``j`` of ``X`` (-1: the intercept);
    ``values`` the evaluated variables (a Factor or Numeric each) for the type III cells.
    ``col_term`` describes the columns in R's order: ``X[:, r_order]``.
    """

    labels: tuple[str, ...]
    terms: tuple[tuple[int, ...], ...]
    intercept: bool
    codes: tuple[tuple[int, ...], ...]
    numeric: tuple[bool, ...]
    col_term: tuple[int, ...]
    values: tuple[Any, ...] | None
    r_order: tuple[int, ...] | None = None  # the fit's columns in R's order (Stata fits), None: as they are

    def containment(self) -> list[list[int]]:
        """For each term the terms containing it (lmerTest's ``containment``)."""
        vars_ = [frozenset(v for v in t if self.codes[k][v] == 1) for k, t in enumerate(self.terms)]
        nums = [frozenset(v for v in s if self.numeric[v]) for s in vars_]
        return [[b for b in range(len(self.terms))
                 if vars_[a] <= vars_[b] and vars_[b] - vars_[a] and nums[a] == nums[b]]
                for a in range(len(self.terms))]

    def columns(self, k: int) -> list[int]:
        """The columns of ``X`` that belong to term ``k``."""
        return [j for j, t in enumerate(self.col_term) if t == k]


def _r_codes(terms: tuple[tuple[int, ...], ...], n_vars: int) -> tuple[tuple[int, ...], ...]:
    """R's ``TermCode`` (the ``factors`` attribute of ``terms()``)."""
    sets = [set(t) for t in terms]
    out = []
    for k, t in enumerate(terms):
        row = [0] * n_vars
        for v in t:
            rest = sets[k] - {v}
            row[v] = 1 if (not rest or any(rest <= sets[j] for j in range(k))) else 2
        out.append(tuple(row))
    return tuple(out)


def term_structure(result: Any) -> TermStructure:
    """The :class:`TermStructure` of a fit (an lme4-formula or a Stata-command spec)."""
    from hlmbridge.design.evaluate import Factor
    from hlmbridge.design.model_matrix import model_matrix

    design = result.design
    if design is None:
        raise UsageError("ANOVA tables need the fit's design, which a result rebuilt from JSON (from_dict) "
                         "does not carry: refit")
    spec = design.spec
    if spec.formula is not None:
        terms = spec.formula.fixed
        values = tuple(design.fixed_values)
        if len(values) != len(terms.variables):
            raise UsageError("this design does not carry its evaluated variables (built by an older hlmbridge): refit")
        mm = model_matrix(terms, list(values), design.X.shape[0], dict(design.contrasts))
        where = {name: j for j, name in enumerate(mm.names)}
        try:
            idx = [where[name] for name in design.fixed_lme4]
        except KeyError as exc:
            raise UnsupportedSpecError("the fixed part", "hlmbridge's ANOVA",
                                       message=f"cannot tell which term owns the column {exc.args[0]!r}") from None
        if not np.allclose(mm.X[:, idx], design.X, rtol=1e-12, atol=0):
            raise UnsupportedSpecError("the fixed part", "hlmbridge's ANOVA",
                                       message="the recoded model matrix differs from the fit's")
        numeric = tuple((not isinstance(v, Factor)) and not v.matrix and v.values.shape[1] == 1 for v in values)
        return TermStructure(terms.labels, tuple(terms.terms), bool(terms.intercept),
                             _r_codes(tuple(terms.terms), len(terms.variables)), numeric,
                             tuple(mm.term_of_column[j] for j in idx), values)
    return _stata_structure(result)


def _stata_piece_level(piece: str) -> float | None:
    """The level of a factor piece of a Stata column name (``2.sector`` -> 2.0), None for a
    continuous one (``ses``, ``c.ses``)."""
    op, dot, _ = piece.partition(".")
    if not dot or op == "c":
        return None
    return float(op.rstrip("b").rstrip("o") or "nan")


def _stata_structure(result: Any) -> TermStructure:
    """Terms of a Stata-command fit as R would read the same model as a formula: the terms in
    R's order (by degree, then appearance), the columns in R's order (the intercept first; in
    an interaction the first variable varies fastest), each command term owning the columns
    made of its variables; the variables recovered from their main-effect columns."""
    from hlmbridge.design.evaluate import Factor, Numeric
    from hlmbridge.results.small_sample import _stata_pieces

    design = result.design
    spec = design.spec
    names: list[str] = []
    factor: dict[str, bool] = {}
    terms: list[tuple[int, ...]] = []
    labels: list[str] = []
    for term in spec.fixed:
        idx = []
        for v in term.vars:
            if v.name not in names:
                names.append(v.name)
                factor[v.name] = bool(v.factor)
            idx.append(names.index(v.name))
        if len(set(idx)) != len(idx):
            raise UnsupportedSpecError(f"the term {term.stata_name}", "hlmbridge's ANOVA",
                                       message=f"the term {term.stata_name!r} repeats a variable; R's terms() "
                                               "would not keep it as one term")
        terms.append(tuple(sorted(idx)))
        labels.append(term.stata_name)
    order = sorted(range(len(terms)), key=lambda k: (len(terms[k]), k))
    terms = [terms[k] for k in order]
    labels = [labels[k] for k in order]
    keyed = []
    for j, s in enumerate(design.fixed_stata):
        if s == "_cons":
            keyed.append(((-1,), j, -1))
            continue
        pieces = s.split("#")
        vs = [names.index(v) for v, _ in _stata_pieces(s)]
        hit = [k for k, t in enumerate(terms) if frozenset(t) == frozenset(vs)]
        if len(hit) != 1:
            raise UnsupportedSpecError("the fixed part", "hlmbridge's ANOVA",
                                       message=f"cannot tell which term owns the column {s!r}")
        lev = {v: (_stata_piece_level(pc) or 0.0) for v, pc in zip(vs, pieces)}
        inner = tuple(lev[v] for v in sorted(vs, reverse=True))  # the last variable varies slowest
        keyed.append(((hit[0],) + inner, j, hit[0]))
    keyed.sort(key=lambda t: t[0])
    r_order = tuple(j for _, j, _ in keyed)
    col_term = tuple(k for _, _, k in keyed)
    intercept = "_cons" in design.fixed_stata
    numeric = tuple(not factor[n] for n in names)
    values: tuple[Any, ...] | None = None
    X = np.asarray(design.X, dtype=float)
    bases = dict(design.factor_bases)
    recovered: list[Any] = []
    for v, nm in enumerate(names):
        main = [j for j, s in enumerate(design.fixed_stata) if "#" not in s and _stata_pieces(s)[0][0] == nm]
        if not main:
            break
        if not factor[nm]:
            recovered.append(Numeric(X[:, main[:1]]))
            continue
        levels = {float(bases[nm]): None} if nm in bases else {}
        for j in main:
            levels[float(_stata_piece_level(design.fixed_stata[j].split("#")[0]))] = j
        # The base level first, as R's treatment coding of the same model puts it (ib2.g is
        # relevel(factor(g), ref = "2")), the others in order.
        ordered = sorted(levels, key=lambda lv: (nm not in bases or lv != float(bases[nm]), lv))
        codes = np.zeros(X.shape[0], dtype=np.int64)
        base_code = ordered.index(float(bases[nm])) if nm in bases else -1
        codes[:] = base_code
        for lv, j in levels.items():
            if j is not None:
                codes[X[:, j] == 1.0] = ordered.index(lv)
        if np.any(codes < 0):
            break
        recovered.append(Factor(codes, tuple(f"{lv:g}" for lv in ordered)))
    else:
        values = tuple(recovered)
    return TermStructure(tuple(labels), tuple(terms), intercept, _r_codes(tuple(terms), len(names)), numeric,
                         col_term, values, r_order)


# ---- contrasts -------------------------------------------------------------------------------
def _type1(X: np.ndarray, ts: TermStructure) -> list[np.ndarray]:
    p = X.shape[1]
    if p == 1:
        L = np.ones((1, 1))
    else:
        L = doolittle(X.T @ X)[0].T
    return [L[ts.columns(k)] for k in range(len(ts.terms))]


def _type2(X: np.ndarray, ts: TermStructure) -> list[np.ndarray]:
    if X.shape[1] <= 1 or len(ts.terms) <= 1:
        return _type1(X, ts)
    contained = ts.containment()
    p = X.shape[1]
    out = []
    for k in range(len(ts.terms)):
        if not contained[k]:
            out.append(np.eye(p)[ts.columns(k)])
            continue
        cols_term = [j for t in [k] + contained[k] for j in ts.columns(t)]
        rest = [j for j in range(p) if j not in set(cols_term)]
        perm = rest + cols_term
        Xn = X[:, perm]
        Lc = doolittle(Xn.T @ Xn)[0].T
        rows = [i for i, j in enumerate(perm) if ts.col_term[j] == k]
        back = np.argsort(perm)  # columns back in X's order
        out.append(Lc[np.ix_(rows, back)])
    return out


def _cells(ts: TermStructure, n: int) -> tuple[np.ndarray, list, np.ndarray, list, list[int]]:
    """(treatment-coded X, its column keys, rdX, its column keys, term of each Xt column)."""
    from hlmbridge.design.evaluate import Factor

    values = ts.values
    assert values is not None

    def pieces(v: int, code: int) -> list[tuple[np.ndarray, tuple]]:
        val = values[v]
        if isinstance(val, Factor):
            ind = np.zeros((n, len(val.levels)))
            ok = val.codes >= 0
            ind[np.flatnonzero(ok), val.codes[ok]] = 1.0
            start = 0 if code == 2 else 1
            return [(ind[:, i], (v, i)) for i in range(start, len(val.levels))]
        return [(val.values[:, j], (v, j)) for j in range(val.values.shape[1])]

    def columns(term: tuple[int, ...], codes: dict[int, int], k: int) -> list[tuple[np.ndarray, tuple]]:
        parts = [pieces(v, codes[v]) for v in term]
        out = []
        for combo in product(*reversed(parts)):
            combo = combo[::-1]
            col = np.ones(n)
            for c, _ in combo:
                col = col * c
            out.append((col, (k,) + tuple(key for _, key in combo)))
        return out

    # Xt: model.matrix with contr.treatment (R's codes; without an intercept the first factor
    # of the first term that has one is coded by indicators).
    codes = [dict(zip(t, (ts.codes[k][v] for v in t))) for k, t in enumerate(ts.terms)]
    if not ts.intercept:
        for k, t in enumerate(ts.terms):
            hit = [v for v in t if not _is_numeric_value(values[v])]
            if hit:
                codes[k][hit[0]] = 2
                break
    xt, xt_keys, xt_term = [], [], []
    rd, rd_keys = [], []
    if ts.intercept:
        xt.append(np.ones(n)), xt_keys.append(("(Intercept)",)), xt_term.append(-1)
        rd.append(np.ones(n)), rd_keys.append(("(Intercept)",))
    for k, t in enumerate(ts.terms):
        for col, key in columns(t, codes[k], k):
            xt.append(col), xt_keys.append(key), xt_term.append(k)
        for col, key in columns(t, {v: 2 for v in t}, k):
            rd.append(col), rd_keys.append(key)
    return np.column_stack(xt), xt_keys, np.column_stack(rd), rd_keys, xt_term


def _is_numeric_value(v: Any) -> bool:
    from hlmbridge.design.evaluate import Factor

    return not isinstance(v, Factor)


def _type3(X: np.ndarray, ts: TermStructure) -> list[np.ndarray]:
    if X.shape[1] <= 1 or len(ts.terms) <= 1:
        return _type1(X, ts)
    if ts.values is None:
        if all(ts.numeric):  # no factor: every term is its own columns (nothing contains another)
            return [np.eye(X.shape[1])[ts.columns(k)] for k in range(len(ts.terms))]
        raise UnsupportedSpecError("type III tests of this Stata command", "hlmbridge's ANOVA",
                                   message="type III ANOVA of a Stata-command fit needs every variable as a main "
                                           "effect (hlmbridge recovers the factors' levels from those columns); "
                                           "fit the same model as an lme4 formula (hlmbridge translate gives it)")
    n = X.shape[0]
    Xt, xt_keys, rdX, rd_keys, xt_term = _cells(ts, n)
    keep = _full_rank_columns(Xt)
    Xt, xt_keys, xt_term = Xt[:, keep], [xt_keys[j] for j in keep], [xt_term[j] for j in keep]
    G = _ginv(Xt)
    L = zapsmall((G @ rdX).T)  # (rdX columns, Xt columns)
    tmap = {k: [j for j, t in enumerate(xt_term) if t == k] for k in range(len(ts.terms))}
    contained = ts.containment()
    order = sorted(range(len(ts.terms)), key=lambda k: -len(ts.terms[k]))  # stable: R's order(decreasing)
    for k in order:
        if contained[k]:
            xcols = [j for c in contained[k] for j in tmap[c]]
            L[:, tmap[k]] = zapsmall(_resid(L[:, xcols], L[:, tmap[k]]))
    where = {key: i for i, key in enumerate(rd_keys)}
    L = L[[where[key] for key in xt_keys]]
    mapping = zapsmall(G @ X)
    out = []
    for k in range(len(ts.terms)):
        Lk = L[:, tmap[k]].T
        Lk = Lk[np.abs(Lk).sum(axis=1) > 1e-8]
        out.append(Lk @ mapping)
    return out


def type_contrasts(result: Any, type: int) -> dict[str, np.ndarray]:
    """Each term's hypothesis matrix (one column per fixed effect) for ``type`` 1, 2 or 3."""
    ts = term_structure(result)
    X = np.asarray(result.design.X, dtype=float)
    build = {1: _type1, 2: _type2, 3: _type3}[type]
    if ts.r_order is None:
        return dict(zip(ts.labels, build(X, ts)))
    out = {}
    for label, L in zip(ts.labels, build(X[:, list(ts.r_order)], ts)):
        back = np.zeros_like(L)
        back[:, list(ts.r_order)] = L
        out[label] = back
    return out


_TYPES = {1: 1, 2: 2, 3: 3, "1": 1, "2": 2, "3": 3, "I": 1, "II": 2, "III": 3}


def _type_of(type: Any) -> int:
    key = type.strip().upper() if isinstance(type, str) else type
    if isinstance(key, bool) or key not in _TYPES:
        raise UsageError(f"unknown ANOVA type {type!r}; choose 1, 2 or 3 (or 'I', 'II', 'III')")
    return _TYPES[key]


# ---- the table --------------------------------------------------------------------------------
def _contest(a: Any, L: np.ndarray, sigma2: float) -> tuple[float, ...] | None:
    """lmerTest's ``contestMD``: (Sum Sq, Mean Sq, NumDF, DenDF, F, p, F scaling), None when ``L``
    tests nothing (no rows, or all its directions have zero variance)."""
    from hlmbridge.inference.df_methods import _fstat_ddf

    if L.shape[0] == 0:
        return None
    beta = a.beta
    if a.method == "kenward-roger":
        t = a.test(L)
        f_unscaled = t.f_value / t.f_scaling
        ms = f_unscaled * sigma2
        return (ms * t.ndf, ms, float(t.ndf), t.ddf, t.f_value, t.p_value, t.f_scaling)
    d, P = np.linalg.eigh(L @ a.vcov @ L.T)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    q = int(np.sum(d > max(_EPS * d[0], 0.0)))
    if q == 0:
        return None
    PtL = (P.T @ L)[:q]
    f = float(np.sum((PtL @ beta) ** 2 / d[:q]) / q)
    if a.method == "residual":
        ddf = float(a.df_residual)
    else:
        ddf = _fstat_ddf(np.array([a.contrast_df(PtL[m]) for m in range(q)]))
    ms = f * sigma2
    return (ms * q, ms, float(q), ddf, f, float(stats.f.sf(f, q, ddf)), 1.0)


_HEAD = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's", "residual": "residual df"}


def anova_table(result: Any, type: Any = 3, ddf: str | None = None,
                show_tests: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """lmerTest's ``anova(fit, type = type, ddf = ddf)`` as a table (:data:`ANOVA_COLUMNS`).

    A term whose hypothesis is empty (every column dropped for rank deficiency) gets a row of
    NaN after the others, as in lmerTest. ``show_tests=True`` also returns each term's
    hypothesis matrix (lmerTest's ``show_tests``), one column per fixed effect in the fit's
    order, named as the fit names them (lme4's names for a formula, Stata's for a command).
    """
    from hlmbridge.results.small_sample import _method_of, df_analysis_of, resolve_df_method

    t = _type_of(type)
    if not isinstance(show_tests, bool):
        raise UsageError(f"show_tests must be True or False, got {show_tests!r}")
    if isinstance(ddf, str) and ddf.strip().lower() == "lme4":
        raise UsageError("ddf='lme4' (lme4's own sequential table without df) is not computed by hlmbridge; "
                         "use 'Satterthwaite', 'Kenward-Roger' or 'residual'")
    method = resolve_df_method(_method_of(result, ddf))
    a = df_analysis_of(result, method)
    sigma2 = float(result.random_rows[-1][5])
    Ls = type_contrasts(result, t)
    rows, empty = [], []
    for label, L in Ls.items():
        r = _contest(a, L, sigma2)
        if r is None:
            empty.append((label, *([float("nan")] * 7), method))
        else:
            rows.append((label, *r, method))
    from hlmbridge.results.html import TitledFrame  # a DataFrame shown with its heading in Jupyter

    table = TitledFrame(rows + empty, columns=list(ANOVA_COLUMNS))
    roman = {1: "I", 2: "II", 3: "III"}[t]
    table.attrs["heading"] = f"Type {roman} Analysis of Variance Table with {_HEAD.get(method, method)} method"
    if not show_tests:
        return table
    design = result.design
    names = list(design.fixed_lme4 if design.spec.formula is not None else design.fixed_stata)
    return table, {label: pd.DataFrame(L, columns=names) for label, L in Ls.items()}
