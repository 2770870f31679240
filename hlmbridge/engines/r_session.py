"""The embedded R of the lme4 engine: starting it, and ending it when the process exits.

Part of the lme4 adapter (``hlmbridge/engines/lme4.py`` fits; this module owns the R process):
the only other module that imports rpy2, and lazily. It imports neither numpy nor pandas,
so that R can start in the main thread while another thread imports them and reads the data
(``hlmbridge fit``, issue 13, cold start).

Starting: a child process first checks that R starts here (a wrong ``R_HOME`` would abort this
process); a passed check is kept in a stamp in the user's cache folder. Then rpy2 starts R,
``lme4`` is loaded and ``r/hlmbridge.R`` is sourced into a private environment.

Ending: rpy2's exit handler runs a full R garbage collection before ending R (0.2 s with lme4
loaded), which R's own ``quit()`` does not do; :func:`_end_r` ends R as ``quit("no")`` does
(``.Last``, exit finalizers, graphics devices, R's temporary folder) without it.

Examples
--------
>>> from hlmbridge.engines import r_session
>>> isinstance(r_session.started(), bool)   # cheap: R starts only when session() is called
True
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hlmbridge.errors import DataError, EngineUnavailableError

__all__ = ["INSTALL_HINT", "r_source_path", "session", "started"]

INSTALL_HINT = (
    "the lme4 engine needs R (>= 4.2) with the lme4 package, and the Python package rpy2 "
    "(rpy2<3.6 for R older than 4.5): on Debian/Ubuntu run `bash scripts/install.sh`, or "
    "`apt-get install r-base-core r-cran-lme4` and `pip install 'rpy2>=3.5.17,<3.6'`"
)


def r_source_path(name: str = "hlmbridge.R") -> Path:
    """Where ``hlmbridge.R`` (or another file of ``r/``, e.g. the nlme engine's
    ``hlmbridge_nlme.R``) lives: the installed package's copy (a wheel carries one), else the
    source tree's ``r/`` folder (see :func:`hlmbridge.datasets.resource_path`)."""
    from hlmbridge.datasets import resource_path

    try:
        return resource_path("r", name)
    except DataError as exc:
        raise EngineUnavailableError(str(exc)) from None


