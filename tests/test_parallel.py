"""hlmbridge.fit_many: parallel results equal serial ones (process pool and Dask), errors travel.

No timings are asserted here; speed is measured by ``benchmarks/run.py``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import SpecError, UnsupportedSpecError, UsageError
from hlmbridge.reference.fixtures import model_commands
from hlmbridge.parallel import FitJob, _as_job, _frames, clean_child_env

# The seed's distinct models, read from its reference fixtures (in log order).
SEED_MODELS = model_commands()
# statsmodels fits of the random-slope models take many seconds each: the quick ones here.
SM_MODELS = ("mixed mathach || id:", "mixed mathach sector || id:", "mixed mathach c.ses##i.sector || id:")


def _comparable(res: hlmbridge.FitResult) -> dict[str, Any]:
    d = res.to_dict()
    d.pop("wall_time")
    return d


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    """Equal structures; floats equal to 1e-10 (relative) or both NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, (float, int)), path
        if math.isnan(a):
            assert math.isnan(b), path
        else:
            assert b == pytest.approx(a, rel=1e-10, abs=1e-12), path
    else:
        assert a == b, path


def _serial(models: tuple[str, ...], data: pd.DataFrame, engine: str) -> list[hlmbridge.FitResult]:
    return [hlmbridge.fit(m, data, engine=engine) for m in models]


@pytest.fixture(scope="module")
def pool() -> ProcessPoolExecutor:
    with clean_child_env():
        ex = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"))
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def dask_executor() -> Any:
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] (the test extra) is not installed")
    with clean_child_env():  # R may already run in this process (it changes LD_LIBRARY_PATH)
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client.get_executor()
    client.close()
    cluster.close()


def test_fitresult_pickles(hsb_combined: pd.DataFrame) -> None:
    res = hlmbridge.fit(SM_MODELS[0], hsb_combined, engine="statsmodels")
    back = pickle.loads(pickle.dumps(res))
    assert back == res or back.to_dict() == res.to_dict()
    _assert_same(back.to_dict(), res.to_dict())


def test_process_pool_statsmodels_equals_serial(hsb_combined: pd.DataFrame, pool: ProcessPoolExecutor) -> None:
    serial = _serial(SM_MODELS, hsb_combined, "statsmodels")
    par = hlmbridge.fit_many([(m, hsb_combined, "statsmodels") for m in SM_MODELS], pool, progress=False)
    assert len(par) == len(serial)
    for s, p in zip(serial, par):
        assert p.spec == s.spec
        _assert_same(_comparable(s), _comparable(p))


@pytest.mark.requires_r
def test_process_pool_lme4_equals_serial(hsb_combined: pd.DataFrame, pool: ProcessPoolExecutor) -> None:
    serial = _serial(SEED_MODELS, hsb_combined, "lme4")
    par = hlmbridge.fit_many([(m, hsb_combined, "lme4") for m in SEED_MODELS], pool, progress=False)
    for s, p in zip(serial, par):
        assert p.engine == "lme4" and p.spec == s.spec
        _assert_same(_comparable(s), _comparable(p))


@pytest.mark.requires_r
def test_default_pool_mixed_engines_in_job_order(hsb_combined: pd.DataFrame) -> None:
    jobs = [
        {"spec": SM_MODELS[1], "data": hsb_combined, "engine": "lme4"},
        FitJob(SM_MODELS[1], hsb_combined, "statsmodels"),
        (SEED_MODELS[2], hsb_combined, "lme4", True),  # REML
    ]
    out = hlmbridge.fit_many(jobs, progress=False, max_workers=2)
    assert [r.engine for r in out] == ["lme4", "statsmodels", "lme4"]
    assert out[2].spec.reml and not out[0].spec.reml
    _assert_same(_comparable(hlmbridge.fit(SEED_MODELS[2], hsb_combined, engine="lme4", reml=True)),
                 _comparable(out[2]))


