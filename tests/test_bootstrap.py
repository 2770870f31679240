"""Parametric bootstrap: simulation from the fitted model, refits through fit_many, percentile
intervals, reproducibility per seed, failed replicates counted.

The 200-replicate run of seed model 2 (lme4) takes about 15 s on 2 workers, so it stays in the
default suite (marked ``slow``); its timing is in benchmarks/README.md.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from hlmbridge.inference.bootstrap import bootstrap, result_numbers, simulate

MODEL2 = "mixed mathach ses || id: ses, cov(unstructured)"


def _small() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(15), 6)
    x = rng.normal(size=90)
    y = 1 + 0.5 * x + rng.normal(size=15)[g] + rng.normal(size=90)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_simulation_has_the_fitted_moments() -> None:
    """Many draws: the mean is X beta, the variance of a group's mean and the residual spread
    are those of the fitted variance components (a real check of the simulation, no refit)."""
    df = _small()
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)
    nums = result_numbers(res)
    rng = np.random.default_rng(0)
    draws = np.array([simulate(res, rng) for _ in range(4000)])
    X = res.design.X
    beta = np.array([r[2] for r in res.fixed_rows])
    assert np.abs(draws.mean(axis=0) - X @ beta).max() < 0.15
    resid = draws - X @ beta
    # Two rows of one group: covariance var(_cons); variance var(_cons) + var(Residual).
    c = np.cov(resid[:, 0], resid[:, 1])
    assert c[0, 1] == pytest.approx(nums["var(_cons)|g"], rel=0.15)
    assert c[0, 0] == pytest.approx(nums["var(_cons)|g"] + nums["var(Residual)"], rel=0.1)


def test_same_seed_same_intervals_and_workers_do_not_matter() -> None:
    df = _small()
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)
    a = res.bootstrap(df, n=6, seed=42, progress=False, max_workers=2)
    b = bootstrap(res, df, n=6, seed=42, progress=False, max_workers=1)
    assert a.n_ok == 6 and a.n_failed == 0
    pd.testing.assert_frame_equal(a.intervals(), b.intervals())
    c = res.bootstrap(df, n=6, seed=43, progress=False, max_workers=2)
    assert not np.allclose(a.table().to_numpy(), c.table().to_numpy())
    iv = a.intervals(0.9)
    assert set(["(Intercept)", "x", "var(_cons)|g", "sigma", "loglik", "se(x)"]) <= set(iv["quantity"])
    assert (iv["conf_low"] <= iv["conf_high"]).all()


class _FailOneJob(ThreadPoolExecutor):
    """An executor that fails every submission of the first job it sees (a worker that dies on it):
    fit_many reports that replicate as failed, the bootstrap must count it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.bad: object = None

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        token = getattr(args[1], "token", None) if len(args) > 1 else None
        if self.bad is None:
            self.bad = token
        if token == self.bad:
            fut: Future = Future()
            fut.set_exception(RuntimeError("worker lost"))
            return fut
        return super().submit(fn, *args, **kwargs)


def test_failed_replicates_are_counted_and_reported() -> None:
    df = _small()
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)
    with _FailOneJob() as ex:
        out = res.bootstrap(df, n=4, seed=1, executor=ex, progress=False)
    assert out.n_failed == 1 and out.n_ok == 3
    assert out.failures[0][0] == 0 and "worker lost" in out.failures[0][1]
    assert (out.intervals()["n_failed"] == 1).all() and (out.intervals()["n_ok"] <= 3).all()
    assert "1 failed" in out.summary()


def test_bad_input() -> None:
    df = _small()
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)
    with pytest.raises(UsageError, match="n must"):
        res.bootstrap(df, n=0)
    with pytest.raises(UsageError, match="seed"):
        res.bootstrap(df, n=2, seed=-1)
    with pytest.raises(UsageError, match="rows"):
        res.bootstrap(df.head(10), n=2)
    with pytest.raises(UsageError, match="design"):
        hlmbridge.FitResult.from_dict(res.to_dict()).bootstrap(df, n=2)
    w = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False, weights=np.ones(len(df)))
    with pytest.raises(UsageError, match="weights"):
        w.bootstrap(df, n=2)


@pytest.mark.slow
@pytest.mark.requires_r
def test_bootstrap_200_of_seed_model_2() -> None:
    """The issue's run: 200 replicates of seed model 2 with lme4 through fit_many, a progress bar."""
    hsb = hlmbridge.datasets.hsb("combined")
    res = hlmbridge.fit(MODEL2, hsb, engine="lme4")
    bar = io.StringIO()
    t0 = time.perf_counter()
    out = res.bootstrap(hsb, n=200, seed=2026, progress=bar)
    seconds = time.perf_counter() - t0
    print(f"\n[bootstrap] 200 replicates of seed model 2 (lme4): {seconds:.1f}s; {out.summary()}")
    assert "200/200 fits" in bar.getvalue()
    assert out.n_ok + out.n_failed == 200 and out.n_ok >= 190
    iv = out.intervals().set_index("quantity")
    assert iv.loc["ses", "conf_low"] < res.fixed["estimate"].iloc[0] < iv.loc["ses", "conf_high"]
