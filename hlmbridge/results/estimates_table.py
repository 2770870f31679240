"""Several fits side by side: Stata's ``estimates table``, R's ``modelsummary``.

``estimates_table([m1, m2], names=("m1", "m2"))`` gives an :class:`EstimatesTable`: one column
per fit, one row per fixed effect (in order of first appearance over the fits; lme4's
``(Intercept)`` first, or with Stata's labels ``_cons`` last, as each shows it), then the
variance components (Stata's names with the grouping factor, ``var(_cons)|id``, and
``var(Residual)``), each with its standard error in parentheses below it (``se=False``: no SE
rows), then the statistics ``stats`` (``"N"`` observations, ``"ll"`` log likelihood, ``"aic"``,
``"bic"``, ``"df"`` parameters, ``"chi2"`` the Wald chi2, ``"method"`` ML/REML). A cell is empty
where a fit has no such parameter.

The numbers are in ``estimates``, ``std_errors`` (frames: parameter x fit) and ``stats``
(statistic x fit), exactly the fits' own; the exports round them to ``digits`` decimals:
:meth:`EstimatesTable.to_markdown`, :meth:`EstimatesTable.to_latex` (a ``tabular``, text
escaped), :meth:`EstimatesTable.to_html` (also the notebook display), and ``str()`` is the
Markdown. ``labels="stata"`` names the fixed effects as Stata does (``_cons``) instead of
lme4's ``(Intercept)``.

Examples
--------
>>> import hlmbridge
>>> hsb = hlmbridge.datasets.hsb()
>>> m1 = hlmbridge.fit("mixed mathach ses || id:", hsb, engine="statsmodels")
>>> m2 = hlmbridge.fit("mixed mathach ses sector || id:", hsb, engine="statsmodels")
>>> tab = hlmbridge.estimates_table([m1, m2], names=("m1", "m2"), labels="stata")
>>> tab.estimates.index.tolist()
['ses', 'sector', '_cons', 'var(_cons)|id', 'var(Residual)']
>>> print(tab.to_markdown().splitlines()[2])
| ses | 2.3915 | 2.3771 |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hlmbridge.errors import UsageError

__all__ = ["ESTIMATES_STATS", "EstimatesTable", "estimates_table"]

#: The statistics an estimates table can show, and what each is.
ESTIMATES_STATS: dict[str, str] = {"N": "observations", "ll": "log likelihood", "aic": "AIC", "bic": "BIC",
                                   "df": "parameters", "chi2": "Wald chi2", "method": "ML or REML"}


@dataclass(frozen=True, eq=False)
class EstimatesTable:
    """Fits side by side (see the module docstring): the numbers in ``estimates``,
    ``std_errors`` and ``stats``; ``digits`` decimals in the exports."""

    estimates: pd.DataFrame
    std_errors: pd.DataFrame
    stats: pd.DataFrame
    n_fixed: int
    show_se: bool = True
    digits: int = 4

    def _rows(self) -> list[tuple[str, str, list[str]]]:
        """(section, label, cells) for every displayed row; section is fixed, random or stats."""
        out = []
        for k, term in enumerate(self.estimates.index):
            section = "fixed" if k < self.n_fixed else "random"
            out.append((section, str(term), [self._num(v) for v in self.estimates.loc[term]]))
            if self.show_se:
                out.append((section, "", [f"({self._num(v)})" if _present(v) else ""
                                          for v in self.std_errors.loc[term]]))
        for stat in self.stats.index:
            out.append(("stats", str(stat), [self._stat(stat, v) for v in self.stats.loc[stat]]))
        return out

    def _num(self, v: Any) -> str:
        return f"{float(v):.{self.digits}f}" if _present(v) else ""

    def _stat(self, stat: str, v: Any) -> str:
        if not _present(v):
            return ""
        if stat in ("N", "df"):
            return str(int(v))
        if stat == "method":
            return str(v)
        return f"{float(v):.{self.digits}f}"

    def to_markdown(self) -> str:
        """A Markdown (pipe) table."""
        names = [str(c) for c in self.estimates.columns]
        lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for _, label, cells in self._rows():
            lines.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_latex(self) -> str:
        """A LaTeX ``tabular`` (rules between the fixed part, the random part and the statistics)."""
        names = [_tex(str(c)) for c in self.estimates.columns]
        lines = [r"\begin{tabular}{l" + "r" * len(names) + "}", r"\hline", " & " + " & ".join(names) + r" \\",
                 r"\hline"]
        last = "fixed"
        for section, label, cells in self._rows():
            if section != last:
                lines.append(r"\hline")
                last = section
            lines.append(_tex(label) + " & " + " & ".join(_tex(c) for c in cells) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines)

    def to_html(self) -> str:
        """An HTML table (one ``tbody`` per part)."""
        import html

        names = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.estimates.columns)
        out = ["<table class=\"hlmbridge-estimates\"><thead><tr><th></th>" + names + "</tr></thead><tbody>"]
        last = "fixed"
        for section, label, cells in self._rows():
            if section != last:
                out.append("</tbody><tbody>")
                last = section
            out.append(f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                       + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    def _repr_html_(self) -> str:
        from hlmbridge.results.html import _wrap

        return _wrap(self.to_html())

    def __str__(self) -> str:
        return self.to_markdown()


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _md(text: str) -> str:
    return text.replace("|", r"\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
        "<": r"\textless{}", ">": r"\textgreater{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def estimates_table(fits: Sequence[Any], names: Sequence[str] | None = None, *, se: bool = True,
                    stats: Sequence[str] = ("N", "ll", "aic", "bic"), labels: str = "lme4",
                    digits: int = 4) -> EstimatesTable:
    """Fits side by side (see the module docstring).

    Raises
    ------
    UsageError
        No fits, something that is not a FitResult, names of the wrong number or repeated, an
        unknown statistic or ``labels``, a GLMM (its random part is not on the variance scale).
    """
    from hlmbridge.results.fit_result import FitResult

    fits = list(fits) if not isinstance(fits, FitResult) else [fits]
    if not fits:
        raise UsageError("estimates_table needs at least one fit")
    for k, f in enumerate(fits):
        if not isinstance(f, FitResult):
            raise UsageError(f"estimates_table: item {k} is a {type(f).__name__}, not a FitResult")
        if f.spec.is_glmm:
            raise UsageError(f"estimates_table shows linear mixed models only; item {k} is a GLMM")
    if names is None:
        names = [f"({k + 1})" for k in range(len(fits))]
    names = [str(n) for n in names]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise UsageError(f"estimates_table: names must be {len(fits)} distinct names, got {names!r}")
    if labels not in ("lme4", "stata"):
        raise UsageError(f"estimates_table: labels must be 'lme4' or 'stata', got {labels!r}")
    bad = [s for s in stats if s not in ESTIMATES_STATS]
    if bad:
        raise UsageError(f"estimates_table: unknown statistic(s) {', '.join(map(repr, bad))}; known: "
                         f"{', '.join(ESTIMATES_STATS)}")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 12:
        raise UsageError(f"estimates_table: digits must be an integer from 0 to 12, got {digits!r}")
    col = 0 if labels == "lme4" else 1
    est: dict[str, dict[str, float]] = {}
    ses: dict[str, dict[str, float]] = {}
    fixed_keys: list[str] = []
    random_keys: list[str] = []
    for name, f in zip(names, fits, strict=True):
        for r in f.fixed_rows:
            key = str(r[col])
            if key not in fixed_keys:
                fixed_keys.append(key)
            est.setdefault(key, {})[name] = float(r[2])
            ses.setdefault(key, {})[name] = float(r[3])
        for r in f.random_rows:  # group, kind, term1, term2, stata_term, estimate, std_error, ...
            key = str(r[4]) if r[0] == "Residual" else f"{r[4]}|{r[0]}"
            if key not in random_keys:
                random_keys.append(key)
            est.setdefault(key, {})[name] = float(r[5])
            ses.setdefault(key, {})[name] = float(r[6])
    if labels == "stata" and "_cons" in fixed_keys:  # Stata's estimates table: the constant last
        fixed_keys = [k for k in fixed_keys if k != "_cons"] + ["_cons"]
    if labels == "lme4" and "(Intercept)" in fixed_keys:  # lme4's: the intercept first
        fixed_keys = ["(Intercept)"] + [k for k in fixed_keys if k != "(Intercept)"]
    random_keys = [k for k in random_keys if k != "var(Residual)"] + \
        (["var(Residual)"] if "var(Residual)" in random_keys else [])
    order = fixed_keys + random_keys
    estimates = pd.DataFrame([[est[k].get(n, float("nan")) for n in names] for k in order], index=order,
                             columns=names)
    std_errors = pd.DataFrame([[ses[k].get(n, float("nan")) for n in names] for k in order], index=order,
                              columns=names)
    values = {"N": lambda f: f.nobs, "ll": lambda f: f.loglik, "aic": lambda f: f.aic, "bic": lambda f: f.bic,
              "df": lambda f: f.df, "chi2": lambda f: f.wald_chi2,
              "method": lambda f: "REML" if f.method == "reml" else "ML"}
    stat_frame = pd.DataFrame([[values[s](f) for f in fits] for s in stats], index=list(stats), columns=names,
                              dtype=object)
    return EstimatesTable(estimates, std_errors, stat_frame, len(fixed_keys), bool(se), digits)
