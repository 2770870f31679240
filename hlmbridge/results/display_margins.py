"""Text and HTML display of margins, emmeans and model-comparison results (display only).

Every number shown comes from the object displayed; nothing is recomputed here.

- :func:`margins_text`: a :class:`~hlmbridge.results.margins.MarginsResult` laid out as
  Stata's ``margins`` prints it: the title ("Predictive margins", "Average marginal effects",
  or with ``atmeans`` "Adjusted predictions" / "Conditional marginal effects"), ``Number of
  obs``, ``Model VCE``, ``Expression``, ``dy/dx wrt``, the ``at`` legend (``1._at: Days = 0``)
  and the Delta-method table (Margin or dy/dx, std. err., z, P>|z|, 95% CI), numbers as
  :func:`hlmbridge.results.display.format_g` shows them (7 significant digits).
- :func:`emmeans_text`: an :class:`~hlmbridge.results.emmeans.EMMResult` as R's emmeans prints
  it (``$emmeans``, the df and confidence-level notes, ``$contrasts`` and the P value
  adjustment note); the numbers with 7 significant digits (emmeans rounds to about 3), p-values
  with 4 decimals (``<.0001`` where that shows 0).
- :func:`pbmodcomp_text`: a :class:`~hlmbridge.inference.pbmodcomp.PBModComp` as pbkrtest's
  ``summary(PBmodcomp(...))`` prints it.
- :func:`comparison_text`: ``hlmbridge.anova(m0, m1)`` as lme4's ``anova()`` prints it (the
  refit message, ``Models:``, the table with 5 significant digits as R's); the table is a
  :class:`ModelComparisonFrame` (a DataFrame that prints so).
- ``*_html``: the same as HTML tables for Jupyter (escaped text).

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.sleepstudy()
>>> res = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", df, engine="statsmodels")
>>> m = res.margins(at={"Days": [0, 9]})
>>> print(str(m).splitlines()[0])
Predictive margins                                         Number of obs = 180
>>> "1._at: Days = 0" in str(m), m._repr_html_().startswith('<div class="hlmbridge">')
(True, True)
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.results.display import format_g
from hlmbridge.results.html import _esc, _wrap, frame_html

__all__ = ["ModelComparisonFrame", "comparison_html", "comparison_text", "emmeans_html", "emmeans_text",
           "margins_html", "margins_text", "pbmodcomp_html", "pbmodcomp_text", "short_repr"]

_RULE = "-" * 78
_WIDTH = 78
#: Stata's "Expression" of the linear prediction after ``mixed`` (predict()'s default).
_XB_STATA = "Linear prediction, fixed portion, predict()"


# ------------------------------------------------------------------------------------------ helpers
def short_repr(obj: Any, **fields: Any) -> str:
    """``Name(field=value, ...)``: a one-line repr naming sizes instead of dumping arrays.

    >>> short_repr(object(), rows=3, kind="margins")
    "object(rows=3, kind='margins')"
    """
    return f"{type(obj).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


def _level(x: Any) -> str:
    """A level or value as text (``4.5``, ``0``, ``early``; a whole float without ``.0``)."""
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.7g}"
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


def _two_sided(left: str, right: str) -> str:
    """``left`` and ``right`` on one line of Stata's 78 columns."""
    return left + " " * max(1, _WIDTH - len(left) - len(right)) + right


