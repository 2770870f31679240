"""Stata's ``marginsplot``: the margins of :func:`hlmbridge.results.margins.margins` with their CIs.

With ``at()`` values of one covariate the margins are drawn as lines over those values (one
line per level of the margins' factors, per ``over()`` group, per ``dydx()`` term), with CI
bars at each point, as ``marginsplot`` draws them; otherwise as points with CI bars, one per
margin. Returns a :class:`matplotlib.figure.Figure` built without pyplot (as
:mod:`hlmbridge.results.plots`); matplotlib is imported only here (``pip install
hlmbridge[plot]``).

Examples
--------
>>> import hlmbridge
>>> from hlmbridge.results.margins import margins
>>> res = hlmbridge.fit("mixed mathach i.sector##c.ses || id:", hlmbridge.datasets.hsb(), engine="statsmodels")
>>> fig = marginsplot(margins(res, "sector", at={"ses": [-1, 0, 1]}))
>>> [len(ln.get_xdata()) for ln in fig.axes[0].lines if ln.get_gid() == "margins"]
[3, 3]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hlmbridge.errors import UsageError

__all__ = ["marginsplot"]


def _label(v: Any) -> str:
    from hlmbridge.results.emmeans import _level_label

    return _level_label(v)


def marginsplot(m: Any, title: str | None = None, width: float = 6.0, height: float = 4.5) -> Any:
    """The figure of a :class:`~hlmbridge.results.margins.MarginsResult` (see the module docstring)."""
    from hlmbridge.results.margins import MarginsResult

    if not isinstance(m, MarginsResult):
        raise UsageError(f"marginsplot takes the result of margins(), got {type(m).__name__}")
    from hlmbridge.results.plots import _figure  # matplotlib, imported here only (an error naming the extra)

    t = m.table
    col = "dydx" if m.kind == "dydx" else "margin"
    fig, axes = _figure(1, width, height)
    ax = axes[0]
    numeric_at = [a for a in m.at if t[a].nunique() > 1 and np.issubdtype(np.asarray(t[a]).dtype, np.number)]
    series_cols = [c for c in t.columns if c not in (col, "std_error", "statistic", "p_value", "conf_low",
                                                       "conf_high", "_at") and c not in numeric_at[:1]]
    if numeric_at:
        x_col = numeric_at[0]
        keys = t[series_cols].astype(object).apply(lambda r: ", ".join(
            f"{c}={_label(v)}" for c, v in zip(series_cols, r) if c != "term" or m.kind == "dydx"), axis=1) \
            if series_cols else None
        groups = list(dict.fromkeys(keys)) if keys is not None else [""]
        for g in groups:
            sub = t if keys is None else t[(keys == g).to_numpy()]
            x = sub[x_col].to_numpy(dtype=float)
            y = sub[col].to_numpy(dtype=float)
            err = [y - sub["conf_low"].to_numpy(), sub["conf_high"].to_numpy() - y]
            bars = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=g or None)
            bars.lines[0].set_gid("margins")
        ax.set_xlabel(x_col)
        if len(groups) > 1:
            ax.legend(frameon=False)
    else:
        labels = [", ".join(f"{c}={_label(v)}" for c, v in zip(series_cols, r) if c != "term") or str(r[0])
                  for r in t[series_cols].astype(object).itertuples(index=False, name=None)] if series_cols else \
            ["overall"] * len(t)
        if m.kind == "dydx" and "term" in t.columns:
            labels = [f"{a} ({b})" if b else a for a, b in zip(t["term"], [
                ", ".join(f"{c}={_label(v)}" for c, v in zip(series_cols, r) if c != "term")
                for r in t[series_cols].astype(object).itertuples(index=False, name=None)])]
        x = np.arange(len(t))
        y = t[col].to_numpy(dtype=float)
        err = [y - t["conf_low"].to_numpy(), t["conf_high"].to_numpy() - y]
        bars = ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
        bars.lines[0].set_gid("margins")
        ax.set_xticks(x, labels, rotation=30 if len(t) > 4 else 0, ha="right" if len(t) > 4 else "center")
    if m.kind == "dydx":
        ax.axhline(0.0, color="0.6", linewidth=0.8)
    scale = {"mu": "mean (random effects integrated out)", "mu_fixedonly": "mean (fixed portion only)"}.get(m.predict)
    if scale is None:
        ax.set_ylabel("Effects on linear prediction" if m.kind == "dydx" else "Linear prediction (fixed portion)")
    else:
        ax.set_ylabel(f"Effects on {scale}" if m.kind == "dydx" else scale[0].upper() + scale[1:])
    level = int(round(100 * m.level))
    ax.set_title(title or (f"Average marginal effects with {level}% CIs" if m.kind == "dydx"
                           else f"Predictive margins with {level}% CIs"))
    return fig
