"""HTML for Jupyter: results, ANOVA tables and likelihood-ratio tests as readable tables.

Display only: every number comes from the object shown, formatted here and escaped. A
:class:`~hlmbridge.FitResult` shows Stata's ``mixed`` header (observations, groups, log
likelihood, Wald test), the fixed effects (coefficient, SE, z or t with df, p, CI), the random
part (Stata's names, estimate, SE, CI) and the LR test versus the linear model. A table with a
heading (an ANOVA table: :class:`TitledFrame`) shows its heading above its rows; an
:class:`~hlmbridge.LRTest` its statistic, df, p and note.

Margins, emmeans, ``hlmbridge.anova(m0, m1)`` and PBmodcomp results are laid out by
:mod:`hlmbridge.results.display_margins` with this module's table helpers.

:class:`TitledFrame` is a pandas DataFrame whose ``attrs["heading"]`` (and ``attrs["note"]``)
are shown with it; anything derived from it (a selection, a copy with changes) is a plain
DataFrame.

Examples
--------
>>> import hlmbridge
>>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", hlmbridge.datasets.sleepstudy(),
...                     engine="statsmodels")
>>> html = res._repr_html_()
>>> html.startswith("<div class=\\"hlmbridge\\">"), "Fixed effects" in html, "var(_cons)" in html
(True, True, True)
>>> "<caption>Type III Analysis of Variance Table" in res.anova("Satterthwaite")._repr_html_()
True
"""

from __future__ import annotations

import html as _html
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TitledFrame", "fit_html", "frame_html", "lrtest_html", "number", "p_value"]

_STYLE = ("<style>.hlmbridge table{border-collapse:collapse;margin:0.4em 0}"
          ".hlmbridge th,.hlmbridge td{padding:2px 8px;text-align:right}"
          ".hlmbridge th:first-child,.hlmbridge td:first-child{text-align:left}"
          ".hlmbridge caption{text-align:left;font-weight:bold}"
          ".hlmbridge thead th{border-bottom:1px solid}</style>")


