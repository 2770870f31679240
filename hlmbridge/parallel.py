"""``hlmbridge.fit_many``: many fits in worker processes, on one machine or a cluster.

Embedded R is one per process and not thread-safe, so fits run in worker *processes*.
By default they run in a :class:`concurrent.futures.ProcessPoolExecutor` started with
the ``spawn`` context (never ``fork`` of a process that may already run R); any other
:class:`concurrent.futures.Executor` can be passed instead, e.g. a Dask distributed
client's ``client.get_executor()``, and nothing else changes.

Each distinct data frame is pickled once in the caller; workers keep the last few frames
they received (by content hash), so repeated jobs on the same frame in one worker reuse
the same frame object and hence the lme4 engine's cached R copies of its columns.

A failed job's :class:`~hlmbridge.errors.HlmbridgeError` is rebuilt in the caller with
its class, message and attributes (any other exception is wrapped in a
:class:`~hlmbridge.errors.FitError` that names its type and carries the worker's
traceback text in ``remote_traceback``).

A worker process that dies (killed, out of memory, a crash in native code) takes its job
with it, and a process pool that loses a worker fails every job it holds
(``BrokenProcessPool``). The default pool keeps at most one job per worker in flight, so
such a break touches only the jobs then running: each is retried once, alone in a fresh
worker; a job whose worker dies again is reported as a
:class:`~hlmbridge.errors.FitError` naming the job (never ``BrokenProcessPool``).
Jobs on a caller's executor are retried once on it when it still works, else reported.

A ``spawn`` worker process starts by importing the caller's main script. A script that calls
``fit_many`` (or :func:`~hlmbridge.inference.bootstrap.bootstrap`) outside an
``if __name__ == "__main__":`` block therefore calls it again in every worker, which would
start workers of its own: Python refuses that in the worker ("An attempt has been made to start
a new process before the current process has finished its bootstrapping phase"), the worker
dies, and the pool, retried, started workers without end. Such a worker now raises
:class:`~hlmbridge.errors.UsageError` and leaves a note for the caller, whose ``fit_many``
raises the same UsageError (add the guard) instead of retrying.

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.hsb("combined")
>>> jobs = [("mixed mathach || id:", df, "statsmodels"), ("mixed mathach ses || id:", df, "statsmodels")]
>>> [r.nobs for r in hlmbridge.fit_many(jobs, progress=False)]
[7185, 7185]
"""

from __future__ import annotations

import dataclasses

import contextlib
import hashlib
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd

from hlmbridge.errors import FitError, HlmbridgeError, UsageError
from hlmbridge.results.fit_result import FitResult
from hlmbridge.spec.model import ModelSpec

__all__ = ["FitJob", "clean_child_env", "default_executor", "fit_many", "require_main_guard"]

_FRAME_CACHE_SIZE = 4


@dataclass(frozen=True)
class FitJob:
    """One fit: a spec (or model string), its data, the engine, an optional REML flag and any other
    keywords of :func:`hlmbridge.fit` (``options``: lmer's ``weights=``, ``offset=``, ``subset=`` ...)."""

    model: ModelSpec | str
    data: pd.DataFrame
    engine: str = "lme4"
    reml: bool | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # more keywords of hlmbridge.fit


@dataclass(frozen=True)
class _Frame:
    """A pickled data frame and its content hash (the worker-side cache key)."""

    token: str
    payload: bytes


@dataclass(frozen=True)
class _Failure:
    """An exception raised in a worker, in a form that always pickles."""

    module: str
    qualname: str
    message: str
    attrs: dict[str, Any]
    remote_traceback: str

    def rebuild(self) -> HlmbridgeError:
        cls = _find_class(self.module, self.qualname)
        if cls is None or not (isinstance(cls, type) and issubclass(cls, HlmbridgeError)):
            exc: HlmbridgeError = FitError(f"{self.qualname}: {self.message}")
        else:
            exc = cls.__new__(cls)
            Exception.__init__(exc, self.message)
            exc.__dict__.update(self.attrs)
        exc.remote_traceback = self.remote_traceback  # type: ignore[attr-defined]
        return exc