# ------------------------------------------------------------------------------------------ margins
def _margins_parts(m: Any) -> dict[str, Any]:
    """What the margins display needs: title, header lines, the table's row labels and values."""
    atmeans = any("atmeans" in n for n in m.notes)
    if m.kind == "dydx":
        title = "Conditional marginal effects" if atmeans else "Average marginal effects"
    else:
        title = "Adjusted predictions" if atmeans else "Predictive margins"
    expression = next((n.split(":", 1)[1].strip() for n in m.notes if n.startswith("Expression:")), "")
    if m.predict == "xb" and expression.endswith("(xb)") and "after mixed" in " ".join(m.notes):
        expression = _XB_STATA
    other = [n for n in m.notes if not n.startswith("Expression:") and not n.startswith("Delta-method")]
    t = m.table
    value = "dydx" if m.kind == "dydx" else "margin"
    at_lines = []
    if m.at:
        for _, row in t.drop_duplicates("_at").iterrows():
            pad = " " * len(f"{int(row['_at'])}._at: ")
            for j, n in enumerate(m.at):
                lead = f"{int(row['_at'])}._at: " if j == 0 else pad
                at_lines.append(f"{lead}{n} = {_level(row[n])}")
    # rows: (the header lines above the row, the row's label, the row)
    groups: list[str] = []
    if m.at:
        groups.append("_at")
    groups += list(m.over)
    rows: list[tuple[tuple[str, ...], str, pd.Series]] = []
    for _, r in t.iterrows():
        keys = ([str(int(r["_at"]))] if m.at else []) + [_level(r[o]) for o in m.over]
        if m.kind == "dydx":
            term = str(r["term"])
            var = next((v for v in m.variables if term.startswith(v + ": ")), None)
            if var is None:  # a covariate's effect: its name, then the groups
                if keys:
                    rows.append(((term, "#".join(groups)), "#".join(keys), r))
                else:
                    rows.append(((), term, r))
            else:  # a factor's discrete change, labelled by its level
                level = term[len(var) + 2:].split(" vs ")[0]
                rows.append((("#".join(groups + [var]),), "#".join(keys + [level]), r))
        elif m.variables:
            names = [s.strip() for s in str(r["term"]).split("#")]
            rows.append((("#".join(groups + names),), "#".join(keys + [_level(r[n]) for n in names]), r))
        elif groups:
            rows.append((("#".join(groups),), "#".join(keys), r))
        else:
            rows.append(((), "_cons", r))
    factor_dydx = m.kind == "dydx" and any(
        ": " in str(term) and str(term).split(": ")[0] in m.variables for term in t["term"])
    return {"title": title, "expression": expression, "at_lines": at_lines, "rows": rows, "value": value,
            "notes": other, "factor_dydx": factor_dydx}


def margins_text(m: Any) -> str:
    """A :class:`~hlmbridge.results.margins.MarginsResult` as Stata's ``margins`` prints it."""
    p = _margins_parts(m)
    nobs = "." if getattr(m, "nobs", None) is None else f"{m.nobs:,}"
    lines = [_two_sided(p["title"], f"Number of obs = {nobs}"), "Model VCE: OIM", ""]
    lines.append(f"Expression: {p['expression']}")
    if m.kind == "dydx":
        lines.append(f"dy/dx wrt:  {' '.join(m.variables)}")
    if m.over:
        lines.append(f"Over: {' '.join(m.over)}")
    if p["at_lines"]:
        lines.append("")
        lines += p["at_lines"]
    lines += ["", _RULE]
    ci = f"[{m.level * 100:g}% conf. interval]"
    head = "dy/dx" if m.kind == "dydx" else "Margin"
    lines.append(f"{'':12} |{'Delta-method':>24}")
    lines.append(f"{'':12} | {head:>10}   std. err.      z    P>|z|     {ci}")
    lines.append("-" * 13 + "+" + "-" * 64)
    current: tuple[str, ...] | None = None
    for i, (headers, label, r) in enumerate(p["rows"]):
        if headers and headers != current:
            if i:
                lines.append(f"{'':12} |")
            for j, h in enumerate(headers):
                lines.append(f"{h[:12]:<12} |" if j == 0 and len(headers) > 1 else f"{h[-12:]:>12} |")
        if headers:
            label = f"{label} "
        current = headers
        v, se, z = float(r[p["value"]]), float(r["std_error"]), float(r["statistic"])
        z_text = "." if math.isnan(z) else f"{z:8.2f}"
        p_text = "." if math.isnan(float(r["p_value"])) else f"{float(r['p_value']):.3f}"
        lines.append(f"{label[-12:]:>12} | {format_g(v)} {format_g(se)} {z_text:>8}   {p_text:>5}  "
                     f"{format_g(float(r['conf_low']), 11)}  {format_g(float(r['conf_high']))}")
    lines.append(_RULE)
    if p["factor_dydx"]:
        lines.append("Note: dy/dx for factor levels is the discrete change from the base level.")
    lines += [f"Note: {n}" for n in p["notes"]]
    return "\n".join(lines)


