"""One ``confint`` for every interval hlmbridge computes, as lme4's ``confint.merMod``.

``confint(result, method=..., level=0.95)`` returns one row per parameter with lme4's names
(``confint(oldNames = FALSE)``) -- the random part on the sd/correlation scale
(``sd_(Intercept)|id``, ``cor_ses.(Intercept)|id``) in the order of ``result.random``, then
``sigma``, then the fixed effects -- with columns
:data:`CONFINT_COLUMNS`; the ``method`` column names how each interval was computed:

- ``"Wald"``: ``estimate -/+ qnorm((1 + level) / 2) * SE`` for the fixed effects (lme4's
  ``method = "Wald"``, normal quantiles whatever the fit's df method); lme4 gives no Wald
  interval for the variance parameters, and neither does this (NaN, method ``"Wald"``).
  Stata's intervals for the variance components are in ``result.random``.
- ``"profile"``: profile-likelihood intervals (:func:`hlmbridge.inference.profile.profile_ci`);
  as lme4, on the ML deviance, so the ``estimate`` column holds the ML estimates even for a
  REML fit.
- ``"boot"``: parametric bootstrap intervals (:mod:`hlmbridge.inference.bootstrap`) of type
  ``boot_type`` (``"percentile"``, ``"basic"`` or ``"normal"``; lme4's ``boot.type``), named
  ``"boot-percentile"`` etc. in ``method``. It needs the fit's data (``data=``) and refits
  ``n`` times, or takes a bootstrap already run (``boot=``, a ``BootstrapResult`` of this fit).

Examples
--------
>>> import hlmbridge
>>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", hlmbridge.datasets.sleepstudy(),
...                     engine="statsmodels")
>>> ci = res.confint("Wald", level=0.9)
>>> ci["term"].tolist()
['sd_Days|Subject', 'sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject', 'sigma', '(Intercept)', 'Days']
>>> ci["method"].unique().tolist(), bool(ci["conf_low"].iloc[:4].isna().all())
(['Wald'], True)
>>> res.confint("profile", parm="beta_")[["term", "method"]].values.tolist()
[['(Intercept)', 'profile'], ['Days', 'profile']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hlmbridge.errors import UsageError

__all__ = ["CONFINT_COLUMNS", "CONFINT_METHODS", "confint"]

CONFINT_COLUMNS: tuple[str, ...] = ("term", "estimate", "conf_low", "conf_high", "level", "method")
CONFINT_METHODS: tuple[str, ...] = ("Wald", "profile", "boot")


def confint(result: Any, method: str = "profile", level: float = 0.95, *, parm: str | Sequence[str] | None = None,
            data: pd.DataFrame | None = None, boot: Any = None, boot_type: str = "percentile", n: int = 200,
            seed: int | None = None, **boot_options: Any) -> pd.DataFrame:
    """Confidence intervals for every parameter by ``method`` (see the module docstring).

    ``parm`` picks rows as lme4's ``parm``: ``"beta_"`` (the fixed effects), ``"theta_"``
    (the random part and sigma) or a list of names (lme4's, as in the ``term`` column); only
    those are profiled. ``data``, ``n``, ``seed`` and ``boot_options`` (``executor``,
    ``progress``, ``max_workers``) go to the bootstrap for ``method="boot"``, and are refused
    otherwise.
    """
    if method not in CONFINT_METHODS:
        raise UsageError(f"confint: method must be one of {', '.join(CONFINT_METHODS)}, got {method!r}")
    if not (isinstance(level, float | int) and not isinstance(level, bool) and 0 < float(level) < 1):
        raise UsageError(f"confint: level must be a number between 0 and 1, got {level!r}")
    unused = sorted(k for k in boot_options if k not in ("executor", "progress", "max_workers"))
    if unused:
        raise UsageError(f"confint: unknown keyword(s) {', '.join(unused)}")
    if method != "boot":
        given = [k for k, v in (("data", data), ("boot", boot), ("seed", seed)) if v is not None]
        given += sorted(boot_options) + (["boot_type"] if boot_type != "percentile" else []) + \
            (["n"] if n != 200 else [])
        if given:
            raise UsageError(f"confint: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                             f"method='boot' only, not {method!r}")
    wanted = _wanted(result, parm)
    if method == "Wald":
        out = _wald(result, float(level))
    elif method == "profile":
        out = _profile(result, float(level), wanted)
    else:
        out = _boot(result, float(level), data, boot, boot_type, n, seed, boot_options)
    out = out[out["term"].isin(wanted)]
    return out[list(CONFINT_COLUMNS)].reset_index(drop=True)


def _wanted(result: Any, parm: str | Sequence[str] | None) -> list[str]:
    """The rows ``parm`` picks, in the table's order."""
    names = [t for t, _ in _parameters(result)]
    fixed = {str(r[0]) for r in result.fixed_rows}
    if parm is None:
        return names
    if parm == "beta_":
        return [t for t in names if t in fixed]
    if parm == "theta_":
        return [t for t in names if t not in fixed]
    picked = [parm] if isinstance(parm, str) else list(parm)
    unknown = [p for p in picked if p not in names]
    if unknown or not picked:
        raise UsageError(f"confint: parm must be 'beta_', 'theta_' or names among {', '.join(names)}; got "
                         f"{parm!r}")
    return [t for t in names if t in picked]


def _parameters(result: Any) -> list[tuple[str, float]]:
    """lme4's parameters and the fit's estimates: sd/cor of the random part, sigma, fixed effects."""
    from hlmbridge.inference.bootstrap import result_numbers

    nums = result_numbers(result)
    random = [(k, v) for k, v in nums.items() if k.startswith(("sd_", "cor_"))]
    fixed = [(str(r[0]), float(r[2])) for r in result.fixed_rows]
    return random + [("sigma", nums["sigma"])] + fixed


def _wald(result: Any, level: float) -> pd.DataFrame:
    z = float(stats.norm.ppf(0.5 + level / 2))
    se = {str(r[0]): float(r[3]) for r in result.fixed_rows}
    rows = []
    for term, est in _parameters(result):
        if term in se:
            rows.append((term, est, est - z * se[term], est + z * se[term]))
        else:
            rows.append((term, est, float("nan"), float("nan")))
    return pd.DataFrame(rows, columns=["term", "estimate", "conf_low", "conf_high"]).assign(level=level,
                                                                                          method="Wald")


def _profile(result: Any, level: float, wanted: list[str]) -> pd.DataFrame:
    from hlmbridge.inference.profile import profile_ci

    ci = profile_ci(result, level, wanted)
    return ci[["term", "estimate", "conf_low", "conf_high"]].assign(level=level, method="profile")


def _boot(result: Any, level: float, data: pd.DataFrame | None, boot: Any, boot_type: str, n: int,
          seed: int | None, options: dict) -> pd.DataFrame:
    from hlmbridge.inference.bootstrap import INTERVAL_METHODS, BootstrapResult, bootstrap

    if boot_type not in INTERVAL_METHODS:
        raise UsageError(f"confint: boot_type must be one of {', '.join(INTERVAL_METHODS)}, got {boot_type!r}")
    params = _parameters(result)
    if boot is None:
        if data is None:
            raise UsageError("confint(method='boot') needs data=, the DataFrame the fit was made on (or boot=, a "
                             "bootstrap of this fit already run)")
        boot = bootstrap(result, data, n=n, seed=seed, **options)
    else:
        if not isinstance(boot, BootstrapResult):
            raise UsageError(f"confint: boot= must be a BootstrapResult (FitResult.bootstrap), got {type(boot).__name__}")
        if data is not None or seed is not None or options or n != 200:
            raise UsageError("confint: give boot= (a bootstrap already run) or data=/n=/seed= (run one), not both")
        if boot.statistic:
            raise UsageError(f"confint: boot= holds the user statistic {boot.statistic!r}, not the model's "
                             "parameters")
        mine = dict(params)
        theirs = dict(boot.estimates)
        if any(k not in theirs or not np.isclose(theirs[k], v, rtol=1e-12, atol=0) for k, v in mine.items()):
            raise UsageError("confint: boot= is a bootstrap of another fit (its estimates differ from this fit's)")
    iv = boot.intervals(level, boot_type).set_index("quantity")
    rows = [(term, est, float(iv.loc[term, "conf_low"]), float(iv.loc[term, "conf_high"])) for term, est in params]
    return pd.DataFrame(rows, columns=["term", "estimate", "conf_low", "conf_high"]).assign(
        level=level, method=f"boot-{boot_type}")
