"""The pictures a researcher looks at after the fit (matplotlib, an optional extra).

``caterpillar`` (the random effects sorted, with their intervals), ``residual_plot``
(residuals against fitted values) and ``qq_plot`` (normal QQ plots of the random effects
and the residuals) each return a :class:`matplotlib.figure.Figure`, built without pyplot
(no global state, no GUI backend: PNGs render through Agg); ``save_plots`` writes all three
as PNG. matplotlib is imported only when a plot is asked for (``pip install
hlmbridge[plot]``); ``import hlmbridge`` never imports it.

Examples
--------
>>> import hlmbridge
>>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", hlmbridge.datasets.sleepstudy(),
...                     engine="statsmodels")
>>> fig = caterpillar(res)
>>> len(fig.axes), sum(len(ln.get_xdata()) for ax in fig.axes for ln in ax.lines if ln.get_gid() == "modes")
(2, 36)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hlmbridge.errors import UsageError

__all__ = ["caterpillar", "qq_plot", "residual_plot", "save_plots"]

_MAX_LABELS = 40  # groups whose labels are written on the caterpillar's axis


def _figure(n_panels: int, width: float = 4.0, height: float = 4.0) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'hlmbridge[plot]'") from None
    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, axes[:n_panels]


def caterpillar(res: Any, level: float = 0.95) -> Any:
    """One panel per grouping factor and random term: each group's conditional mode with its
    ``level`` interval (conditional SD), sorted by the mode."""
    re = res.ranef(level=level)
    panels = list(dict.fromkeys(zip(re["group"], re["term"])))
    tallest = max(int(((re["group"] == g) & (re["term"] == t)).sum()) for g, t in panels)
    fig, axes = _figure(len(panels), 4.0, max(3.0, min(12.0, 0.15 * tallest + 1.5)))
    for ax, (g, t) in zip(axes, panels):
        sub = re[(re["group"] == g) & (re["term"] == t)].sort_values("estimate")
        y = np.arange(len(sub))
        est = sub["estimate"].to_numpy()
        bars = ax.errorbar(est, y, xerr=[est - sub["conf_low"].to_numpy(), sub["conf_high"].to_numpy() - est],
                           fmt="o", markersize=3, elinewidth=0.8, color="C0", ecolor="0.5")
        bars.lines[0].set_gid("modes")
        ax.axvline(0.0, color="0.3", linewidth=0.8, linestyle="--")
        ax.set_title(f"{g}: {t}")
        ax.set_xlabel(f"conditional mode ({level:.0%} interval)")
        if len(sub) <= _MAX_LABELS:
            ax.set_yticks(y, sub["level"].astype(str).tolist(), fontsize=7)
        else:
            ax.set_ylabel(f"{len(sub)} groups, sorted")
            ax.set_yticks([])
    return fig


def residual_plot(res: Any, kind: str = "pearson") -> Any:
    """Residuals (``kind``: ``"pearson"`` or ``"response"``) against fitted values."""
    fig, (ax,) = _figure(1, 5.0, 4.0)
    fit = res.fitted().to_numpy()
    r = res.residuals(kind=kind).to_numpy()
    ax.scatter(fit, r, s=6, alpha=0.5, color="C0", edgecolors="none", gid="residuals")
    ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle="--")
    ax.set_xlabel("fitted value")
    ax.set_ylabel(f"{kind} residual")
    ax.set_title("Residuals vs fitted")
    return fig


def _qq(ax: Any, values: np.ndarray, title: str) -> None:
    v = np.sort(values[np.isfinite(values)])
    n = len(v)
    theo = stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    ax.scatter(theo, v, s=8, color="C0", edgecolors="none", gid="quantiles")
    q1, q3 = np.percentile(v, [25, 75])
    t1, t3 = stats.norm.ppf([0.25, 0.75])
    slope = (q3 - q1) / (t3 - t1) if t3 > t1 else 1.0
    ax.axline((t1, q1), slope=slope if slope > 0 else 1.0, color="0.3", linewidth=0.8, linestyle="--")
    ax.set_title(title)
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("sample quantile")


def qq_plot(res: Any) -> Any:
    """Normal QQ plots: one panel per grouping factor and random term, then the (Pearson)
    residuals."""
    re = res.ranef()
    panels = list(dict.fromkeys(zip(re["group"], re["term"])))
    fig, axes = _figure(len(panels) + 1, 4.0, 4.0)
    for ax, (g, t) in zip(axes, panels):
        _qq(ax, re.loc[(re["group"] == g) & (re["term"] == t), "estimate"].to_numpy(), f"{g}: {t}")
    _qq(axes[-1], res.residuals(kind="pearson").to_numpy(), "Pearson residuals")
    return fig


def save_plots(res: Any, directory: str | Path, prefix: str = "") -> list[Path]:
    """Write the caterpillar, residual and QQ plots as PNG files into ``directory``
    (created if needed); the paths written."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the plot directory {directory}: {exc.strerror}") from None
    paths = []
    for name, make in (("caterpillar", caterpillar), ("residuals", residual_plot), ("qq", qq_plot)):
        path = out / f"{prefix}{name}.png"
        make(res).savefig(path, dpi=100)
        paths.append(path)
    return paths
