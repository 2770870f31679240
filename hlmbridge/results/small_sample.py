"""Small-sample inference on a FitResult: t tests on residual/Satterthwaite/Kenward-Roger df,
type III F tests per term and F tests of a contrast matrix. No refit: the numbers come from
the result's design and estimates (:mod:`hlmbridge.inference.df_methods`).

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.hsb("combined")
>>> res = hlmbridge.fit("mixed mathach ses || id:, reml", df, engine="statsmodels")
>>> sat = res.with_df("satterthwaite")
>>> list(sat.fixed.columns[:5])
['term', 'stata_term', 'estimate', 'std_error', 'df']
>>> bool(sat.fixed["df"].iloc[0] < res.nobs)
True
>>> float(sat.test([[1.0, 0.0]])["num_df"].iloc[0])
1.0
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.results.fit_result import FitResult

__all__ = ["TEST_COLUMNS", "anova", "df_analysis_of", "resolve_df_method", "f_test", "term_columns", "with_df"]

#: Columns of :func:`anova` and :func:`f_test` tables.
TEST_COLUMNS: tuple[str, ...] = ("term", "f_value", "num_df", "den_df", "p_value", "f_scaling", "df_method")

_EIM = " (expected information)"


def _method_and_information(method: str, information: str | None = None) -> tuple[str, str]:
    from hlmbridge.inference.df_methods import normalize_df_method

    if isinstance(method, str) and method.lower().endswith(_EIM):
        method, information = method[: -len(_EIM)], "expected"
    return normalize_df_method(method), information or "observed"


def resolve_df_method(method: object) -> str:
    """The canonical label of a df method (``"satterthwaite (expected information)"`` kept).

    >>> resolve_df_method("KR"), resolve_df_method("Satterthwaite (expected information)")
    ('kenward-roger', 'satterthwaite (expected information)')
    """
    if not isinstance(method, str):
        from hlmbridge.inference.df_methods import normalize_df_method

        normalize_df_method(method)  # raises UsageError
    m, information = _method_and_information(str(method))
    return m + (_EIM if (m == "satterthwaite" and information == "expected") else "")


def df_analysis_of(result: FitResult, method: str, information: str | None = None):  # -> DfAnalysis
    """The :class:`~hlmbridge.inference.df_methods.DfAnalysis` of ``result`` for ``method``."""
    from hlmbridge.inference.df_methods import df_analysis

    if result.design is None:
        raise UsageError(
            "df methods need the fit's design, which a result rebuilt from JSON (from_dict) does not "
            "carry: refit with hlmbridge.fit(..., df_method=...)"
        )
    method, information = _method_and_information(method, information)
    beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
    theta = np.array([r[5] for r in result.random_rows], dtype=float)
    return df_analysis(result.design, beta, theta, method, reml=result.spec.reml, information=information)


def with_df(result: FitResult, method: str, *, information: str | None = None) -> FitResult:
    """``result`` with its fixed-effects table on ``method``'s t distribution.

    ``statistic`` becomes t, p-values and 95% CIs use the df (a ``df`` column); with
    Kenward-Roger the SEs come from the adjusted covariance (kept in ``fixed_vcov_adjusted``;
    ``fixed_vcov`` stays the unadjusted one). ``information="expected"`` uses the expected
    instead of the observed information for the Satterthwaite df.
    """
    if information not in (None, "observed", "expected"):
        raise UsageError(f"information must be 'observed' or 'expected', got {information!r}")
    method, information = _method_and_information(method, information)
    a = df_analysis_of(result, method, information)
    rows = a.coefficients()
    fixed_rows = tuple(
        (old[0], old[1], float(b), float(se), float(t), float(p), float(lo), float(hi))
        for old, (b, se, _df, t, p, lo, hi) in zip(result.fixed_rows, rows, strict=True)
    )
    label = a.method + (_EIM if (a.method == "satterthwaite" and information == "expected") else "")
    adjusted: tuple[tuple[float, ...], ...] = ()
    if a.method == "kenward-roger":
        adjusted = tuple(map(tuple, np.asarray(a.vcov_adjusted, dtype=float).tolist()))
    notes = list(a.notes)
    if label == "satterthwaite" and result.singular:
        notes.append(
            "Satterthwaite df at a boundary (singular) fit: as lmerTest's, they are computed in lme4's "
            "(theta, sigma), where a parameter at the boundary adds nothing to the df; Kenward-Roger's "
            "(pbkrtest) count it and can be far smaller (lme4's Dyestuff2: 29 against 5)"
        )
    # Notes of an earlier df method do not carry over.
    warnings = tuple(w for w in result.warnings if not w.startswith(_DF_NOTE)) + tuple(notes)
    return dataclasses.replace(
        result, fixed_rows=fixed_rows, df_method=label, fixed_df=tuple(float(x) for x in rows[:, 2]),
        fixed_vcov_adjusted=adjusted, warnings=warnings,
    )


_DF_NOTE = "Satterthwaite df"  # how every note of the df methods begins


def _method_of(result: FitResult, df_method: str | None) -> str:
    method = df_method or result.df_method
    if not method:
        raise UsageError("no df method: pass df_method= ('residual', 'satterthwaite', 'kenward-roger') "
                         "or fit with one")
    return method


def _row(label: str, t: Any) -> tuple[Any, ...]:
    return (label, t.f_value, t.ndf, t.ddf, t.p_value, t.f_scaling, t.method)


def f_test(result: FitResult, L: Any, rhs: Any = None, df_method: str | None = None) -> pd.DataFrame:
    """The F test of ``L beta = rhs`` (``L``: one column per fixed effect, or a 1-d contrast).

    As lmerTest's ``contest(..., joint = TRUE)`` (Satterthwaite) and pbkrtest's ``KRmodcomp``.
    """
    a = df_analysis_of(result, _method_of(result, df_method))
    t = a.test(np.atleast_2d(np.asarray(L, dtype=float)), rhs)
    return pd.DataFrame([_row("L", t)], columns=list(TEST_COLUMNS))


# ---- terms of the fixed part ----------------------------------------------------------------
_STATA_PIECE = re.compile(r"^(?:(?P<op>[^.#]+)\.)?(?P<var>.+)$")


def _stata_pieces(name: str) -> list[tuple[str, bool]]:
    """(variable, is_factor) for each piece of a Stata column name (``1.sector#c.ses``)."""
    out = []
    for piece in name.split("#"):
        m = _STATA_PIECE.match(piece)
        assert m is not None
        op = m.group("op")
        out.append((m.group("var"), op is not None and op != "c"))
    return out


def term_columns(result: FitResult) -> list[tuple[str, tuple[int, ...], frozenset[str], bool]]:
    """The fixed terms (no intercept) as ``(label, columns, variables, has_factor_coding)``.

    Formula specs: R's ``term.labels`` and model-matrix column order; Stata specs: the
    command's terms, each owning the columns whose variables are the term's.
    """
    design = result.design
    if design is None:
        raise UsageError("term tests need the fit's design (refit: from_dict results carry none)")
    spec = design.spec
    names = design.fixed_lme4
    out = []
    if spec.formula is not None:
        terms = spec.formula.fixed
        labels = [v.deparse() for v in terms.variables]
        j = 1 if terms.intercept else 0
        for t in terms.terms:
            pat = re.compile(":".join(re.escape(labels[v]) + r"(.*?)" for v in t))
            cols, factor = [], False
            while j < len(names):
                m = pat.fullmatch(names[j])
                if m is None:
                    break
                cols.append(j)
                factor = factor or any(g != "" for g in m.groups())
                j += 1
            if not cols:
                raise UnsupportedSpecError(f"the term {':'.join(labels[v] for v in t)}", "hlmbridge's term tests",
                                           message=f"cannot tell the columns of the term "
                                                   f"{':'.join(labels[v] for v in t)!r} from the model matrix")
            out.append((":".join(labels[v] for v in t), tuple(cols), frozenset(labels[v] for v in t), factor))
        if j != len(names):
            raise UnsupportedSpecError("the fixed part", "hlmbridge's term tests",
                                       message=f"cannot tell which term owns the column {names[j]!r}")
        return out
    stata = design.fixed_stata
    for term in spec.fixed:
        vs = frozenset(term.variables)
        cols = [j for j, s in enumerate(stata) if s != "_cons" and frozenset(v for v, _ in _stata_pieces(s)) == vs]
        factor = any(f for j in cols for _, f in _stata_pieces(stata[j]))
        if cols:
            out.append((term.stata_name, tuple(cols), vs, factor))
    return out


def anova(result: FitResult, df_method: str | None = None) -> pd.DataFrame:
    """Type III F tests of every fixed term, as lmerTest's ``anova(fit, type = 3)``
    (:func:`hlmbridge.results.anova.anova_table`, which also gives types I and II)."""
    from hlmbridge.results.anova import anova_table

    return anova_table(result, 3, df_method)
