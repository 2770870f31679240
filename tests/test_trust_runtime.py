"""Issue 12, items 7-9 and R_HOME: a killed worker, threads, Ctrl-C and a wrong R_HOME.

Each probe runs the real thing: a worker process that really dies (SIGKILL from inside
the unpickling of its data), eight threads starting R at once in a fresh interpreter, a real
SIGINT sent to a process in the middle of a long lme4 fit, and a child Python whose R_HOME
points nowhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import FitError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- a worker that dies

class KillOnUnpickle:
    """Kills the process that unpickles it (SIGKILL): a worker dies on receiving the data.

    With ``marker`` it kills only the first process to unpickle it (it creates the marker),
    so a retry in a fresh worker succeeds.
    """

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker

    def __getstate__(self) -> dict[str, str | None]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, str | None]) -> None:
        self.marker = state["marker"]
        if self.marker is not None:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return  # killed a worker already: this time let it live
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _deadly(data: pd.DataFrame, marker: str | None = None) -> pd.DataFrame:
    """``data`` plus an unused object column holding a KillOnUnpickle."""
    out = data.copy()
    out["boom"] = pd.Series([KillOnUnpickle(marker)] + [None] * (len(out) - 1), dtype=object)
    return out


MODEL = "Reaction ~ Days + (1|Subject)"


def test_killed_worker_is_retried_once_and_then_reported() -> None:
    df = hlmbridge.datasets.sleepstudy()
    jobs = [(MODEL, df, "statsmodels"), (MODEL, _deadly(df), "statsmodels"), (MODEL, df, "statsmodels")]
    out = hlmbridge.fit_many(jobs, progress=False, return_exceptions=True, max_workers=2)
    assert isinstance(out[0], hlmbridge.FitResult) and isinstance(out[2], hlmbridge.FitResult)
    assert isinstance(out[1], FitError)
    message = str(out[1])
    assert "job 1" in message and MODEL in message and "died" in message and "retried once" in message
    with pytest.raises(FitError, match="job 1 .*died"):
        hlmbridge.fit_many(jobs[:2], progress=False, max_workers=2)


def test_worker_killed_once_then_the_retry_fits(tmp_path: Path) -> None:
    df = hlmbridge.datasets.sleepstudy()
    marker = tmp_path / "killed-once"
    jobs = [(MODEL, _deadly(df, str(marker)), "statsmodels"), (MODEL, df, "statsmodels")]
    out = hlmbridge.fit_many(jobs, progress=False, max_workers=2)
    assert marker.exists()  # a worker did die
    assert [r.loglik for r in out] == pytest.approx([out[1].loglik] * 2, rel=1e-10)


def test_killed_worker_on_a_callers_pool_is_an_error_not_broken_pool() -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    df = hlmbridge.datasets.sleepstudy()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        out = hlmbridge.fit_many([(MODEL, _deadly(df), "statsmodels")], pool, progress=False, return_exceptions=True)
    assert isinstance(out[0], FitError) and "executor is broken" in str(out[0]) and "job 0" in str(out[0])


def test_validate_jobs_reports_a_killed_worker() -> None:
    from hlmbridge.check.validate import validate

    data = _deadly(hlmbridge.datasets.hsb("combined"))
    report = validate(data=data, engines=["statsmodels"], cases=["*L0174*"], jobs=2)
    bad = [r for r in report.rows if r.status == "missing"]
    assert bad and all("died" in r.reason for r in bad)


# ---------------------------------------------------------------- threads and signals (fresh interpreters)

def _python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


@pytest.mark.requires_r
def test_first_fits_from_eight_threads_at_once_all_succeed() -> None:
    proc = _python("""
        import threading, hlmbridge
        df = hlmbridge.datasets.sleepstudy()
        start = threading.Barrier(8)
        out = []
        def run():
            start.wait()
            try:
                out.append(hlmbridge.fit("Reaction ~ Days + (Days | Subject)", df, engine="lme4").loglik)
            except BaseException as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        threads = [threading.Thread(target=run) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(repr(out))
    """)
    assert proc.returncode == 0, proc.stderr
    out = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr of floats/strings
    assert len(out) == 8 and all(isinstance(v, float) for v in out), out
    assert max(out) - min(out) < 1e-9


@pytest.mark.requires_r
def test_ctrl_c_interrupts_a_long_lme4_fit_and_r_stays_usable() -> None:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time, numpy as np, pandas as pd, hlmbridge
        from hlmbridge.design.build import build_design
        from hlmbridge.engines.lme4 import Lme4Engine, push_frame
        from hlmbridge.fit import as_spec
        rng = np.random.default_rng(0)
        n, k = 20000, 500  # crossed random slopes: about a minute of lme4 (R-bound)
        df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, k, n).astype(float),
                           "h": rng.integers(0, k, n).astype(float)})
        df["y"] = df["x"] + rng.normal(size=n)
        small = hlmbridge.datasets.sleepstudy()
        before = hlmbridge.fit("Reaction ~ Days + (Days|Subject)", small, engine="lme4").loglik
        spec = as_spec("y ~ x + (x|g) + (x|h)")
        design = build_design(spec, df)
        push_frame(df, spec.variables, ["g", "h"])  # columns in R already: the fit goes straight to R
        print("fitting", flush=True)
        t0 = time.perf_counter()
        try:
            Lme4Engine().fit_design(design, data=df)
            print("finished", flush=True)
        except KeyboardInterrupt as exc:
            print("interrupted", repr(str(exc)), round(time.perf_counter() - t0, 1), flush=True)
        after = hlmbridge.fit("Reaction ~ Days + (Days|Subject)", small, engine="lme4").loglik
        print("next fit", after == before, flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("fitting"), (line, child.stderr.read() if child.stderr else "")
        time.sleep(2.0)
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
        waited = time.perf_counter() - sent
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted 'the lme4 fit was interrupted'"), out
    assert lines[-1] == "next fit True", out
    assert waited < 30, f"the fit stopped {waited:.1f}s after SIGINT"


@pytest.mark.requires_r
def test_wrong_r_home_is_an_error_not_an_abort(tmp_path: Path) -> None:
    env = dict(os.environ, R_HOME=str(tmp_path / "no-R-here"))
    proc = _python("""
        import hlmbridge
        from hlmbridge.engines.lme4 import Lme4Engine
        from hlmbridge.errors import EngineUnavailableError
        ok, why = Lme4Engine().available()
        print("available", ok)
        try:
            hlmbridge.fit("Reaction ~ Days + (1|Subject)", hlmbridge.datasets.sleepstudy(), engine="lme4")
        except EngineUnavailableError as exc:
            print("EngineUnavailableError", exc)
        print("still alive")
    """, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "available False" in proc.stdout
    assert "EngineUnavailableError" in proc.stdout and "R_HOME" in proc.stdout and "R RHOME" in proc.stdout
    assert proc.stdout.strip().endswith("still alive")