def margins_html(m: Any) -> str:
    """A :class:`~hlmbridge.results.margins.MarginsResult` as HTML: header, at legend, table, notes."""
    p = _margins_parts(m)
    nobs = "." if getattr(m, "nobs", None) is None else f"{m.nobs:,}"
    head = [("Number of obs", nobs), ("Model VCE", "OIM"), ("Expression", p["expression"])]
    if m.kind == "dydx":
        head.append(("dy/dx wrt", " ".join(m.variables)))
    if m.over:
        head.append(("Over", " ".join(m.over)))
    head += [("at" if i == 0 else "", line) for i, line in enumerate(p["at_lines"])]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in head)
    parts = [f"<table><caption>{_esc(p['title'])}</caption><tbody>{body}</tbody></table>"]
    frame = pd.DataFrame({
        "term": [" ".join(f"{h}:" for h in g) + (" " if g else "") + lab for g, lab, _ in p["rows"]],
        p["value"]: [float(r[p["value"]]) for _, _, r in p["rows"]],
        "std_error": [float(r["std_error"]) for _, _, r in p["rows"]],
        "statistic": [float(r["statistic"]) for _, _, r in p["rows"]],
        "p_value": [float(r["p_value"]) for _, _, r in p["rows"]],
        "conf_low": [float(r["conf_low"]) for _, _, r in p["rows"]],
        "conf_high": [float(r["conf_high"]) for _, _, r in p["rows"]]})
    level = f"{m.level * 100:g}%"
    parts.append(frame_html(frame, "Delta-method", columns={
        "margin": "Margin", "dydx": "dy/dx", "std_error": "Std. err.", "statistic": "z", "p_value": "P>|z|",
        "conf_low": f"[{level} conf.", "conf_high": "interval]"}))
    if p["notes"]:
        parts.append("<p>" + "<br>".join(_esc(n) for n in p["notes"]) + "</p>")
    return _wrap("".join(parts))


# ------------------------------------------------------------------------------------------ emmeans
def _r_num(x: Any) -> str:
    """A number as R shows it with 7 significant digits (``Inf``, ``NA``)."""
    if x is None:
        return "NA"
    x = float(x)
    if math.isnan(x):
        return "NA"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return f"{x:.7g}"


def _r_p(x: Any) -> str:
    """emmeans' p-value: 4 decimals, ``<.0001`` where that shows 0 (7e-5 shows as ``0.0001``)."""
    x = float(x)
    if math.isnan(x):
        return "NA"
    text = f"{x:.4f}"
    return "<.0001" if text == "0.0000" else text


def _aligned(frame: pd.DataFrame, left: tuple[str, ...] = (), lead: str = " ") -> list[str]:
    """A frame of strings laid out as R prints a data frame without row names (columns right
    aligned, the ``left`` ones left aligned), after ``lead``."""
    cols = list(frame.columns)
    widths = {c: max([len(str(c))] + [len(str(v)) for v in frame[c]]) for c in cols}

    def cell(c: str, v: str) -> str:
        return v.ljust(widths[c]) if c in left else v.rjust(widths[c])

    out = [lead + " ".join(cell(c, c) for c in cols)]
    for rec in frame.itertuples(index=False, name=None):
        out.append(lead + " ".join(cell(c, str(v)) for c, v in zip(cols, rec, strict=True)))
    return out


def _emm_frames(em: Any) -> tuple[pd.DataFrame, str]:
    """The means as the strings R's print shows, and the name of the estimate column."""
    t = em.emmeans
    asym = em.df_method == "asymptotic"
    est_name = "emmean"
    link = getattr(em, "type", "link") == "response" and any("back-transformed" in n for n in em.notes)
    if link:
        est_name = "rate" if any("log scale" in n for n in em.notes) else "prob"
    out = pd.DataFrame({n: [_level(v) for v in t[n]] for n in (*em.specs, *em.by)})
    out[est_name] = [_r_num(v) for v in t["emmean"]]
    out["SE"] = [_r_num(v) for v in t["std_error"]]
    out["df"] = [_r_num(v) for v in t["df"]]
    out["asymp.LCL" if asym else "lower.CL"] = [_r_num(v) for v in t["conf_low"]]
    out["asymp.UCL" if asym else "upper.CL"] = [_r_num(v) for v in t["conf_high"]]
    return out, est_name