def number(x: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` decimals (``.`` for missing, e-notation when tiny or
    huge), integers as integers, anything else as text.

    >>> number(1.23456), number(float("nan")), number(3), number(1.5e-9), number("a<b")
    ('1.2346', '.', '3', '1.500e-09', 'a<b')
    """
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x):
            return "."
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e12):
            return f"{x:.{max(digits - 1, 0)}e}"
        return f"{x:.{digits}f}"
    return "" if x is None else str(x)


def _esc(text: str) -> str:
    """Text as HTML element content (``<``, ``>``, ``&`` escaped; quotes kept)."""
    return _html.escape(text, quote=False)


def _cell(x: Any, tag: str = "td") -> str:
    return f"<{tag}>{_esc(number(x))}</{tag}>"


def p_value(x: Any) -> str:
    """A p-value as Stata prints it: 4 decimals (``0.0000`` below 5e-5), ``.`` for missing.

    >>> p_value(4.6e-92), p_value(0.10347), p_value(float("nan"))
    ('0.0000', '0.1035', '.')
    """
    return "." if x is None or math.isnan(float(x)) else f"{float(x):.4f}"


def frame_html(frame: pd.DataFrame, caption: str | None = None, note: str | None = None,
               columns: dict[str, str] | None = None) -> str:
    """One table of ``frame`` (its index is not shown), headed by ``caption``; ``columns``
    renames headers for display (the frame is not changed). Columns named ``p_value`` or
    ``Pr(>...)`` show as p-values, the rest through :func:`number`."""
    names = [(columns or {}).get(str(c), str(c)) for c in frame.columns]
    pcols = [str(c) == "p_value" or str(c).startswith("Pr(") for c in frame.columns]
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_esc(n)}</th>" for n in names) + "</tr></thead><tbody>")
    for rec in frame.itertuples(index=False, name=None):
        out.append("<tr>" + "".join(f"<td>{p_value(v)}</td>" if is_p else _cell(v)
                                    for v, is_p in zip(rec, pcols, strict=True)) + "</tr>")
    out.append("</tbody></table>")
    if note:
        out.append(f"<p>{_esc(note)}</p>")
    return "".join(out)


def _wrap(body: str) -> str:
    return f"<div class=\"hlmbridge\">{_STYLE}{body}</div>"


class TitledFrame(pd.DataFrame):
    """A DataFrame shown with its ``attrs["heading"]`` (and ``attrs["note"]``) as an HTML table
    in Jupyter; derived frames are plain DataFrames.

    >>> t = TitledFrame({"term": ["x"], "f_value": [2.5]})
    >>> t.attrs["heading"] = "Type III"
    >>> "<caption>Type III</caption>" in t._repr_html_(), type(t[["term"]]).__name__
    (True, 'DataFrame')
    """

    @property
    def _constructor(self) -> type[pd.DataFrame]:  # selections, copies, arithmetic: plain frames
        return pd.DataFrame

    def _repr_html_(self) -> str:  # type: ignore[override]
        return _wrap(frame_html(pd.DataFrame(self), self.attrs.get("heading"), self.attrs.get("note")))


def _header_rows(res: Any) -> list[tuple[str, str]]:
    method = "REML" if res.method == "reml" else "ML"
    rows = [("Model", _written(res)), ("Engine", f"{res.engine} ({method})"), ("Number of obs", f"{res.nobs:,}")]
    for g in res.groups:
        rows.append((f"Groups: {g.group}", f"{g.n_groups:,} (per group: min {g.min:,}, avg {g.mean:.1f}, "
                     f"max {g.max:,})"))
    rows.append(("Log likelihood" if method == "ML" else "Log restricted-likelihood", number(res.loglik)))
    rows.append((f"Wald chi2({res.wald_df})", f"{number(res.wald_chi2, 2)} (Prob > chi2 = {p_value(res.wald_p)})"))
    if res.df_method:
        rows.append(("DF method", res.df_method))
    if not res.converged:
        rows.append(("Converged", "no"))
    if res.singular:
        rows.append(("Singular fit", "yes (a variance at its boundary)"))
    return rows


def _written(res: Any) -> str:
    from hlmbridge.results.postestimation import _written as written

    return written(res)


def fit_html(res: Any) -> str:
    """A :class:`~hlmbridge.FitResult` as HTML: header, fixed effects, random part, LR test."""
    head = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _header_rows(res))
    parts = [f"<table><tbody>{head}</tbody></table>"]
    fixed = res.fixed
    stat = "t" if res.df_method else "z"
    cols = ["stata_term", "estimate", "std_error"] + (["df"] if res.df_method else []) + \
        ["statistic", "p_value", "conf_low", "conf_high"]
    parts.append(frame_html(fixed[cols], f"Fixed effects ({res.spec.response})", columns={
        "stata_term": "term", "estimate": "Coef.", "std_error": "Std. err.", "statistic": stat,
        "p_value": f"P>|{stat}|", "conf_low": "[95% conf.", "conf_high": "interval]"}))
    if res.random_rows:
        rnd = res.random.assign(parameter=lambda d: np.where(d["group"] == "Residual", d["stata_term"],
                                                             d["group"] + ": " + d["stata_term"]))
        parts.append(frame_html(rnd[["parameter", "estimate", "std_error", "conf_low", "conf_high"]],
                                "Random-effects parameters", columns={
                                    "estimate": "Estimate", "std_error": "Std. err.", "conf_low": "[95% conf.",
                                    "conf_high": "interval]"}))
    if not math.isnan(res.lr_chi2):
        kind = "chibar2(01)" if res.lr_kind == "chibar2" else f"chi2({res.lr_df})"
        parts.append(f"<p>LR test vs. linear model: {kind} = {_esc(number(res.lr_chi2, 2))}, "
                     f"Prob &gt; {'chibar2' if res.lr_kind == 'chibar2' else 'chi2'} = "
                     f"{p_value(res.lr_p)}</p>")
    if res.warnings:
        parts.append("<p>" + "<br>".join(_esc(w) for w in res.warnings) + "</p>")
    return _wrap("".join(parts))


def lrtest_html(test: Any) -> str:
    """An :class:`~hlmbridge.LRTest` as HTML (Stata's ``lrtest`` block)."""
    small = test.restricted_name if test.restricted_name is not None else test.restricted
    big = test.unrestricted_name if test.unrestricted_name is not None else test.unrestricted
    rows = [("Assumption", f"{small} nested within {big}"), (f"LR chi2({test.df})", number(test.chi2, 2)),
            ("Prob > chi2", p_value(test.p_value))]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    note = f"<p>Note: {_esc(test.note)}</p>" if test.note else ""
    return _wrap(f"<table><caption>Likelihood-ratio test</caption><tbody>{body}</tbody></table>{note}")