@pytest.mark.requires_r
def test_dask_lme4_equals_serial(hsb_combined: pd.DataFrame, dask_executor: Any) -> None:
    models = SEED_MODELS[:5]
    serial = _serial(models, hsb_combined, "lme4")
    par = hlmbridge.fit_many([(m, hsb_combined, "lme4") for m in models], dask_executor, progress=False)
    for s, p in zip(serial, par):
        _assert_same(_comparable(s), _comparable(p))


def test_dask_statsmodels_equals_serial(hsb_combined: pd.DataFrame, dask_executor: Any) -> None:
    models = SM_MODELS[:2]
    serial = _serial(models, hsb_combined, "statsmodels")
    par = hlmbridge.fit_many([(m, hsb_combined, "statsmodels") for m in models], dask_executor, progress=False)
    for s, p in zip(serial, par):
        _assert_same(_comparable(s), _comparable(p))


def test_failed_job_raises_its_error_in_caller(hsb_combined: pd.DataFrame, pool: ProcessPoolExecutor) -> None:
    bad = "mixed mathach ses || id: ses, cov(exchangeable)"  # statsmodels has no exchangeable structure
    with pytest.raises(UnsupportedSpecError) as info:
        hlmbridge.fit_many([(bad, hsb_combined, "statsmodels")], pool, progress=False)
    assert info.value.engine == "statsmodels"
    assert "exchangeable" in str(info.value)
    assert "Traceback" in info.value.remote_traceback


def test_return_exceptions_keeps_order(hsb_combined: pd.DataFrame, pool: ProcessPoolExecutor) -> None:
    jobs = [("mixed mathach || id: ses, bogus(", hsb_combined, "statsmodels"),
            (SM_MODELS[0], hsb_combined, "statsmodels")]
    out = hlmbridge.fit_many(jobs, pool, progress=False, return_exceptions=True)
    assert isinstance(out[0], SpecError)
    assert isinstance(out[1], hlmbridge.FitResult) and out[1].nobs == len(hsb_combined)


def test_progress_bar_is_plain_text(hsb_combined: pd.DataFrame, pool: ProcessPoolExecutor) -> None:
    stream = io.StringIO()
    hlmbridge.fit_many([(SM_MODELS[0], hsb_combined, "statsmodels")], pool, progress=stream)
    text = stream.getvalue()
    assert "fit_many [" in text and "1/1 fits" in text
    assert text.isprintable() or set(text) - set("\n\r") <= set(map(chr, range(32, 127)))


def test_jobs_validated_and_frames_pickled_once(hsb_combined: pd.DataFrame) -> None:
    assert hlmbridge.fit_many([], progress=False) == []
    with pytest.raises(UsageError):
        hlmbridge.fit_many([42], progress=False)
    with pytest.raises(UsageError):
        _as_job({"spec": "mixed y || g:", "data": hsb_combined, "engin": "lme4"}, 0)
    with pytest.raises(UsageError):
        hlmbridge.fit_many([("mixed mathach || id:", "not a frame", "lme4")], progress=False)
    other = hsb_combined.copy()
    jobs = [_as_job(j, k) for k, j in enumerate([(m, hsb_combined, "lme4") for m in SEED_MODELS[:3]]
                                                 + [(SEED_MODELS[0], other, "lme4")])]
    frames = _frames(jobs)
    assert frames[0] is frames[1] is frames[2]
    assert frames[3] is not frames[0] and frames[3].token == frames[0].token  # same content, same token


def test_clean_child_env_restores_pre_r_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from hlmbridge import parallel

    monkeypatch.setattr(parallel, "_LAUNCH_ENV", {"LD_LIBRARY_PATH": None, "R_HOME": None})
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib/R/lib:/usr/lib/x86_64-linux-gnu")
    monkeypatch.setenv("R_HOME", "/usr/lib/R")
    with clean_child_env():
        assert "LD_LIBRARY_PATH" not in os.environ and "R_HOME" not in os.environ
    assert os.environ["LD_LIBRARY_PATH"] == "/usr/lib/R/lib:/usr/lib/x86_64-linux-gnu"
    assert os.environ["R_HOME"] == "/usr/lib/R"