def _find_class(module: str, qualname: str) -> Any:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module, fromlist=["_"])
        except Exception:  # noqa: BLE001 - an unknown module just means "not ours"
            return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _failure(exc: BaseException) -> _Failure:
    attrs = {}
    for k, v in vars(exc).items():
        try:
            pickle.dumps(v)
        except Exception:  # noqa: BLE001 - drop what cannot travel
            continue
        attrs[k] = v
    if isinstance(exc, HlmbridgeError):
        cls = type(exc)
        message = str(exc)
    else:
        cls = FitError
        message = f"{type(exc).__name__}: {exc}"
    return _Failure(cls.__module__, cls.__qualname__, message, attrs, traceback.format_exc())


# ---------------------------------------------------------------- the __main__ guard

#: The folder where a worker that finds itself importing an unguarded main script leaves a note
#: for the fit_many that started it (set in the workers' environment while it starts them).
_GUARD_NOTE_ENV = "HLMBRIDGE_GUARD_NOTE_DIR"


def _guard_message(caller: str, script: str) -> str:
    return (f"{caller} was called while a worker process was importing the main script {script} (as "
            "'spawn' worker processes do): the script calls it outside an `if __name__ == \"__main__\":` "
            "block, so every worker would call it again and start workers of its own (Python's "
            "multiprocessing refuses: \"An attempt has been made to start a new process before the current "
            "process has finished its bootstrapping phase\"). Put the script's calls under "
            "`if __name__ == \"__main__\":`")


def require_main_guard(caller: str) -> None:
    """Raise UsageError when called in a worker process that is still importing the main
    script (Python's ``multiprocessing.spawn`` bootstrapping phase), i.e. from an unguarded
    call at the script's top level; first leave a note for the ``fit_many`` that started the
    worker, which then raises the same error. Anywhere else it does nothing.

    >>> require_main_guard("fit_many")   # the main process, or a worker that has started
    """
    if not getattr(multiprocessing.current_process(), "_inheriting", False):
        return
    script = "(unknown)"
    frame = sys._getframe(1)
    while frame is not None:  # the script runs as __mp_main__ (runpy) until it has been imported
        if frame.f_globals.get("__name__") == "__mp_main__":
            script = str(frame.f_globals.get("__file__") or script)
            break
        frame = frame.f_back
    folder = os.environ.get(_GUARD_NOTE_ENV)
    if folder:
        with contextlib.suppress(OSError):
            with open(os.path.join(folder, f"unguarded-{os.getpid()}"), "w", encoding="utf-8") as note:
                note.write(f"{caller}\n{script}")
    raise UsageError(_guard_message(caller, script))


# ---------------------------------------------------------------- worker side

_WORKER_FRAMES: OrderedDict[str, pd.DataFrame] = OrderedDict()


def _worker_frame(frame: _Frame) -> pd.DataFrame:
    data = _WORKER_FRAMES.get(frame.token)
    if data is None:
        data = pickle.loads(frame.payload)
        _WORKER_FRAMES[frame.token] = data
        while len(_WORKER_FRAMES) > _FRAME_CACHE_SIZE:
            _WORKER_FRAMES.popitem(last=False)
    else:
        _WORKER_FRAMES.move_to_end(frame.token)
    return data


def _r_conversion(engine: str) -> contextlib.AbstractContextManager[Any]:
    """rpy2's default conversion rules, set in the current context.

    rpy2 keeps its conversion rules in a ``contextvars.ContextVar``; executors that run
    each task in a fresh context on a worker thread (Dask does) would otherwise see none
    and every R call fails with "Conversion rules for `rpy2.robjects` appear to be missing".
    """
    if engine != "lme4":
        return contextlib.nullcontext()
    from hlmbridge.engines import get_engine

    ok, _ = get_engine("lme4").available()  # starts R (quietly) the first time
    if not ok:
        return contextlib.nullcontext()  # the fit itself raises EngineUnavailableError
    import rpy2.robjects as ro
    from rpy2.robjects.conversion import localconverter

    return localconverter(ro.default_converter)


def _run_job(model: ModelSpec | str, frame: _Frame, engine: str, reml: bool | None,
             options: Mapping[str, Any] | None = None) -> tuple[bool, Any]:
    """Fit one job in a worker: ``(True, FitResult)`` or ``(False, _Failure)``; never raises."""
    try:
        from hlmbridge.fit import fit

        data = _worker_frame(frame)
        with _r_conversion(engine):
            res = fit(model, data, engine=engine, reml=reml, **dict(options or {}))
        # The design (y, X, Z: as large as the data) stays in the worker; post-fit methods
        # on the returned result ask for a refit with hlmbridge.fit.
        return True, dataclasses.replace(res, design=None)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return False, _failure(exc)