def _con_frame(em: Any, c: pd.DataFrame) -> pd.DataFrame:
    ratio = any(" / " in str(n) for n in c["contrast"])
    out = pd.DataFrame({"contrast": [str(n) for n in c["contrast"]]})
    for n in em.by:
        out[n] = [_level(v) for v in c[n]]
    odds = any(str(n).startswith("odds ratios") for n in c.attrs.get("notes", ()))
    out[("odds.ratio" if odds else "ratio") if ratio else "estimate"] = [_r_num(v) for v in c["estimate"]]
    out["SE"] = [_r_num(v) for v in c["std_error"]]
    out["df"] = [_r_num(v) for v in c["df"]]
    out["z.ratio" if em.df_method == "asymptotic" else "t.ratio"] = [_r_num(v) for v in c["statistic"]]
    out["p.value"] = [_r_p(v) for v in c["p_value"]]
    return out


def _by_blocks(frame: pd.DataFrame, by: tuple[str, ...]) -> list[tuple[str | None, pd.DataFrame]]:
    if not by:
        return [(None, frame)]
    keys = frame[list(by)].apply(lambda r: ", ".join(f"{n} = {r[n]}" for n in by), axis=1)
    return [(k, frame[(keys == k).to_numpy()].drop(columns=list(by))) for k in dict.fromkeys(keys)]


def _adjust_notes(notes: Any) -> list[str]:
    """The contrasts' notes, the Tukey note in emmeans' words."""
    out = []
    for n in notes:
        m = re.fullmatch(r"P value adjustment: tukey method for (\d+) means", n)
        out.append(f"P value adjustment: tukey method for comparing a family of {m.group(1)} estimates" if m else n)
    return out


def emmeans_text(em: Any) -> str:
    """An :class:`~hlmbridge.results.emmeans.EMMResult` as R's emmeans prints it."""
    means, est_name = _emm_frames(em)
    df_line = f"Degrees-of-freedom method: {em.df_method}"
    lines = ["$emmeans"] if em.contrasts is not None else []
    for key, block in _by_blocks(means, em.by):
        if key is not None:
            lines.append(f"{key}:")
        lines += _aligned(block, left=em.specs)
        lines.append("")
    lines += list(em.notes)
    lines.append(df_line)
    lines.append(f"Confidence level used: {em.level:g}")
    if em.contrasts is not None:
        lines += ["", "$contrasts"]
        con = _con_frame(em, em.contrasts)
        for key, block in _by_blocks(con, em.by):
            if key is not None:
                lines.append(f"{key}:")
            lines += _aligned(block, left=("contrast",))
            lines.append("")
        lines.append(df_line)
        lines += _adjust_notes(em.contrasts.attrs.get("notes", ()))
    return "\n".join(lines)


def emmeans_html(em: Any) -> str:
    """An :class:`~hlmbridge.results.emmeans.EMMResult` as HTML: the means, then the contrasts."""
    est_name = _emm_frames(em)[1]
    t = em.emmeans
    asym = em.df_method == "asymptotic"
    cols = {"emmean": est_name, "std_error": "SE", "conf_low": "asymp.LCL" if asym else "lower.CL",
            "conf_high": "asymp.UCL" if asym else "upper.CL",
            "statistic": "t.ratio" if em.df_method != "asymptotic" else "z.ratio", "p_value": "p.value"}
    notes = list(em.notes) + [f"Degrees-of-freedom method: {em.df_method}", f"Confidence level used: {em.level:g}"]
    parts = [frame_html(t, "Estimated marginal means", "; ".join(notes), columns=cols)]
    if em.contrasts is not None:
        parts.append(frame_html(em.contrasts, "Contrasts", "; ".join(_adjust_notes(em.contrasts.attrs.get(
            "notes", ()))) or None, columns={**cols, "estimate": "estimate"}))
    return _wrap("".join(parts))


# ------------------------------------------------------------------------------------------ PBmodcomp
def _pb_rows(pb: Any) -> pd.DataFrame:
    tab = pb.table()
    out = pd.DataFrame({"": list(tab["test"])})
    out["stat"] = [_r_num(v) for v in tab["stat"]]
    out["df"] = ["" if math.isnan(v) else _r_num(v) for v in tab["df"]]
    out["ddf"] = ["" if math.isnan(v) else _r_num(v) for v in tab["ddf"]]
    out["p.value"] = _r_pvalue_column(tab["p_value"])
    stars = _stars(tab["p_value"])
    if stars is not None:
        out[" "] = stars
    return out


