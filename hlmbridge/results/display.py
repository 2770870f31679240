"""Stata-style text for a FitResult (display only; the numbers live in the result).

Examples
--------
>>> import hlmbridge, hlmbridge.datasets
>>> res = hlmbridge.fit("mixed mathach || id:", hlmbridge.datasets.hsb("combined"), engine="statsmodels")
>>> print(summary(res).splitlines()[0])
Mixed-effects ML regression                     Number of obs     =      7,185
"""

from __future__ import annotations

import math
from typing import Any

from hlmbridge.results.fit_result import FitResult

__all__ = ["format_g", "summary"]

_RULE = "-" * 78


def format_g(x: float, width: int = 10) -> str:
    """A number the way Stata's %9.0g-style columns show it (7 significant digits).

    Missing is ``.``; an infinite number prints as ``inf``/``-inf`` and a very large one
    in e-notation (never a 300-digit integer).

    Examples
    --------
    >>> format_g(1.2345678), format_g(float("inf"), 5), format_g(float("nan"), 3), format_g(-1e300)
    ('  1.234568', '  inf', '  .', '-1.000e+300')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ".".rjust(width)
    if math.isinf(x):
        return ("inf" if x > 0 else "-inf").rjust(width)
    if x == 0:
        return "0".rjust(width)
    if abs(x) >= 1e9 or abs(x) < 1e-4:
        return f"{x:.3e}".rjust(width)
    digits = 7 - max(0, int(math.floor(math.log10(abs(x)))) + 1)
    text = f"{x:.{max(digits, 0)}f}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
        if text.startswith("0."):
            text = text[1:]
        elif text.startswith("-0."):
            text = "-" + text[2:]
    return text.rjust(width)


def _p(x: float) -> str:
    return "." if math.isnan(x) else f"{x:.4f}"


def _random_line(r: Any) -> str:
    """One row of the random-effects table."""
    return (f"{r.stata_term:>28} | {format_g(r.estimate)} {format_g(r.std_error)}    "
            f"{format_g(r.conf_low)}  {format_g(r.conf_high)}")


def summary(res: FitResult) -> str:
    """The fit laid out like Stata's ``mixed`` output (header, fixed table, random table, LR test)."""
    method = "REML" if res.method == "reml" else "ML"
    lines = []
    glmm = res.spec.is_glmm
    model_name = {"logit": "logistic", "probit": "probit", "cloglog": "cloglog", "log": "Poisson"}.get(
        res.spec.link or "", "linear") if glmm else "linear"
    if res.spec.family == "negative_binomial":
        model_name = "nbinomial"
    left = f"Mixed-effects {model_name} regression" if glmm else f"Mixed-effects {method} regression"
    lines.append(f"{left:<48}Number of obs     = {res.nobs:>10,}")
    if res.spec.family == "negative_binomial":
        lines.append("Overdispersion:                  mean")
    if isinstance(res.spec.trials, str):  # Stata's header for binomial(varname) / binomial(#)
        lines.append(f"Binomial variable: {res.spec.trials}")
    elif res.spec.trials is not None:
        lines.append(f"Binomial trials = {res.spec.trials:3.0f}")
    if len(res.groups) == 1:
        g = res.groups[0]
        lines.append(f"{'Group variable: ' + g.group:<48}Number of groups  = {g.n_groups:>10,}")
        lines.append(f"{'':48}Obs per group:")
        lines.append(f"{'':62}min = {g.min:>10,}")
        lines.append(f"{'':62}avg = {g.mean:>10.1f}")
        lines.append(f"{'':62}max = {g.max:>10,}")
    else:
        lines.append("-" * 61)
        lines.append(f"{'':16}|     No. of       Observations per group")
        lines.append(f" Group variable |     groups    Minimum    Average    Maximum")
        lines.append("-" * 16 + "+" + "-" * 44)
        for g in res.groups:
            lines.append(f"{g.group:>15} | {g.n_groups:>10,} {g.min:>10,} {g.mean:>10.1f} {g.max:>10,}")
        lines.append("-" * 61)
    if res.df_method:  # Stata's header for dfmethod(): the method and the range of the df
        dfs = [d for d in res.fixed_df if not math.isnan(d)] or [float("nan")]
        name = {"residual": "Residual", "kenward-roger": "Kenward-Roger"}.get(res.df_method, res.df_method.capitalize())
        lines.append(f"{'DF method: ' + name:<48}DF:           min = {min(dfs):>10.2f}")
        lines.append(f"{'':62}avg = {sum(dfs) / len(dfs):>10.2f}")
        lines.append(f"{'':62}max = {max(dfs):>10.2f}")
    if glmm:
        lines.append("")
        lines.append(f"{'Integration method: ' + str(res.spec.intmethod):<48}Integration pts.  = "
                     f"{res.spec.intpoints:>10}")
        lines.append("")
    chi = "." if math.isnan(res.wald_chi2) else f"{res.wald_chi2:.2f}"
    lines.append(f"{'':48}{'Wald chi2(' + str(res.wald_df) + ')':<18}= {chi:>10}")
    ll_digits = 5 if glmm else 3
    lines.append(f"{'Log likelihood = ' + f'{res.loglik:.{ll_digits}f}':<48}Prob > chi2       = {_p(res.wald_p):>10}")
    lines.append("")
    lines.append(_RULE)
    small = bool(res.df_method)  # t tests on a df method: a df column, t and P>|t|
    if small:
        lines.append(f"{res.spec.response[:12]:>12} | Coefficient  Std. err.        df      t    P>|t|     "
                     "[95% conf. interval]")
    else:
        head = {"or": "Odds ratio", "irr": "       IRR"}.get(res.spec.eform or "", "Coefficient")
        lines.append(f"{res.spec.response[:12]:>12} | {head}  Std. err.      z    P>|z|     [95% conf. interval]")
    lines.append("-" * 13 + "+" + "-" * 64)
    header = None
    for r in (res.eform() if res.spec.eform else res.fixed).itertuples(index=False):
        label = r.stata_term
        if "#" in label and label.split("#")[0].split(".")[0].isdigit():
            # Stata's factor-variable layout: a header naming the interaction, then the level.
            level, _, rest = label.partition(".")
            if rest != header:
                lines.append(f"{'':12} |")
                lines.append(f"{rest[-12:]:>12} |")
                header = rest
            label = f"{level}  "
        else:
            if header is not None:
                lines.append(f"{'':12} |")
            header = None
        lines.append(
            f"{label[-12:]:>12} | {format_g(r.estimate)} {format_g(r.std_error)}"
            f"{f' {r.df:9.2f}' if small else ''} {r.statistic:8.2f}   "
            f"{r.p_value:.3f}  {format_g(r.conf_low, 11)}  {format_g(r.conf_high)}"
        )
    if res.ancillary_rows:  # menbreg's /lnalpha (and alpha), below the coefficients as Stata prints them
        lines.append("-" * 13 + "+" + "-" * 64)
        for r in res.ancillary.itertuples(index=False):
            lines.append(f"{r.stata_term[-12:]:>12} | {format_g(r.estimate)} {format_g(r.std_error)}"
                         f"{'':19}{format_g(r.conf_low, 11)}  {format_g(r.conf_high)}")
    lines.append(_RULE)
    lines.append("")
    lines.append(_RULE)
    lines.append("  Random-effects parameters  |   Estimate   Std. err.     [95% conf. interval]")
    lines.append("-" * 29 + "+" + "-" * 48)
    rnd = res.random
    for level in res.groups:
        title = {"unstructured": "Unstructured", "independent": "Independent", "identity": "Identity",
                 "exchangeable": "Exchangeable", "blocks": "Block diagonal"}.get(level.cov or "identity",
                                                                                  level.cov.title())
        lines.append(f"{level.group + ': ' + title:<29}|")
        lines += [_random_line(r) for r in rnd[rnd["group"] == level.group].itertuples(index=False)]
        lines.append("-" * 29 + "+" + "-" * 48)
    if res.spec.residuals is not None:  # issue 25: Stata titles the structure's rows
        lines += [f"{title:<29}|" for title in res.spec.residuals.stata_title()]
    lines += [_random_line(r) for r in rnd[rnd["group"] == "Residual"].itertuples(index=False)]
    lines.append(_RULE)
    if res.lr_kind == "chibar2":
        lines.append(f"LR test vs. {model_name} model: chibar2(01) = {res.lr_chi2:.2f}        "
                     f"Prob >= chibar2 = {res.lr_p:.4f}")
    else:
        lines.append(f"LR test vs. {model_name} model: chi2({res.lr_df}) = {res.lr_chi2:.2f}                "
                     f"Prob > chi2 = {res.lr_p:.4f}")
        lines.append("")
        lines.append("Note: LR test is conservative and provided only for reference.")
    if res.singular:
        lines.append("Note: boundary (singular) fit: a variance is at zero or a correlation at +-1; the "
                     "variance-component SEs and CIs are not reliable.")
    if res.spec.eform:
        what = {"or": "odds ratios", "irr": "incidence-rate ratios"}[res.spec.eform]
        lines.append(f"Note: Estimates are transformed only in the first equation to {what}.")
    if glmm:
        lines.append(f"[integration: {res.integration}]")
    lines.append(f"[{res.engine}: {res.optimizer}; converged={res.converged}]")
    for w in res.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)
