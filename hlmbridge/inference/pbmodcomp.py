"""Parametric bootstrap comparison of two nested models: pbkrtest's ``PBmodcomp``.

As pbkrtest does it: both models are (re)fitted by ML; ``nsim`` responses are simulated from
the small model's ML fit (random effects and residuals, :func:`hlmbridge.inference.bootstrap.simulate`),
both models are refitted to each by the same engine through :func:`hlmbridge.fit_many` (worker
processes or any Executor, with its progress bar), and the reference distribution is
``2 (logLik(large) - logLik(small))`` over the replicates. :meth:`PBModComp.table` gives
pbkrtest's ``summary()`` rows: ``LRT`` (the chi-square approximation), ``PBtest``
(``(1 + #{ref > tobs}) / (1 + #{ref > 0})``), ``Gamma`` (a gamma fitted to the positive
replicates' mean and variance), ``Bartlett`` (the statistic scaled by ``df / mean``) and ``F``
(``tobs / df`` on ``df`` and ``2 mean / (mean - 1)`` df).

Reproducibility: replicate ``i`` draws from ``default_rng(SeedSequence(seed).spawn(nsim)[i])`` in
the caller, so the reference distribution depends on ``seed`` and ``nsim`` only (not on the
workers). A replicate whose refit fails or does not converge is counted in ``n_failed`` (with
its message in ``failures``) and left out of the reference distribution, never silently.
R's own random numbers differ, so the p-values agree with pbkrtest's in distribution (within
Monte Carlo error), not digit for digit.

Examples
--------
>>> from hlmbridge.inference.pbmodcomp import summarize_reference
>>> tab = summarize_reference(3.0, 1, [0.1, 0.5, 4.0, 2.0, 0.0])
>>> tab["test"].tolist()
['LRT', 'PBtest', 'Gamma', 'Bartlett', 'F']
>>> float(tab.loc[tab["test"] == "PBtest", "p_value"].iloc[0])  # (1 + 1) / (1 + 4)
0.4
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import FitError, UsageError

__all__ = ["PBModComp", "PB_COLUMNS", "pbmodcomp", "summarize_reference"]

#: Columns of :meth:`PBModComp.table` (pbkrtest's stat, df, ddf, p.value).
PB_COLUMNS: tuple[str, ...] = ("test", "stat", "df", "ddf", "p_value")


def summarize_reference(tobs: float, ndf: int, ref: Any) -> pd.DataFrame:
    """pbkrtest's ``.summarizePB``: the five tests of the observed LR statistic ``tobs`` on
    ``ndf`` df against the bootstrap reference distribution ``ref`` (:data:`PB_COLUMNS`)."""
    from scipy import stats

    ref = np.asarray(ref, dtype=float)
    pos = ref[ref > 0]
    npos = len(pos)
    ee = float(np.mean(pos)) if npos else float("nan")
    vv = float(np.var(pos, ddof=1)) if npos > 1 else float("nan")
    p_chi = float(stats.chi2.sf(tobs, ndf))
    p_pb = (1 + int(np.sum(tobs < pos))) / (1 + npos)
    bc = ndf * tobs / ee
    p_bc = float(stats.chi2.sf(bc, ndf))
    scale, shape = vv / ee, ee**2 / vv
    p_ga = float(stats.gamma.sf(tobs, shape, scale=scale))
    ddf = 2 * ee / (ee - 1)
    fobs = tobs / ndf
    p_ff = float(stats.f.sf(fobs, ndf, ddf)) if ddf > 0 else float("nan")
    nan = float("nan")
    rows = [("LRT", tobs, float(ndf), nan, p_chi), ("PBtest", tobs, nan, nan, p_pb), ("Gamma", tobs, nan, nan, p_ga),
            ("Bartlett", bc, float(ndf), nan, p_bc), ("F", fobs, float(ndf), ddf, p_ff)]
    return pd.DataFrame(rows, columns=list(PB_COLUMNS))


@dataclass(frozen=True)
class PBModComp:
    """A parametric bootstrap comparison: the observed LR statistic and its reference distribution."""

    tobs: float
    ndf: int
    ref: tuple[float, ...]  # one LR statistic per successful replicate
    replicate_ids: tuple[int, ...]
    failures: tuple[tuple[int, str], ...]  # (replicate, message)
    nsim: int
    seed: int | None
    engine: str
    large: str
    small: str
    wall_time: float = float("nan")

    @property
    def n_failed(self) -> int:
        """Replicates whose refits failed or did not converge."""
        return len(self.failures)

    @property
    def n_extreme(self) -> int:
        """Positive replicates above the observed statistic (pbkrtest's ``n.extreme``)."""
        ref = np.asarray(self.ref)
        return int(np.sum(self.tobs < ref[ref > 0]))

    def table(self) -> pd.DataFrame:
        """pbkrtest's ``summary(PBmodcomp(...))$test``: LRT, PBtest, Gamma, Bartlett, F."""
        return summarize_reference(self.tobs, self.ndf, self.ref)

    def __str__(self) -> str:
        """pbkrtest's printed ``summary()`` (:func:`hlmbridge.results.display_margins.pbmodcomp_text`)."""
        from hlmbridge.results.display_margins import pbmodcomp_text

        return pbmodcomp_text(self)

    def __repr__(self) -> str:
        from hlmbridge.results.display_margins import short_repr

        return short_repr(self, tobs=self.tobs, ndf=self.ndf, nsim=self.nsim, used=len(self.ref),
                          failed=self.n_failed, seed=self.seed, engine=self.engine)

    def _repr_html_(self) -> str:
        from hlmbridge.results.display_margins import pbmodcomp_html

        return pbmodcomp_html(self)


def _ml(res: Any, frame: pd.DataFrame, options: dict[str, Any]) -> Any:
    """The fit by ML on the same rows (a refit by its engine, with the fit's weights/offset/subset
    ``options``, when it was fitted by REML)."""
    if res.method == "ml":
        return res
    import hlmbridge

    return hlmbridge.fit(res.spec.with_method("ml"), frame, engine=res.engine, **options)


def pbmodcomp(large: Any, small: Any, data: pd.DataFrame, *, nsim: int = 1000, seed: int | None = None,
              executor: Any = None, progress: Any = True, max_workers: int | None = None) -> PBModComp:
    """pbkrtest's ``PBmodcomp(large, small, nsim, seed)`` (see the module docstring).

    ``data`` is the frame both models were fitted on (the refits need its columns);
    ``executor``, ``max_workers`` and ``progress`` go to :func:`hlmbridge.fit_many` (``progress``
    True: its progress bar on stderr; False: none; a stream). Call it under
    ``if __name__ == "__main__":`` in a script (spawned workers import the script again).
    """
    from hlmbridge.inference.bootstrap import _refit_frame, simulate
    from hlmbridge.parallel import FitJob, fit_many, require_main_guard
    from hlmbridge.results.compare import _check_result, _same_rows, _written

    require_main_guard("pbmodcomp")
    for m in (large, small):
        _check_result(m, "pbmodcomp()")
        m._lmm_only("pbmodcomp()")
        if m.design is None:
            raise UsageError("pbmodcomp needs the fits' designs, which a result rebuilt from JSON (from_dict) or "
                             "returned by fit_many does not carry: refit with hlmbridge.fit")
    if isinstance(nsim, bool) or not isinstance(nsim, int | np.integer) or nsim < 1:
        raise UsageError(f"pbmodcomp: nsim must be a positive integer, got {nsim!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise UsageError(f"pbmodcomp: seed must be a non-negative integer or None, got {seed!r}")
    if large.engine != small.engine:
        raise UsageError(f"pbmodcomp: the models were fitted by different engines ({large.engine}, {small.engine}); "
                         "the refits use one")
    _same_rows([large, small], "pbmodcomp()")
    if large.df <= small.df:
        raise UsageError(f"pbmodcomp: the large model has {large.df} parameters, the small one {small.df}: give the "
                         "model with more parameters first")
    t0 = time.perf_counter()
    # the refits' frame, the fit's rows in it and the keywords (weights=, offset=, subset=) that
    # make each refit the same model; the two models' rows are the same (_same_rows above)
    frame, rows, options = _refit_frame(small, small.design, data)
    _, _, big_options = _refit_frame(large, large.design, data)
    big_ml, small_ml = _ml(large, frame, big_options), _ml(small, frame, options)
    tobs = 2.0 * (float(big_ml.loglik) - float(small_ml.loglik))  # pbkrtest's getLRT (no max(0, .))
    ndf = int(big_ml.df - small_ml.df)
    response = small.spec.response
    children = np.random.SeedSequence(seed).spawn(int(nsim))
    jobs = []
    for child in children:
        col = frame[response].to_numpy(dtype=float, na_value=np.nan, copy=True)
        col[rows] = simulate(small_ml, np.random.default_rng(child))
        sim = frame.assign(**{response: col})
        jobs.append(FitJob(big_ml.spec, sim, big_ml.engine, None, big_options))
        jobs.append(FitJob(small_ml.spec, sim, small_ml.engine, None, options))
    fits = fit_many(jobs, executor, progress=progress, return_exceptions=True, max_workers=max_workers)
    ref, ids, failures = [], [], []
    for i in range(int(nsim)):
        pair = fits[2 * i], fits[2 * i + 1]
        bad = next((f for f in pair if isinstance(f, BaseException)), None)
        if bad is not None:
            failures.append((i, f"{type(bad).__name__}: {bad}"))
        elif not all(f.converged for f in pair):
            failures.append((i, "a refit did not converge"))
        else:
            ref.append(2.0 * (float(pair[0].loglik) - float(pair[1].loglik)))
            ids.append(i)
    if not ref:
        first = failures[0][1] if failures else "no replicates"
        raise FitError(f"pbmodcomp: every replicate failed (first: {first})", engine=large.engine)
    return PBModComp(tobs, ndf, tuple(ref), tuple(ids), tuple(failures), int(nsim),
                     None if seed is None else int(seed), large.engine, _written(large), _written(small),
                     time.perf_counter() - t0)