def _pb_head(pb: Any) -> list[str]:
    """pbkrtest's header: ``samples`` the replicates in the reference distribution, ``Used`` its
    positive ones (when some are not), ``extremes`` those above the observed statistic."""
    t = "NA" if math.isnan(pb.wall_time) else f"{pb.wall_time:.2f}"
    n, npos = len(pb.ref), int(np.sum(np.asarray(pb.ref, dtype=float) > 0))
    lines = [f"Bootstrap test; time: {t} sec; samples: {n}; extremes: {pb.n_extreme};"]
    if npos < n:
        lines.append(f"Requested samples: {n} Used samples: {npos} Extremes: {pb.n_extreme}")
    return lines + [f"large : {pb.large}", f"small : {pb.small}"]


def pbmodcomp_text(pb: Any) -> str:
    """A :class:`~hlmbridge.inference.pbmodcomp.PBModComp` as pbkrtest's ``summary()`` prints it."""
    rows = _pb_rows(pb)
    lines = _pb_head(pb) + _aligned(rows, left=("",), lead="") + (list(SIGNIF_LEGEND) if " " in rows else [])
    if pb.n_failed:
        lines.append(f"Note: {pb.n_failed} of {pb.nsim} replicate(s) failed or did not converge and are left out")
    return "\n".join(lines)


def pbmodcomp_html(pb: Any) -> str:
    """A :class:`~hlmbridge.inference.pbmodcomp.PBModComp` as HTML."""
    head = "".join(f"<tr><td>{_esc(line)}</td></tr>" for line in _pb_head(pb))
    note = (f"{pb.n_failed} of {pb.nsim} replicate(s) failed or did not converge and are left out"
            if pb.n_failed else None)
    return _wrap(f"<table><caption>Parametric bootstrap test</caption><tbody>{head}</tbody></table>"
                 + frame_html(pb.table(), None, note, columns={"p_value": "p.value"}))


# ------------------------------------------------------------------------------------------ anova(m0, m1)
def _r_column(values: Any, digits: int = 5, zap: int | None = None) -> list[str]:
    """A numeric column as R's ``print.anova`` shows it: first rounded as ``zapsmall(x, digits)``
    (``zap=None``) or ``round(x, zap)`` (the test statistics' column), then ``format(x, digits)``:
    the decimals that show every number to ``digits`` significant digits, the same for the whole
    column; NaN blank."""
    xs = [float(v) for v in values]
    finite = [x for x in xs if math.isfinite(x)]
    mx = max((abs(x) for x in finite), default=0.0)
    if zap is None:
        zap = max(0, math.floor(digits - math.log10(mx) + 0.5)) if mx > 0 else digits
    xs = [round(x, zap) if math.isfinite(x) else x for x in xs]
    decimals = 0
    for x in xs:
        if not math.isfinite(x) or x == 0:
            continue
        full = float(f"{x:.{digits - 1}e}")
        sig = next(k for k in range(1, digits + 1) if float(f"{x:.{k - 1}e}") == full)
        decimals = max(decimals, sig - 1 - math.floor(math.log10(abs(full))))
    return ["" if math.isnan(x) else f"{x:.{min(decimals, 15)}f}" for x in xs]


def _sig_digits(x: float, digits: int) -> int:
    """The significant digits (at most ``digits``) that show ``x`` as well as ``digits`` do."""
    full = float(f"{x:.{digits - 1}e}")
    return next(k for k in range(1, digits + 1) if float(f"{x:.{k - 1}e}") == full)


_EPS = 2.220446049250313e-16  # R's .Machine$double.eps


