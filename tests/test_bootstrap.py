"""Parametric bootstrap: simulation from the fitted model, refits through fit_many, percentile,
basic and normal intervals (equal to boot's ``boot.ci`` on the same replicates), a user statistic,
fits with weights/offset/subset refitted as the same model, reproducibility per seed, failed
replicates counted.

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
from hlmbridge.inference.bootstrap import BootstrapResult, bootstrap, result_numbers, simulate

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
    c = hlmbridge.fit("y ~ f + (1 | g)", df.assign(f=np.where(df["g"] > 7, "hi", "lo")), engine="statsmodels",
                      reml=False, contrasts={"f": "contr.sum"})
    with pytest.raises(UsageError, match="contrasts="):
        c.bootstrap(df, n=2)
    with pytest.raises(UsageError, match="statistic must be a function"):
        res.bootstrap(df, n=2, statistic=3)
    with pytest.raises(UsageError, match="statistic must return a number"):
        res.bootstrap(df, n=2, statistic=lambda r: "x")
    with pytest.raises(UsageError, match="method must be one of"):
        BootstrapResult(1, 1, "statsmodels", (("a", 1.0),), ((1.0,), (2.0,)), (0, 1), ()).intervals(method="bca")


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


# ---------------------------------------------------------------------------- issue 27, item 4
def _replicate_by_hand(res, data: pd.DataFrame, seed: int, n: int, i: int, **fit_args) -> hlmbridge.FitResult:
    """Replicate ``i`` redone without the bootstrap: the same draw put in the fit's rows of the
    caller's data, refitted with the caller's own lmer arguments."""
    y = simulate(res, np.random.default_rng(np.random.SeedSequence(seed).spawn(n)[i]))
    col = data["y"].to_numpy(dtype=float, copy=True)
    col[np.asarray(res.design.rows)] = y
    return hlmbridge.fit("y ~ x + (1 | g)", data.assign(y=col), engine="statsmodels", reml=False, **fit_args)


@pytest.mark.parametrize("args", [
    {"weights": "w"},
    {"offset": "off"},
    {"subset": "x > -1 & g != 3"},
    {"subset": "x < 1.5", "weights": "w", "offset": "off"},
], ids=["weights", "offset", "subset", "all_three"])
def test_weights_offset_subset_refit_the_same_model(args: dict) -> None:
    """Each replicate is the refit an R user would write: the same weights=, offset= and subset=
    (before issue 27 these fits were refused). Checked against refits by hand."""
    rng = np.random.default_rng(5)
    df = _small().assign(w=rng.uniform(0.5, 2.0, 90), off=rng.normal(size=90))
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False, **args)
    with ThreadPoolExecutor(max_workers=1) as ex:
        out = res.bootstrap(df, n=3, seed=9, executor=ex, progress=False)
    assert out.n_ok == 3
    tab = out.table()
    for i in range(3):
        by_hand = result_numbers(_replicate_by_hand(res, df, 9, 3, i, **args))
        got = tab.loc[i]
        for k in ("(Intercept)", "x", "var(_cons)|g", "var(Residual)", "loglik"):
            assert got[k] == pytest.approx(by_hand[k], rel=1e-9, abs=1e-12), (args, i, k)
    assert res.nobs < 90 if "subset" in args else res.nobs == 90


def test_user_statistic_is_applied_to_the_fit_and_each_refit() -> None:
    df = _small()
    res = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)

    def icc(r: hlmbridge.FitResult) -> dict:
        v = r.random["estimate"].to_numpy()
        return {"icc": v[0] / v.sum(), "slope": r.fixed["estimate"].iloc[1]}

    with ThreadPoolExecutor(max_workers=1) as ex:
        out = res.bootstrap(df, n=4, seed=3, executor=ex, progress=False, statistic=icc)
    assert [k for k, _ in out.estimates] == ["icc", "slope"] and out.statistic == "icc"
    assert dict(out.estimates) == icc(res)
    for i in range(4):
        assert out.table().loc[i].to_dict() == pytest.approx(icc(_replicate_by_hand(res, df, 3, 4, i)), rel=1e-9)
    assert set(out.intervals()["quantity"]) == {"icc", "slope"}
    # a lone number is named "statistic"; a statistic failing on one refit fails that replicate only
    calls = []

    def flaky(r: hlmbridge.FitResult) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("no luck")
        return float(r.loglik)

    with ThreadPoolExecutor(max_workers=1) as ex:
        out = res.bootstrap(df, n=4, seed=3, executor=ex, progress=False, statistic=flaky)
    assert [k for k, _ in out.estimates] == ["statistic"] and out.n_ok == 3 and out.n_failed == 1
    assert "statistic raised ValueError: no luck" in out.failures[0][1]


@pytest.mark.requires_r
def test_intervals_equal_boot_ci() -> None:
    """Percentile, basic and normal intervals equal R's boot::boot.ci(type = "perc", "basic",
    "norm") on the same replicates (boot's own order-statistic interpolation), for replicate
    counts where (R + 1) alpha is and is not an integer."""
    import rpy2.robjects as ro

    boot_ci = ro.r("""function(t0, t, conf) {
      b <- list(t0 = t0, t = matrix(t, ncol = 1), R = length(t), sim = "parametric", stype = "i",
                call = quote(boot(data, statistic, R)), strata = rep(1, length(t)), weights = rep(1, length(t)))
      class(b) <- "boot"
      ci <- suppressWarnings(boot::boot.ci(b, conf = conf, type = c("perc", "basic", "norm")))
      c(ci$percent[4:5], ci$basic[4:5], ci$normal[2:3])
    }""")
    rng = np.random.default_rng(27)
    for n, level in ((199, 0.95), (57, 0.9), (1000, 0.8)):
        t = rng.gamma(2.0, size=n)
        br = BootstrapResult(n, 1, "statsmodels", (("t", 1.7),), tuple((float(v),) for v in t), tuple(range(n)), ())
        want = np.array(boot_ci(1.7, ro.FloatVector(t), level), dtype=float)
        for k, method in enumerate(("percentile", "basic", "normal")):
            got = br.intervals(level, method).iloc[0]
            assert got["method"] == method
            np.testing.assert_allclose([got["conf_low"], got["conf_high"]], want[2 * k:2 * k + 2], rtol=1e-12,
                                       err_msg=f"{method}, R = {n}, level {level}")


def test_fit_many_jobs_carry_fit_keywords() -> None:
    """What the bootstrap of a weighted fit relies on: a job's options reach hlmbridge.fit
    (FitJob, a five-item tuple or a dict's "options"); a misspelt one is refused by fit."""
    from hlmbridge.parallel import FitJob

    df = _small()
    w = np.linspace(0.5, 2.0, len(df))
    want = hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", weights=w)
    jobs = [FitJob("y ~ x + (1 | g)", df, "statsmodels", None, {"weights": w}),
            ("y ~ x + (1 | g)", df, "statsmodels", None, {"weights": w}),
            {"spec": "y ~ x + (1 | g)", "data": df, "engine": "statsmodels", "options": {"weights": w}}]
    with ThreadPoolExecutor(max_workers=1) as ex:
        got = hlmbridge.fit_many(jobs, ex, progress=False)
        assert all(r.loglik == want.loglik for r in got)
        with pytest.raises(UsageError, match="weigths"):
            hlmbridge.fit_many([("y ~ x + (1 | g)", df, "statsmodels", None, {"weigths": w})], ex, progress=False)
        with pytest.raises(UsageError, match="options must be a dict"):
            hlmbridge.fit_many([("y ~ x + (1 | g)", df, "statsmodels", None, 3)], ex, progress=False)
