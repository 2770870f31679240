"""Parametric bootstrap of a fit: simulate from the fitted model, refit with the same engine.

Each replicate draws the random effects of every group from the estimated covariance matrices
and the residuals from N(0, sigma^2 / w) (``w`` the precision weights, 1 without), adds them to
the fitted fixed part (and any formula offset), puts the draw in the response column of the
fit's rows and refits through :func:`hlmbridge.fit_many` (worker processes or any Executor).

Reproducibility: replicate ``i`` draws from ``numpy.random.default_rng(SeedSequence(seed).spawn(n)[i])``
in the caller, so the simulated data -- and hence the intervals -- depend on ``seed`` and ``n``
only, not on the number of workers or the order in which fits finish.

Failures: a replicate whose refit raises, or that does not converge, is counted in
``n_failed`` and listed in ``failures`` (replicate number and message); the intervals use the
others, and ``n_ok`` says how many. Nothing is dropped silently.

Examples
--------
>>> import numpy as np, pandas as pd
>>> import hlmbridge
>>> rng = np.random.default_rng(3)
>>> g = np.repeat(np.arange(12), 8)
>>> df = pd.DataFrame({"y": 2 + rng.normal(size=96) + rng.normal(size=12)[g], "g": g})
>>> res = hlmbridge.fit("y ~ 1 + (1 | g)", df, engine="statsmodels", reml=False)
>>> y = simulate(res, np.random.default_rng(1))
>>> y.shape
(96,)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import HlmbridgeError, UsageError

__all__ = ["INTERVAL_METHODS", "BootstrapResult", "bootstrap", "result_numbers", "simulate", "simulate_frame"]


def simulate(result: Any, rng: np.random.Generator, conditional: tuple[int, ...] = ()) -> np.ndarray:
    """One response vector drawn from the fitted model (the fit's rows, in order).

    ``conditional`` lists the grouping factors (indices into ``design.levels``) whose random
    effects are held at their conditional modes (lme4's ``use.u = TRUE`` for all of them);
    every other factor's effects are drawn afresh from their estimated covariance."""
    design = _design(result)
    beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
    theta = np.array([r[5] for r in result.random_rows], dtype=float)
    from hlmbridge.inference.stata_parity import level_covariances

    y = design.X @ beta
    if design.offset is not None:
        y = y + design.offset
    if conditional:
        from hlmbridge.results.random_effects import level_effects

        effects = level_effects(result)
    for k, (ld, G) in enumerate(zip(design.levels, level_covariances(design, theta), strict=True)):
        if k in conditional:
            b = effects[k].modes
        else:
            q = ld.Z.shape[1]
            w, V = np.linalg.eigh(G)  # G may be singular (a boundary fit): no Cholesky
            root = V * np.sqrt(np.clip(w, 0.0, None))
            b = rng.standard_normal((ld.n_groups, q)) @ root.T
        y = y + np.einsum("ij,ij->i", ld.Z, b[ld.codes])
    sd = np.sqrt(theta[-1])
    e = rng.standard_normal(design.nobs) * sd
    if design.weights is not None:
        e = e / np.sqrt(design.weights)
    return y + e


def simulate_frame(result: Any, nsim: int = 1, seed: int | None = None, re_form: str | None = "~0",
                   use_u: bool = False) -> pd.DataFrame:
    """``nsim`` responses drawn from the fitted model, as lme4's ``simulate``: a frame with one
    column per simulation (``sim_1``, ``sim_2`` ...) and one row per row of the fit (indexed as
    :meth:`FitResult.fitted`).

    ``re_form="~0"`` (lme4's default ``re.form = NA``) draws new random effects for every group;
    ``re_form=None`` or ``use_u=True`` (lme4's ``use.u = TRUE``) holds every random effect at its
    conditional mode and draws only the residuals; ``re_form="~ (1 | g)"`` holds the named
    grouping factors' effects and draws the others (each named factor's terms must be all of
    its random effects). Simulation ``i`` draws from
    ``numpy.random.default_rng(SeedSequence(seed).spawn(nsim)[i])``, the bootstrap's replicate
    ``i`` (numpy's generator: the draws are lme4's in distribution, not R's numbers).

    >>> import hlmbridge
    >>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", hlmbridge.datasets.sleepstudy(),
    ...                     engine="statsmodels")
    >>> sims = res.simulate(3, seed=1)
    >>> sims.shape, list(sims.columns)
    ((180, 3), ['sim_1', 'sim_2', 'sim_3'])
    >>> bool((sims == res.simulate(3, seed=1)).all().all())
    True
    """
    if isinstance(nsim, bool) or not isinstance(nsim, int | np.integer) or nsim < 1:
        raise UsageError(f"simulate: nsim must be a positive integer, got {nsim!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise UsageError(f"simulate: seed must be a non-negative integer or None, got {seed!r}")
    if not isinstance(use_u, bool):
        raise UsageError(f"simulate: use_u must be True or False, got {use_u!r}")
    design = _design(result)
    if use_u:
        if re_form != "~0":
            raise UsageError("simulate: give use_u=True or re_form, not both (lme4: \"should specify only one "
                             "of 'use.u' and 're.form'\")")
        re_form = None
    from hlmbridge.results.prediction import _re_form_terms

    bars, columns = _re_form_terms(design, re_form)
    if bars is None:
        conditional = tuple(range(len(design.levels)))
    else:
        conditional = tuple(sorted({lev for lev, _ in columns}))
        for lev, cols in columns:
            whole = len(design.levels[lev].terms_lme4)
            if sum(len(c) for k, c in columns if k == lev) != whole:
                raise UsageError(f"simulate: re_form names some but not all random effects of "
                                 f"{design.levels[lev].key!r} ({', '.join(design.levels[lev].terms_lme4)}); "
                                 "hold a grouping factor's random effects all together or not at all")
    children = np.random.SeedSequence(seed).spawn(int(nsim))
    sims = np.column_stack([simulate(result, np.random.default_rng(c), conditional) for c in children])
    return pd.DataFrame(sims, index=pd.Index(design.rows, name="row"),
                        columns=[f"sim_{i + 1}" for i in range(int(nsim))])


def result_numbers(result: Any) -> dict[str, float]:
    """Every number of a result a bootstrap summarizes, by name.

    Fixed effects (``(Intercept)``) and their SEs (``se((Intercept))``), the random part on the
    variance scale (Stata's ``var(_cons)``, ``cov(ses,_cons)``) and on lme4's sd/cor scale
    (``sd_(Intercept)|id``, ``cor_ses.(Intercept)|id``, ``sigma``), and the scalars ``loglik``,
    ``wald_chi2``, ``lr_chi2``, ``aic``, ``bic``.
    """
    out: dict[str, float] = {}
    for r in result.fixed_rows:
        out[str(r[0])] = float(r[2])
    for r in result.fixed_rows:
        out[f"se({r[0]})"] = float(r[3])
    var = {}
    for r in result.random_rows:  # group, kind, term1, term2, stata_term, estimate, ..., lme4_group
        out[str(r[4]) if r[0] == "Residual" else f"{r[4]}|{r[0]}"] = float(r[5])
        if r[1] == "var":
            var[(r[0], r[2])] = float(r[5])
    for r in result.random_rows:
        if r[0] == "Residual":
            out["sigma"] = float(np.sqrt(max(r[5], 0.0)))
        elif r[1] == "var":
            out[f"sd_{r[2]}|{r[9]}"] = float(np.sqrt(max(r[5], 0.0)))
        else:
            den = np.sqrt(var.get((r[0], r[2]), np.nan) * var.get((r[0], r[3]), np.nan))
            out[f"cor_{r[2]}.{r[3]}|{r[9]}"] = float(r[5] / den) if den > 0 else float("nan")
    for name in ("loglik", "wald_chi2", "lr_chi2", "aic", "bic"):
        out[name] = float(getattr(result, name))
    return out


#: The interval types of :meth:`BootstrapResult.intervals` (boot's ``"perc"``, ``"basic"``, ``"norm"``).
INTERVAL_METHODS = ("percentile", "basic", "normal")


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """boot's ``norm.inter``: the ``alpha`` quantiles of the replicates ``t`` from the order
    statistics ``(R + 1) alpha``, interpolated on the normal quantile scale (the extreme order
    statistic where ``(R + 1) alpha`` falls outside 1..R, as boot does, with its warning)."""
    from scipy.stats import norm

    t = np.sort(t[np.isfinite(t)])
    R = len(t)
    rk = (R + 1) * alpha
    k = np.trunc(rk).astype(int)
    out = np.empty(len(alpha))
    for i in range(len(alpha)):
        if k[i] == rk[i] and 1 <= k[i] <= R:
            out[i] = t[k[i] - 1]
        elif k[i] <= 0:
            out[i] = t[0]
        elif k[i] >= R:
            out[i] = t[R - 1]
        else:
            z1, z2, z3 = norm.ppf(alpha[i]), norm.ppf(k[i] / (R + 1)), norm.ppf((k[i] + 1) / (R + 1))
            out[i] = t[k[i] - 1] + (z1 - z2) / (z3 - z2) * (t[k[i]] - t[k[i] - 1])
    return out


@dataclass(frozen=True)
class BootstrapResult:
    """The replicates of a parametric bootstrap and their intervals (``statistic`` names the
    user's statistic, "" when the replicates are :func:`result_numbers`)."""

    n: int
    seed: int | None
    engine: str
    estimates: tuple[tuple[str, float], ...]  # the original fit's numbers
    replicates: tuple[tuple[float, ...], ...]  # one row per successful replicate, columns as estimates
    replicate_ids: tuple[int, ...]  # which replicate each row is
    failures: tuple[tuple[int, str], ...]  # (replicate, message) of every failed one
    wall_time: float = float("nan")
    statistic: str = ""

    @property
    def n_ok(self) -> int:
        """Replicates that gave a result."""
        return len(self.replicates)

    @property
    def n_failed(self) -> int:
        """Replicates whose refit failed or did not converge."""
        return len(self.failures)

    def table(self) -> pd.DataFrame:
        """The replicates as a frame: one row per successful replicate (index: replicate number)."""
        return pd.DataFrame(list(self.replicates), columns=[k for k, _ in self.estimates],
                            index=pd.Index(self.replicate_ids, name="replicate"))

    def intervals(self, level: float = 0.95, method: str = "percentile") -> pd.DataFrame:
        """Intervals for every number: ``quantity``, ``estimate`` (the fit's), ``boot_mean``,
        ``boot_sd``, ``conf_low``, ``conf_high``, ``n_ok``, ``n_failed``, ``method``.

        ``method`` is one of boot's ``boot.ci`` types (lme4's ``confint(method = "boot",
        boot.type = ...)``), with boot's own order-statistic interpolation (``norm.inter``):
        ``"percentile"`` (the replicates' quantiles), ``"basic"`` (``2 t0`` minus the opposite
        quantiles) or ``"normal"`` (``t0 - bias -/+ z sd``, bias = mean - t0). Non-finite
        replicates are left out of each number's interval (``n_ok`` says how many remain).
        """
        if not (isinstance(level, float | int) and 0 < float(level) < 1):
            raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
        if method not in INTERVAL_METHODS:
            raise UsageError(f"method must be one of {', '.join(INTERVAL_METHODS)}, got {method!r}")
        from scipy.stats import norm

        tab = self.table()
        a = (1 - float(level)) / 2
        rows = []
        for name, est in self.estimates:
            col = tab[name].to_numpy(dtype=float)
            col = col[np.isfinite(col)]
            if len(col) > 1:
                mean, sd = float(col.mean()), float(col.std(ddof=1))
                if method == "percentile":
                    lo, hi = _norm_inter(col, np.array([a, 1 - a]))
                elif method == "basic":
                    q_hi, q_lo = _norm_inter(col, np.array([1 - a, a]))
                    lo, hi = 2 * est - q_hi, 2 * est - q_lo
                else:
                    z = float(norm.ppf(1 - a)) * sd
                    lo, hi = est - (mean - est) - z, est - (mean - est) + z
            else:
                lo = hi = sd = float("nan")
                mean = float(col.mean()) if len(col) else float("nan")
            rows.append((name, est, mean, sd, float(lo), float(hi), int(len(col)), self.n_failed, method))
        return pd.DataFrame(rows, columns=["quantity", "estimate", "boot_mean", "boot_sd", "conf_low",
                                           "conf_high", "n_ok", "n_failed", "method"])

    def summary(self) -> str:
        """One line: replicates, failures, time."""
        text = f"parametric bootstrap ({self.engine}): {self.n_ok} of {self.n} replicates"
        if self.failures:
            text += f"; {self.n_failed} failed (first: replicate {self.failures[0][0]}: {self.failures[0][1]})"
        return text + f"; {self.wall_time:.1f}s"


def bootstrap(result: Any, data: pd.DataFrame | None = None, *, n: int = 200, seed: int | None = None,
              executor: Any = None, progress: Any = True, level: float = 0.95,
              max_workers: int | None = None, statistic: Callable[[Any], Any] | None = None) -> BootstrapResult:
    """``n`` parametric bootstrap replicates of ``result`` (see the module docstring).

    ``data`` is the frame the fit was made on: a result keeps its design, not the caller's
    columns, and the refits need them (factors, transforms and grouping variables as given).
    A fit with lmer's ``weights=`` or ``offset=`` is refitted with the same weights and offset;
    one with ``subset=`` on the whole of ``data`` with the fit's rows as the subset (so a
    function of every row, ``I(x - mean(x))``, is taken as in the fit).
    ``executor`` and ``max_workers`` go to :func:`hlmbridge.fit_many`; ``progress`` is its
    progress bar (True: on stderr; False: none; a stream). ``level`` is only validated here:
    pick any level and method later with :meth:`BootstrapResult.intervals`.

    ``statistic`` (boot's ``statistic``, lme4's ``bootMer(FUN = )``): a function of a
    :class:`~hlmbridge.FitResult` returning a number or a mapping of names to numbers; it is
    applied to ``result`` and to every refit (in this process; a refit carries no design, so
    use its tables and scalars), and the replicates are its values instead of
    :func:`result_numbers`. A replicate whose statistic raises, or returns other names, is a
    failed replicate (counted, with the message).

    >>> import numpy as np, pandas as pd, hlmbridge
    >>> rng = np.random.default_rng(3)
    >>> g = np.repeat(np.arange(10), 6)
    >>> df = pd.DataFrame({"y": rng.normal(size=60) + rng.normal(size=10)[g], "g": g})
    >>> res = hlmbridge.fit("y ~ 1 + (1 | g)", df, engine="statsmodels", reml=False)
    >>> icc = lambda r: r.random["estimate"].iloc[0] / r.random["estimate"].sum()
    >>> out = res.bootstrap(df, n=20, seed=1, progress=False, statistic=icc, max_workers=1)
    >>> iv = out.intervals(method="basic")
    >>> iv["quantity"].tolist(), out.n_ok, iv["method"].iloc[0], bool(iv["conf_low"].iloc[0] < iv["conf_high"].iloc[0])
    (['statistic'], 20, 'basic', True)
    """
    import time

    from hlmbridge.parallel import FitJob, fit_many, require_main_guard

    require_main_guard("bootstrap")  # before simulating: an unguarded script's worker stops here
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise UsageError(f"bootstrap: n must be a positive integer, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise UsageError(f"bootstrap: seed must be a non-negative integer or None, got {seed!r}")
    if not (isinstance(level, float | int) and 0 < float(level) < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    if statistic is not None and not callable(statistic):
        raise UsageError(f"bootstrap: statistic must be a function of a FitResult, got {statistic!r}")
    design = _design(result)
    frame, rows, options = _refit_frame(result, design, data)
    numbers = result_numbers if statistic is None else (lambda fit: _statistic_numbers(statistic, fit))
    est = tuple(numbers(result).items())  # a statistic failing on the fit itself raises here
    names = [k for k, _ in est]
    t0 = time.perf_counter()
    children = np.random.SeedSequence(seed).spawn(int(n))
    jobs = []
    response = result.spec.response
    for child in children:
        y = simulate(result, np.random.default_rng(child))
        col = frame[response].to_numpy(dtype=float, na_value=np.nan, copy=True)
        col[rows] = y
        jobs.append(FitJob(result.spec, frame.assign(**{response: col}), result.engine, None, options))
    fits = fit_many(jobs, executor, progress=progress, return_exceptions=True, max_workers=max_workers)
    reps, ids, failures = [], [], []
    for i, fit in enumerate(fits):
        if isinstance(fit, BaseException):  # fit_many returns HlmbridgeErrors
            failures.append((i, f"{type(fit).__name__}: {fit}"))
            continue
        if not fit.converged:
            failures.append((i, "the refit did not converge"))
            continue
        try:
            nums = numbers(fit)
        except Exception as exc:  # noqa: BLE001 - the user's statistic: every failure is reported
            failures.append((i, f"statistic raised {type(exc).__name__}: {exc}"))
            continue
        if list(nums) != names:
            failures.append((i, f"statistic returned the names {list(nums)}, on the fit {names}"))
            continue
        reps.append(tuple(nums[k] for k in names))
        ids.append(i)
    label = "" if statistic is None else getattr(statistic, "__name__", type(statistic).__name__)
    return BootstrapResult(int(n), None if seed is None else int(seed), result.engine, est, tuple(reps),
                           tuple(ids), tuple(failures), time.perf_counter() - t0, label)


def _statistic_numbers(statistic: Callable[[Any], Any], fit: Any) -> dict[str, float]:
    """The user's statistic of one fit as named numbers (``statistic`` for a lone number)."""
    value = statistic(fit)
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UsageError(f"bootstrap: statistic must return a number or a mapping of names to numbers, got "
                         f"{type(value).__name__}")
    return {"statistic": float(value)}


def _design(result: Any) -> Any:
    if getattr(result, "design", None) is None:
        raise UsageError("the bootstrap needs the fit's design, which a result rebuilt from JSON (from_dict) "
                         "or returned by fit_many does not carry: refit with hlmbridge.fit")
    return result.design


def _refit_frame(result: Any, design: Any, data: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The frame the refits use, the positions in it of the fit's rows (where the simulated
    response goes) and the keywords that make each refit the same model: the fit's rows of
    ``data``, or all of ``data`` with the fit's rows as ``subset=`` for a fit with
    ``subset=``; the fit's ``weights=`` and ``offset=`` on that frame."""
    if not isinstance(data, pd.DataFrame):
        raise UsageError("bootstrap needs data=, the DataFrame the fit was made on (a result keeps its design, "
                         "not the caller's columns)")
    if design.n_data >= 0 and len(data) != design.n_data:
        raise UsageError(f"bootstrap: data has {len(data)} rows but the fit was made on {design.n_data}")
    response = result.spec.response
    if response not in data.columns:
        raise UsageError(f"bootstrap: the response {response!r} is not a column of data (a transformed "
                         "response cannot be simulated on its own scale); fit a column instead")
    if design.contrasts:
        raise UsageError("bootstrap of a fit with lmer's contrasts= argument is not supported (the refits would "
                         "need the contrasts passed again); code the factor with C() in the formula instead")
    fit_rows = np.asarray(design.rows)
    options: dict[str, Any] = {}
    if design.n_subset_out:  # the whole frame, the fit's rows as the subset
        frame = data.reset_index(drop=True)
        rows = fit_rows
        mask = np.zeros(len(frame), dtype=bool)
        mask[rows] = True
        options["subset"] = mask
    else:
        frame = data.iloc[fit_rows].reset_index(drop=True)
        rows = np.arange(len(frame))
    if design.weights is not None:
        w = np.ones(len(frame))
        w[rows] = design.weights
        options["weights"] = w
    if design.offset_argument is not None:
        off = np.zeros(len(frame))
        off[rows] = design.offset_argument
        options["offset"] = off
    return frame, rows, options