def _r_pvalue_column(values: Any, digits: int = 4) -> list[str]:
    """R's ``format.pval(p, digits)`` as ``printCoefmat`` calls it: the p-values of 1e-3 and
    above in fixed notation with common decimals, smaller ones in e-notation, below machine
    epsilon ``< 2.2e-16`` (``<2e-16`` beside short numbers, as R); NaN blank."""
    xs = [float(v) for v in values]
    shown = [x for x in xs if not math.isnan(x) and x >= _EPS]
    fixed = [x for x in shown if x == 0 or math.floor(math.log10(x)) >= -3]
    sci = [x for x in shown if x not in fixed]
    decimals = max([max(0, _sig_digits(x, digits) - 1 - math.floor(math.log10(x))) for x in fixed if x > 0]
                   or [0])
    mant = max([_sig_digits(x, digits) for x in sci] or [1])
    text = {x: f"{x:.{decimals}f}" for x in fixed}
    text.update({x: f"{x:.{mant - 1}e}" for x in sci})
    tiny = max(1, digits - 2)
    sep = "" if tiny == 1 else " "
    if shown:
        nc = max(len(t) for t in text.values())
        if tiny > 1 and tiny + 6 > nc:
            tiny = max(1, nc - 7)
        sep = "" if tiny == 1 and nc <= 6 else " "
    below = "<" + sep + f"{_EPS:.{tiny - 1}e}"
    return ["" if math.isnan(x) else below if x < _EPS else text[x] for x in xs]


def _stars(values: Any) -> list[str] | None:
    """R's significance stars (``printCoefmat``), or None when no p-value is below 0.1."""
    ps = [float(v) for v in values]
    if not any(p < 0.1 for p in ps if not math.isnan(p)):
        return None
    cuts = ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (math.inf, ""))
    return [("" if math.isnan(p) else next(sym for cut, sym in cuts if p <= cut)).ljust(3) for p in ps]


#: R's legend under a table with significance stars.
SIGNIF_LEGEND = ("---", "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 "
                 "\u2018.\u2019 0.1 \u2018 \u2019 1")


class ModelComparisonFrame(pd.DataFrame):
    """The table of ``hlmbridge.anova(m0, m1, ...)``: a DataFrame that prints as lme4's
    ``anova()`` (``attrs["notes"]``, ``attrs["heading"]``, then the table) and shows as HTML in
    Jupyter; derived frames (selections, ``round``) are plain DataFrames.

    >>> t = ModelComparisonFrame({"model": ["a"], "npar": [3]})
    >>> type(t.round(1)).__name__
    'DataFrame'
    """

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def __str__(self) -> str:
        return comparison_text(self)

    def _repr_html_(self) -> str:  # type: ignore[override]
        return comparison_html(self)


_LR_NAMES = {"npar": "npar", "aic": "AIC", "bic": "BIC", "loglik": "logLik", "deviance": "deviance",
             "chisq": "Chisq", "df": "Df", "p_value": "Pr(>Chisq)"}


def comparison_text(table: pd.DataFrame) -> str:
    """``hlmbridge.anova(m0, m1, ...)``'s table as lme4's ``anova()`` prints it."""
    lines = list(table.attrs.get("notes", ()))
    if table.attrs.get("heading"):
        lines += str(table.attrs["heading"]).splitlines()
    out = pd.DataFrame({"": [str(m) for m in table["model"]]})
    for c, name in _LR_NAMES.items():
        if c == "p_value":
            out[name] = _r_pvalue_column(table[c])
        elif c == "npar":
            out[name] = [str(int(v)) for v in table[c]]
        elif c == "chisq":  # print.anova's test column: round(x, digits - 1) first
            out[name] = _r_column(table[c], 5, zap=4)
        elif c == "df":  # not zapped
            out[name] = _r_column(table[c], 5, zap=15)
        else:
            out[name] = _r_column(table[c], 5)
    stars = _stars(table["p_value"])
    if stars is not None:
        out[" "] = stars
    return "\n".join(lines + _aligned(out, left=("",), lead="") + (list(SIGNIF_LEGEND) if stars else []))


def comparison_html(table: pd.DataFrame) -> str:
    """``hlmbridge.anova(m0, m1, ...)``'s table as HTML (heading, models, table, lme4's note)."""
    notes = list(table.attrs.get("notes", ()))
    heading = str(table.attrs.get("heading") or "Model comparison")
    caption, _, models = heading.partition("\n")
    listing = "".join(f"<tr><td>{_esc(line)}</td></tr>" for line in models.splitlines())
    parts = [f"<table><caption>{_esc(caption)}</caption><tbody>{listing}</tbody></table>" if listing else ""]
    parts.append(frame_html(pd.DataFrame(table), "Likelihood-ratio tests", "; ".join(notes) or None,
                            columns={**_LR_NAMES, "model": "model"}))
    return _wrap("".join(parts))