# ---------------------------------------------------------------- caller side


def _as_job(job: Any, k: int) -> FitJob:
    out = _read_job(job, k)
    if not isinstance(out.options, Mapping):
        raise UsageError(f"job {k}: options must be a dict of keywords of hlmbridge.fit, got "
                         f"{type(out.options).__name__}")
    return out


def _read_job(job: Any, k: int) -> FitJob:
    if isinstance(job, FitJob):
        return job
    if isinstance(job, Mapping):
        extra = set(job) - {"model", "spec", "data", "engine", "reml", "options"}
        if extra:
            raise UsageError(f"job {k}: unknown key(s) {sorted(extra)}; use spec/model, data, engine, reml, options")
        model = job.get("spec", job.get("model"))
        if model is None or "data" not in job:
            raise UsageError(f"job {k}: a dict job needs 'spec' (or 'model') and 'data'")
        return FitJob(model, job["data"], job.get("engine", "lme4"), job.get("reml"), job.get("options") or {})
    if isinstance(job, Sequence) and not isinstance(job, str) and len(job) in (2, 3, 4, 5):
        return FitJob(*job)
    raise UsageError(f"job {k}: expected a (spec, data, engine) triple, a dict or a FitJob, got {type(job).__name__}")


def _frames(jobs: list[FitJob]) -> list[_Frame]:
    by_id: dict[int, _Frame] = {}
    out = []
    for k, job in enumerate(jobs):
        if not isinstance(job.data, pd.DataFrame):
            raise UsageError(f"job {k}: data must be a pandas DataFrame, got {type(job.data).__name__}")
        frame = by_id.get(id(job.data))
        if frame is None:
            payload = pickle.dumps(job.data, protocol=pickle.HIGHEST_PROTOCOL)
            frame = by_id[id(job.data)] = _Frame(hashlib.blake2b(payload, digest_size=16).hexdigest(), payload)
        out.append(frame)
    return out


# The environment before R started: starting embedded R sets R_HOME and prepends R's
# library directories (and the system's, e.g. /usr/lib/x86_64-linux-gnu) to
# LD_LIBRARY_PATH; a Python started with that environment can load another build's
# libpython (seen here: Dask workers failing on `import _ssl`). `hlmbridge` never imports
# rpy2 on import, so this snapshot normally predates R.
_LAUNCH_ENV = {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "R_HOME")}


@contextlib.contextmanager
def clean_child_env() -> Iterator[None]:
    """Start worker processes inside this block with the environment from before R started.

    Use it around creating a process pool or a Dask ``LocalCluster`` in a process that
    has already run an lme4 fit. Outside such processes it changes nothing.

    Examples
    --------
    >>> from hlmbridge.parallel import clean_child_env
    >>> with clean_child_env():
    ...     pass
    """
    saved = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    changed = saved != _LAUNCH_ENV
    if changed:
        _set_env(_LAUNCH_ENV)
    try:
        yield
    finally:
        if changed:
            _set_env(saved)