def _r_start_stamp() -> tuple[Path, dict[str, Any]] | None:
    """Where a passed R start check for this exact set-up is recorded, and what it was keyed on;
    None when there is no user cache folder to keep it in.

    The key is everything that decides whether an embedded R can start here: this Python, the
    rpy2 installed (its files' size and time), ``R_HOME`` and ``LD_LIBRARY_PATH`` as set, the ``R``
    found on ``PATH``, and R's home folder with the files R needs to start (``libR.so`` and the
    base package) as they are on disk now. The file name is a hash of the key, so a changed
    environment (another ``R_HOME``, R upgraded or removed, rpy2 reinstalled) finds no stamp and
    checks again. The folder is ``$XDG_CACHE_HOME/hlmbridge`` or ``~/.cache/hlmbridge``.
    """
    import hashlib
    import json
    import shutil
    import subprocess
    import sys
    from importlib.util import find_spec

    def ident(path: str | None) -> list[Any] | None:  # a file as it is now: path, size, mtime; None if absent
        if not path:
            return None
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return [path, None]
        return [path, st.st_size, st.st_mtime_ns]

    try:
        rpy2_spec, api_spec = find_spec("rpy2"), find_spec("_rinterface_cffi_api")
    except (ImportError, ValueError):
        return None
    if rpy2_spec is None or rpy2_spec.origin is None:
        return None
    cache = os.environ.get("XDG_CACHE_HOME", "")
    try:
        folder = (Path(cache) if os.path.isabs(cache) else Path.home() / ".cache") / "hlmbridge"
    except RuntimeError:  # no home folder
        return None
    r_exe = shutil.which("R")
    r_home = os.environ.get("R_HOME")
    home = r_home
    if not home and r_exe:  # where rpy2 will look: `R RHOME`, as rpy2.situation.get_r_home runs it
        try:
            home = subprocess.run([r_exe, "RHOME"], capture_output=True, text=True, timeout=60,
                                  check=False).stdout.strip().splitlines()[-1:]
            home = home[0].strip() if home else None
        except (OSError, subprocess.SubprocessError):
            home = None
    key: dict[str, Any] = {
        "python": ident(sys.executable),
        "rpy2": [ident(rpy2_spec.origin), ident(api_spec.origin if api_spec else None)],
        "R_HOME": r_home,
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH"),
        "R": [ident(r_exe), ident(os.path.realpath(r_exe)) if r_exe else None],
        "home": home,
        "home_files": [ident(os.path.join(home, *parts)) for parts in
                       (("lib", "libR.so"), ("library", "base", "R", "base.rdb"), ("etc", "ldpaths"))]
        if home else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / f"r-starts-{digest}.json", key


def _check_r_starts() -> str | None:
    """Start R once in a child process before R is loaded into this one.

    An embedded R that cannot start (a wrong ``R_HOME``, a broken installation) ends the
    whole Python process ("Fatal error: unable to open the base package"); in a child that
    is an exit status, reported here as an EngineUnavailableError saying what to fix. The
    child costs about half a second, so a passed check is recorded in a small stamp in the
    user's cache folder (see :func:`_r_start_stamp`) and later processes with the same set-up
    skip it; nothing is checked when R runs already in this process.

    Returns the ``LD_LIBRARY_PATH`` R adds (what rpy2 would start one more R to ask for), when
    the check or its stamp knows it.
    """
    import json
    import subprocess
    import sys

    if not sys.executable:  # embedded Python without an interpreter to start: nothing to check with
        return None
    if "rpy2.rinterface" in sys.modules:
        from rpy2.rinterface_lib import embedded

        if embedded.isready():
            return None
    stamp = _r_start_stamp()
    if stamp is not None:
        try:
            recorded = json.loads(stamp[0].read_text(encoding="utf-8"))
            if recorded.get("key") == stamp[1] and isinstance(recorded.get("ld_library_path"), str):
                return str(recorded["ld_library_path"])
        except (OSError, ValueError, AttributeError):
            pass  # no stamp (or an unreadable one): check
    code = ("import sys, warnings\nwarnings.simplefilter('ignore')\ntry:\n    import rpy2.rinterface as ri\n"
            "except ImportError:\n    sys.exit(3)\nfrom rpy2.rinterface_lib import embedded\n"
            f"embedded.set_initoptions(tuple(embedded.get_initoptions()) + {R_START_OPTIONS!r})\n"
            "(getattr(ri, 'initr_simple', None) or ri.initr)()  # rpy2 3.6 has initr only\n"
            "from rpy2.rinterface_lib import openrlib\nimport json\n"
            "print('hlmbridge-ld-library-path:' + json.dumps(str(getattr(openrlib, 'LD_LIBRARY_PATH', ''))))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineUnavailableError(f"could not start R in a child process to check it ({exc}); {INSTALL_HINT}") from exc
    if proc.returncode == 3:  # no rpy2, which the import in this process reports
        return None
    if proc.returncode == 0:
        said = [ln for ln in proc.stdout.splitlines() if ln.startswith("hlmbridge-ld-library-path:")]
        try:
            ld_path = json.loads(said[-1].partition(":")[2]) if said else None
        except ValueError:
            ld_path = None
        if stamp is not None and isinstance(ld_path, str):
            try:  # written whole under another name, then renamed: a reader never sees half a stamp
                stamp[0].parent.mkdir(parents=True, exist_ok=True)
                tmp = stamp[0].with_name(f"{stamp[0].name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"key": stamp[1], "ld_library_path": ld_path}), encoding="utf-8")
                os.replace(tmp, stamp[0])
            except OSError:
                pass  # a read-only cache folder: check again next time
        return ld_path if isinstance(ld_path, str) else None
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    said = "; ".join(lines[-3:]) or "no message"
    status = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
    r_home = os.environ.get("R_HOME")
    if r_home is not None:
        fix = (f"the environment variable R_HOME is {r_home!r}: unset it, or set it to the folder that "
               "`R RHOME` prints")
    else:
        fix = "check that `R RHOME` prints R's home folder and that `Rscript -e 1` runs"
    raise EngineUnavailableError(f"R does not start (a child process starting it ended with {status}: {said}); "
                                 f"{fix} (otherwise: {INSTALL_HINT})")


#: Options R starts with, added to rpy2's (``--quiet --no-save``): R runs no user code as it
#: starts. Embedded R otherwise runs, like an interactive R, the user's profile (the file named
#: by ``R_PROFILE_USER``, else ``.Rprofile`` in the working folder, else ``~/.Rprofile``) and
#: restores the working folder's saved workspace (``.RData``, with its ``.First`` function),
#: in the Python process: a ``quit()`` in either ended Python silently with exit status 0, and
#: a profile's ``options()`` (contrasts, lmerControl) would change what lmer fits. What
#: configures R itself still applies: the environment files (``Renviron``, ``.Renviron``:
#: ``R_LIBS`` and the like, where lme4 may be installed) and the site profile
#: (``Rprofile.site``, the administrator's). ``Rscript --vanilla`` skips those too.
R_START_OPTIONS = ("--no-init-file", "--no-restore")


def _set_start_options() -> None:
    """Add :data:`R_START_OPTIONS` to rpy2's options for starting R (before R starts)."""
    from rpy2.rinterface_lib import embedded

    if embedded.isinitialized():
        return
    current = tuple(embedded.get_initoptions())
    embedded.set_initoptions(current + tuple(o for o in R_START_OPTIONS if o not in current))


#: R's initial heap (``R_NSIZE`` cons cells, ``R_VSIZE`` bytes of vectors; R's own defaults
#: are 350k and 6 MB). Loading lme4 needs about 1.6M cons cells and 21 MB of vectors, so from
#: the defaults R runs a dozen garbage collections while it loads (0.25 s of a 1.1 s start,
#: measured with ``Rscript``). A larger start skips them; the heap grows from there as R's
#: would, and nothing R computes depends on it. Not set where the caller set either variable.
R_START_HEAP = {"R_NSIZE": "3000000", "R_VSIZE": "64M"}


def _start_heap_in_environment() -> list[str]:
    """Put :data:`R_START_HEAP` into the environment for R to read as it starts, unless the
    caller set a heap size; returns the variables set (to remove once R has started)."""
    if any(name in os.environ for name in R_START_HEAP):
        return []
    os.environ.update(R_START_HEAP)
    return list(R_START_HEAP)


class _RSession:
    """The embedded R, with hlmbridge's functions in a private environment."""

    def __init__(self) -> None:
        from hlmbridge.engines.r_requirements import check, rpy2_version  # rpy2's series for this R

        check()
        r_ld_path = _check_r_starts()  # a wrong R_HOME would otherwise abort this process
        saved_ld_path = os.environ.get("LD_LIBRARY_PATH")
        heap_set = _start_heap_in_environment()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rpy2 warns about LD_LIBRARY_PATH on start-up
                import sys

                if r_ld_path is not None and "rpy2.rinterface_lib.openrlib" not in sys.modules:
                    # rpy2's first import starts one more R (Rscript) only to ask which
                    # LD_LIBRARY_PATH R adds; the start check has that answer already.
                    import rpy2.situation as situation

                    asked = situation.r_ld_library_path_from_subprocess
                    situation.r_ld_library_path_from_subprocess = lambda r_home: r_ld_path
                    try:
                        import rpy2.rinterface as ri
                    finally:
                        situation.r_ld_library_path_from_subprocess = asked
                import rpy2.rinterface as ri

                _set_start_options()  # importing rpy2.robjects starts R
                import rpy2.robjects as ro
            _replace_exit_handler(ri)
        except Exception as exc:  # ImportError, or R itself failing to start
            raise EngineUnavailableError(f"{INSTALL_HINT} (rpy2/R failed: {exc})") from exc
        finally:
            # Starting R rewrites LD_LIBRARY_PATH for the whole process; child processes
            # started later (worker pools, Dask) would then load R's libraries before their
            # own. R is loaded by now, so put the caller's value back.
            if saved_ld_path is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = saved_ld_path
            for name in heap_set:  # read once, when R starts: child processes get the caller's
                os.environ.pop(name, None)
        self.ro = ro
        from rpy2.robjects.conversion import Converter

        #: hlmbridge's own copy of rpy2's default rules, made once: see :meth:`converting`.
        self.converter = Converter("hlmbridge", template=ro.default_converter)
        self.ri = ri
        with self.converting():  # rpy2's rules are per thread: any thread may start R
            ok = ro.r('isTRUE(suppressMessages(requireNamespace("lme4", quietly = TRUE)))')[0]
            if not ok:
                raise EngineUnavailableError(f"{INSTALL_HINT} (R found, but not the lme4 package)")
            self.env = ro.r("new.env(parent = baseenv())")
            ro.r["sys.source"](str(r_source_path()), envir=self.env)
            self.fit = _Interruptible(self.env["hlmbridge_fit"])  # Ctrl-C stops a long fit
            self.glmer = _Interruptible(self.env["hlmbridge_glmer"])
            self.frame = self.env["hlmbridge_frame"]
            self.codes_factor = self.env["hlmbridge_codes_factor"]
            self.ordered = self.env["hlmbridge_ordered"]
            self.as_logical = ro.r["as.logical"]
            versions = self.env["hlmbridge_versions"]()
            self.versions = dict(zip(versions.names, versions, strict=True))
        self.versions["rpy2"] = rpy2_version()  # rpy2 3.6's `rpy2` is a namespace package: no __version__
        self.lock = threading.Lock()
        self._sourced: set[str] = set()

    def source_once(self, name: str) -> Any:
        """Source ``r/<name>`` into the private environment the first time it is asked for (the
        nlme engine's ``hlmbridge_nlme.R``, which uses hlmbridge.R's helpers); returns that
        environment. Call it holding :attr:`lock`, inside :meth:`converting`."""
        if name not in self._sourced:
            self.ro.r["sys.source"](str(r_source_path(name)), envir=self.env)
            self._sourced.add(name)
        return self.env

    @contextlib.contextmanager
    def converting(self) -> Iterator[Any]:
        """A context in which rpy2 converts with :attr:`converter` (rpy2 keeps its rules per
        thread, in a context variable, so any thread may call R inside it).

        rpy2's ``localconverter`` copies the rules on every entry, which empties the caches of
        their ``singledispatch`` functions: each fit then paid about 1 ms recomputing method
        resolution orders. This sets the one copy made at start-up instead, and restores the
        caller's rules on exit; nothing ever adds rules to that copy.
        """
        from rpy2.robjects import conversion

        token = conversion.converter_ctx.set(self.converter)
        try:
            yield self.converter
        finally:
            conversion.converter_ctx.reset(token)


_SESSION: _RSession | None = None
_SESSION_ERROR: EngineUnavailableError | None = None


_SESSION_LOCK = threading.Lock()


def started() -> bool:
    """Whether this process has started its R session (successfully)."""
    return _SESSION is not None


def session() -> _RSession:
    """The process's R session, started on first use; thread-safe (one thread starts R,
    threads arriving meanwhile wait for it). Raises EngineUnavailableError (the same one on
    every later call) when R, rpy2 or lme4 cannot be loaded."""
    global _SESSION, _SESSION_ERROR
    session = _SESSION
    if session is not None:
        return session
    with _SESSION_LOCK:
        if _SESSION is None:
            if _SESSION_ERROR is not None:
                raise _SESSION_ERROR
            try:
                _SESSION = _RSession()
            except EngineUnavailableError as exc:
                _SESSION_ERROR = exc
                raise
        return _SESSION


def _replace_exit_handler(ri: Any) -> None:
    """Swap rpy2's exit handler (``rinterface.endr``, registered when R starts) for
    :func:`_end_r`; nothing changes when rpy2 is not the version this was written for."""
    import atexit

    from rpy2.rinterface_lib import embedded, openrlib

    needed = ("R_dot_Last", "R_RunExitFinalizers", "Rf_KillAllDevices", "R_CleanTempDir", "Rf_endEmbeddedR")
    if not (embedded.isinitialized() and getattr(ri, "endr", None) is embedded.endr
            and hasattr(embedded, "RPY_R_Status") and all(hasattr(openrlib.rlib, f) for f in needed)):
        return
    atexit.unregister(ri.endr)  # a no-op when it was not registered
    atexit.register(_end_r)


def _end_r() -> None:
    """End the embedded R at exit as R's own ``quit("no")`` does (R_CleanUp): ``.Last``, the
    exit finalizers, the graphics devices, R's temporary folder; then ``Rf_endEmbeddedR``.

    rpy2's ``endr`` does the same plus a full garbage collection (``R_gc``), which R itself
    never runs at exit and which costs 0.2 s once lme4 is loaded.
    """
    from rpy2.rinterface_lib import embedded, openrlib

    ended = embedded.RPY_R_Status.ENDED.value
    rlib = openrlib.rlib
    with openrlib.rlock:
        if not embedded.isinitialized() or embedded.rpy2_embeddedR_isinitialized & ended:
            return
        rlib.R_dot_Last()
        rlib.R_RunExitFinalizers()
        rlib.Rf_KillAllDevices()
        rlib.R_CleanTempDir()
        rlib.Rf_endEmbeddedR(0)
        embedded.rpy2_embeddedR_isinitialized |= ended


class _Interruptible:
    """An R function called so that Ctrl-C (SIGINT) stops R and raises KeyboardInterrupt.

    rpy2 3.5 puts Python's own SIGINT handler back after starting R (R's handlers are off).
    While R computes, that handler runs only inside rpy2's ``R_ProcessEvents`` callback, where
    its KeyboardInterrupt is swallowed ("Exception ignored from cffi callback") and R never
    hears of it: the fit runs to its end. For the length of the call (main thread, default
    handler only) SIGINT instead sets R's ``R_interrupts_pending``: R stops at its next
    interrupt check, unwinds to top level (R stays usable) and the call raises
    KeyboardInterrupt. In other threads Python delivers SIGINT to the main thread anyway.
    """

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import signal

        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return self.function(*args, **kwargs)
        from rpy2.rinterface_lib import openrlib

        rlib = openrlib.rlib
        hits: list[int] = []

        def on_sigint(signum: int, frame: Any) -> None:
            hits.append(signum)
            rlib.R_interrupts_pending = 1

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            out = self.function(*args, **kwargs)
        except Exception as exc:
            if hits:
                raise KeyboardInterrupt("the lme4 fit was interrupted") from exc
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            if hits:
                rlib.R_interrupts_pending = 0
        if hits:  # SIGINT came while R was not checking: the call ended, the interrupt still counts
            raise KeyboardInterrupt("the lme4 fit was interrupted")
        return out
