"""The thread policy (hlmbridge/threads.py, issue 22): hlmbridge's numerical sections run with a
bounded number of BLAS threads, give them back afterwards, and never override the user's own
BLAS variables. Read through threadpoolctl, the library that sets them."""

from __future__ import annotations

import numpy as np
import scipy.linalg  # noqa: F401  (scipy brings a BLAS of its own: load it before counting)
import pytest
from threadpoolctl import threadpool_info

import hlmbridge
from hlmbridge import threads
from hlmbridge.errors import UsageError
from hlmbridge.inference import stata_parity


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (threads.ENV_VAR, *threads.USER_BLAS_VARS):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_default_limit_is_one_thread_and_restored(clean_env: pytest.MonkeyPatch) -> None:
    before = _blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    with threads.bounded_blas():
        assert _blas_threads() == [1] * len(before)
        with threads.bounded_blas():  # nested: unchanged, and still bounded after the inner exit
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_users_blas_variable_wins(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENBLAS_NUM_THREADS", "2")
    assert threads.blas_thread_limit() is None
    before = _blas_threads()
    with threads.bounded_blas():
        assert _blas_threads() == before


def test_own_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENBLAS_NUM_THREADS", "2")
    clean_env.setenv(threads.ENV_VAR, "1")  # hlmbridge's own setting is more specific
    assert threads.blas_thread_limit() == 1
    clean_env.setenv(threads.ENV_VAR, "all")
    assert threads.blas_thread_limit() is None
    for bad in ("0", "-1", "two", "1.5"):
        clean_env.setenv(threads.ENV_VAR, bad)
        with pytest.raises(UsageError, match=threads.ENV_VAR):
            threads.blas_thread_limit()


def test_fit_and_evaluation_run_bounded(clean_env: pytest.MonkeyPatch) -> None:
    """A whole fit (statsmodels engine: no R needed) and a direct evaluation run their
    closed forms with one BLAS thread; the caller's setting is back afterwards."""
    seen: list[list[int]] = []
    real = stata_parity._dense_evaluate

    def spy(*args, **kwargs):  # the real evaluation, observed
        seen.append(_blas_threads())
        return real(*args, **kwargs)

    clean_env.setattr(stata_parity, "_dense_evaluate", spy)
    before = _blas_threads()
    hsb = hlmbridge.datasets.hsb()
    res = hlmbridge.fit("mixed mathach ses || id:", hsb, engine="statsmodels")
    assert np.isfinite(res.loglik)
    from hlmbridge.design.build import build_design

    d = build_design(hlmbridge.ModelSpec.parse("mixed mathach ses || id:"), hsb)
    stata_parity.evaluate(d, None, np.array([4.0, 37.0]))
    assert seen and all(s == [1] * len(before) for s in seen)
    assert _blas_threads() == before