def _set_env(values: Mapping[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def default_executor(max_workers: int | None = None) -> ProcessPoolExecutor:
    """A process pool of ``os.cpu_count()`` workers started with ``spawn`` (R-safe)."""
    return ProcessPoolExecutor(max_workers=max_workers or os.cpu_count() or 1,
                               mp_context=multiprocessing.get_context("spawn"))


class _Progress:
    """A plain-text progress line on a stream (``\\r``-updated on a terminal)."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        self.t0 = time.perf_counter()
        self.failed = 0
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def update(self, done: int) -> None:
        if self.stream is None:
            return
        width = 30
        fill = int(width * done / self.total) if self.total else width
        bar = "#" * fill + "." * (width - fill)
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"fit_many [{bar}] {done}/{self.total} fits{failed}, {time.perf_counter() - self.t0:.1f}s"
        end = "\n" if (not self.tty or done == self.total) else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def fit_many(
    jobs: Iterable[Any],
    executor: Executor | None = None,
    *,
    progress: bool | TextIO = True,
    return_exceptions: bool = False,
    max_workers: int | None = None,
) -> list[FitResult | HlmbridgeError]:
    """Fit many models in worker processes; results in job order.

    Parameters
    ----------
    jobs
        ``(spec, data, engine)`` triples (``spec`` a ModelSpec, Stata command or lme4
        formula; a fourth item is ``reml``, a fifth a dict of other keywords of
        :func:`hlmbridge.fit` such as ``weights=``), dicts with keys ``spec`` (or ``model``),
        ``data``, ``engine``, ``reml``, ``options``, or :class:`FitJob` objects.
    executor
        Any :class:`concurrent.futures.Executor` whose workers are separate processes
        (a ``ProcessPoolExecutor``, a Dask client's ``get_executor()`` ...). It is used,
        not shut down. Default: a ``spawn`` process pool of ``max_workers`` (default
        ``os.cpu_count()``) workers, shut down afterwards.
    progress
        True: a plain-text progress bar on stderr; False: silent; a text stream: there.
    return_exceptions
        False (default): the first job to fail raises
        its HlmbridgeError here and the pending jobs are cancelled. True: a failed job's
        error is returned in its place.
    max_workers
        Workers of the default pool (ignored when ``executor`` is given).

    Returns
    -------
    list
        One :class:`~hlmbridge.results.fit_result.FitResult` per job (or its error, see
        ``return_exceptions``), in job order. The results carry every number but not the
        design (as large as the data, it stays in the worker): ``ranef()``, ``predict()``,
        ``with_df()`` ... on them ask for a refit with :func:`hlmbridge.fit`.

    Examples
    --------
    >>> import hlmbridge
    >>> df = hlmbridge.datasets.hsb("combined")
    >>> out = hlmbridge.fit_many([{"spec": "mixed mathach || id:", "data": df, "engine": "statsmodels"},
    ...                           ("mixed mathach || nosuchvar:", df, "statsmodels")],
    ...                          progress=False, return_exceptions=True, max_workers=2)
    >>> type(out[0]).__name__, isinstance(out[1], hlmbridge.HlmbridgeError)
    ('FitResult', True)
    """
    require_main_guard("fit_many")
    job_list = [_as_job(j, k) for k, j in enumerate(jobs)]
    if not job_list:
        return []
    frames = _frames(job_list)
    stream: TextIO | None
    if progress is True:
        stream = sys.stderr
    elif progress is False or progress is None:
        stream = None
    else:
        stream = progress  # type: ignore[assignment]
    run = _Run(job_list, frames, _Progress(len(job_list), stream), return_exceptions)
    try:
        run.bar.update(0)
        note = ""
        if executor is None:
            workers = min(max_workers or os.cpu_count() or 1, len(job_list))
            died = run.on_own_pools(workers)
            if died:  # the one retry: each alone in a fresh worker process
                died = run.isolated(died, workers)
            note = "retried once alone in a fresh worker process, it died again"
        else:
            died = run.on_executor(executor, list(range(len(job_list))))
            if any(isinstance(e, BrokenExecutor) for e in died.values()):
                note = "the executor is broken (a worker died), so it was not retried"
            elif died:
                died = run.on_executor(executor, sorted(died))
                note = "retried once on the same executor, it failed again"
        for k in sorted(died):
            run.settle(k, False, _died_error(k, job_list[k], died[k], note))
        return run.results
    finally:
        run.close()


def _died_error(k: int, job: FitJob, exc: BaseException, note: str) -> FitError:
    label = job.model if isinstance(job.model, str) else getattr(job.model, "_source", None) or repr(job.model)
    return FitError(f"job {k} ({job.engine}: {label}): the worker process running it died "
                    f"({type(exc).__name__}: {exc}); {note}", engine=job.engine)


class _Run:
    """The state of one fit_many call: results in job order, progress, the submit loops."""

    def __init__(self, jobs: list[FitJob], frames: list[_Frame], bar: _Progress, return_exceptions: bool) -> None:
        self.jobs = jobs
        self.frames = frames
        self.bar = bar
        self.return_exceptions = return_exceptions
        self.results: list[Any] = [None] * len(jobs)
        self.done = 0
        #: Where a worker importing an unguarded main script leaves its note (require_main_guard).
        self.notes = tempfile.mkdtemp(prefix="hlmbridge-fit-many-")

    def close(self) -> None:
        shutil.rmtree(self.notes, ignore_errors=True)

    def submit(self, ex: Executor, k: int) -> Future:
        job = self.jobs[k]
        with clean_child_env():  # a process pool starts its workers on submit
            saved = os.environ.get(_GUARD_NOTE_ENV)
            os.environ[_GUARD_NOTE_ENV] = self.notes
            try:
                return ex.submit(_run_job, job.model, self.frames[k], job.engine, job.reml, dict(job.options))
            finally:
                _set_env({_GUARD_NOTE_ENV: saved})

    def refuse_unguarded_main(self) -> None:
        """Raise the worker's UsageError when a worker died importing an unguarded main script."""
        try:
            names = sorted(os.listdir(self.notes))
        except OSError:
            return
        for name in names:
            try:
                with open(os.path.join(self.notes, name), encoding="utf-8") as note:
                    caller, _, script = note.read().partition("\n")
            except OSError:
                continue
            raise UsageError(_guard_message(caller or "fit_many", script or "(unknown)"))

    def settle(self, k: int, ok: bool, value: Any) -> None:
        """Record job ``k``'s result or error (raised here unless return_exceptions)."""
        self.done += 1
        if not ok:
            value = value.rebuild() if isinstance(value, _Failure) else value
            self.bar.failed += 1
            if not self.return_exceptions:
                self.bar.update(self.done)
                raise value
        self.results[k] = value
        self.bar.update(self.done)

    def collect(self, fut: Future, k: int, died: dict[int, BaseException]) -> None:
        """Settle a finished future, or note that its worker died."""
        try:
            ok, value = fut.result()
        except Exception as exc:  # noqa: BLE001 - BrokenProcessPool, a lost Dask worker, ...
            self.refuse_unguarded_main()  # never retried: every new worker would die the same way
            died[k] = exc
            return
        self.settle(k, ok, value)

    def on_own_pools(self, workers: int) -> dict[int, BaseException]:
        """Every job on default pools, one job per worker in flight; a broken pool is replaced."""
        queue = deque(range(len(self.jobs)))
        died: dict[int, BaseException] = {}
        while queue:
            pool = default_executor(workers)
            inflight: dict[Future, int] = {}
            try:
                while queue or inflight:
                    while queue and len(inflight) < workers:
                        k = queue.popleft()
                        inflight[self.submit(pool, k)] = k
                    finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    broken = False
                    for fut in finished:
                        self.collect(fut, inflight.pop(fut), died)
                        broken = broken or isinstance(fut.exception(), BrokenExecutor)
                    if broken:  # the pool fails every job it holds: settle them, start another
                        for fut in wait(inflight).done:
                            self.collect(fut, inflight.pop(fut), died)
                        break
            finally:
                for fut in inflight:
                    fut.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
        return died

    def isolated(self, jobs: dict[int, BaseException], workers: int) -> dict[int, BaseException]:
        """Run each of ``jobs`` alone in its own fresh one-worker pool, ``workers`` at a time."""
        died: dict[int, BaseException] = {}
        keys = sorted(jobs)
        for start in range(0, len(keys), workers):
            pools: list[ProcessPoolExecutor] = []
            try:
                futures: dict[Future, int] = {}
                for k in keys[start:start + workers]:
                    pools.append(default_executor(1))
                    futures[self.submit(pools[-1], k)] = k
                for fut in as_completed(futures):
                    self.collect(fut, futures[fut], died)
            finally:
                for pool in pools:
                    pool.shutdown(wait=True, cancel_futures=True)
        return died

    def on_executor(self, ex: Executor, keys: list[int]) -> dict[int, BaseException]:
        """``keys`` on a caller's executor (used, never shut down)."""
        died: dict[int, BaseException] = {}
        futures: dict[Future, int] = {}
        try:
            for k in keys:
                try:
                    futures[self.submit(ex, k)] = k
                except BrokenExecutor as exc:
                    died[k] = exc
            for fut in as_completed(futures):
                self.collect(fut, futures[fut], died)
        finally:
            for fut in futures:
                fut.cancel()
        return died
