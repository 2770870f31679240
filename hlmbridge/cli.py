"""The ``hlmbridge`` command line.

Subcommands: ``validate`` (the main job), ``fit``, ``translate``, ``import-stata``,
``summarize``. Exit status: 0 all good; 1 a mismatch or missing number; 2 a usage or
set-up error (one line on stderr, no traceback): nothing compared, an engine asked for or
named by the fixtures that cannot run, a fixture that is unused (not a case and no known
format), truncated, holding an unknown key or not UTF-8, fixture files that differ from their
``MANIFEST.toml`` (``validate --update-manifest`` accepts a deliberate change), an empty or
unreadable data file, a log with no output.

Examples
--------
>>> from hlmbridge.cli import build_parser
>>> build_parser().parse_args(["validate", "--engine", "statsmodels"]).engine
['statsmodels']

``--data`` (and ``summarize``'s file) takes a file, or a bundled data set by name
(:data:`hlmbridge.datasets.NAMES`: ``hsb``, ``hsb1``, ``hsb2``, ``sleepstudy``):
``hlmbridge fit "mixed mathach ses || id:" --data hsb``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hlmbridge.errors import HlmbridgeError, UsageError

__all__ = ["build_parser", "main"]

#: The bundled data sets' names, as the help lists them (hlmbridge.datasets.NAMES; checked by tests).
_DATA_NAMES = "hsb, hsb1, hsb2, sleepstudy"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="hlmbridge", description="Multilevel models through lme4 and statsmodels, "
                                "checked against Stata mixed.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="cross-check every reference case against every engine")
    v.add_argument("--fixtures", help="fixture directory or file (default: fixtures/stata)")
    v.add_argument("--data", help="data file (.dta/.csv) or a bundled data set (" + _DATA_NAMES + "; default: hsb)")
    v.add_argument("--engine", action="append", help="engine (repeatable; default: every available engine)")
    v.add_argument("--case", action="append", help="case name or shell pattern (repeatable; default: all)")
    v.add_argument("--format", default="text", choices=["text", "json", "markdown", "junit"])
    v.add_argument("--out", help="write the report here instead of stdout")
    v.add_argument("--jobs", type=int, default=None, help="parallel fits (through hlmbridge.fit_many)")
    v.add_argument("--quiet", action="store_true", help="no progress on stderr")
    v.add_argument("--update-manifest", action="store_true",
                   help="accept deliberate changes: rewrite the fixtures' MANIFEST.toml (every file with its sha256, "
                   "cases and numbers) from the files there, list what changed, then validate")
    f = sub.add_parser("fit", help="fit a model with each engine and show Stata-style output")
    f.add_argument("model", help="Stata mixed command or lme4 formula")
    f.add_argument("--data", required=True, help="data file (.dta or .csv) or a bundled data set (" + _DATA_NAMES
                   + ")")
    f.add_argument("--engine", action="append", help="engine (repeatable; default: every available engine)")
    f.add_argument("--reml", action="store_true", help="fit by REML")
    f.add_argument("--plot", metavar="DIR", help="write caterpillar, residual and QQ plots (PNG) per engine "
                   "into DIR (needs matplotlib: pip install 'hlmbridge[plot]')")
    t = sub.add_parser("translate", help="show a model in every syntax")
    t.add_argument("model")
    t.add_argument("--reml", action="store_true", default=None)
    i = sub.add_parser("import-stata", help="write reference fixtures from a Stata log")
    i.add_argument("logfile")
    i.add_argument("--out", required=True, help="output directory")
    i.add_argument("--lenient", action="store_true", help="list unparseable blocks instead of stopping")
    i.add_argument("--overrides", help="per-row tolerance overrides (TOML, see fixtures/README.md)")
    s = sub.add_parser("summarize", help="Stata-style summarize of a data file")
    s.add_argument("file", help="data file (.dta or .csv) or a bundled data set (" + _DATA_NAMES + ")")
    s.add_argument("--by", help="one row per group of this variable (egen tag ... if tag==1)")
    return p


def _check_out(path: str | None) -> None:
    if path is None:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"cannot write the report to {path}")


def _validate(a: argparse.Namespace) -> int:
    from hlmbridge.check.report import render
    from hlmbridge.check.validate import _stderr_progress, validate

    _check_out(a.out)
    if a.update_manifest:
        from hlmbridge.reference.fixtures import FIXTURE_ROOT
        from hlmbridge.reference.manifest import update_manifest

        mpath, changes = update_manifest(a.fixtures if a.fixtures is not None else FIXTURE_ROOT)
        for line in changes:
            sys.stderr.write(f"manifest: {line}\n")
        said = f"rewritten, {len(changes)} change(s)" if changes else "unchanged"
        sys.stderr.write(f"manifest: {mpath} {said}\n")
    report = validate(a.fixtures, None if a.data is None else _load_data(a.data), a.engine, a.case, jobs=a.jobs,
                      progress=None if a.quiet else _stderr_progress)
    text = render(report, a.format)
    if a.out:
        try:
            Path(a.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the report to {a.out}: {exc.strerror}") from exc
        print(("OK: " if report.ok else "FAIL: ") + report.summary_line())
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        if a.format != "text":
            sys.stderr.write(("OK: " if report.ok else "FAIL: ") + report.summary_line() + "\n")
    return 0 if report.ok else 1


def _load_data(data: str) -> Any:
    """A ``--data`` argument as a frame: a .dta/.csv file, or a bundled data set by name
    (:func:`hlmbridge.datasets.resolve`; neither is a DataError listing the names)."""
    from hlmbridge import datasets
    from hlmbridge.check.validate import load_data

    what = datasets.resolve(data)
    return datasets.load(what) if isinstance(what, str) else load_data(what)


def _read_data_while_r_starts(data: str, engines: Sequence[str] | None) -> Any:
    """The data (a file or a bundled data set's name) as a frame, read in a second thread while
    this one starts R.

    Loading lme4 into R takes 1.3-2 s, all of it inside R with Python's GIL released; reading
    the file and importing pandas, numpy and the fit's modules take 0.4-0.6 s of Python. R is
    started, and later used, only by this (the calling) thread; the second thread never touches
    R. Without lme4 among the engines the data are read here directly; neither a file nor a name
    is an error before R starts.
    """
    from hlmbridge import datasets
    from hlmbridge.check.validate import load_data  # noqa: F401  (pandas and numpy: loaded here, before R starts)

    datasets.resolve(data)
    if engines and "lme4" not in engines:
        return _load_data(data)
    import threading

    box: dict[str, Any] = {}

    def read() -> None:
        try:
            box["data"] = _load_data(data)
            import hlmbridge.engines.lme4
            import hlmbridge.fit
            import hlmbridge.results.display  # noqa: F401  (what the fit and its table import next)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    reader = threading.Thread(target=read, name="hlmbridge-read-data", daemon=True)
    reader.start()
    try:
        from hlmbridge.engines import r_session

        try:
            r_session.session()
        except HlmbridgeError:
            pass  # R did not start: said in its place, when the engines are resolved
    finally:
        reader.join()
    if "error" in box:
        raise box["error"]
    return box["data"]


def _fit(a: argparse.Namespace) -> int:
    data = _read_data_while_r_starts(a.data, a.engine)

    import pandas as pd

    import hlmbridge
    from hlmbridge.check.validate import resolve_engines

    engines = resolve_engines(a.engine)
    results = {}
    from hlmbridge.errors import UnsupportedSpecError

    for eng in engines:
        try:
            res = hlmbridge.fit(a.model, data, engine=eng, reml=True if a.reml else None)
        except UnsupportedSpecError as exc:
            from hlmbridge.spec.translate import parse_any

            if a.engine is not None or len(engines) == 1 or not parse_any(a.model).is_glmm:
                raise
            # A GLMM on every engine by default: statsmodels (no ML GLMM) says why, in its place.
            print(f"== {eng} ==\nrefused: {exc}\n")
            continue
        results[eng] = res
        print(f"== {eng} ==")
        print(res.summary())
        if a.plot:
            from hlmbridge.results.plots import save_plots

            for path in save_plots(res, a.plot, prefix=f"{eng}_"):
                print(f"wrote {path}")
        print()
    parts = []
    for eng, res in results.items():
        fx = res.fixed.set_index("stata_term")[["estimate", "std_error"]]
        rn = res.random.set_index("stata_term")[["estimate", "std_error"]]
        parts.append(pd.concat([fx, rn]).add_prefix(f"{eng}:"))
    side = pd.concat(parts, axis=1)
    ll = {f"{e}:estimate": r.loglik for e, r in results.items()}
    side.loc["loglik"] = pd.Series(ll)
    print(side.to_string(float_format=lambda x: f"{x:.7g}"))
    return 0


def _translate(a: argparse.Namespace) -> int:
    from hlmbridge.spec.translate import translate

    print(translate(a.model, reml=a.reml))
    return 0


def _import(a: argparse.Namespace) -> int:
    from hlmbridge.reference.fixtures import import_stata

    paths, parsed = import_stata(a.logfile, a.out, lenient=a.lenient, overrides=a.overrides)
    if parsed.encoding != "utf-8":
        print(f"note: {a.logfile} is not UTF-8; read it as {parsed.encoding} (recorded in each fixture's [source])")
    print(f"wrote {len(paths)} fixture files to {a.out}")
    from hlmbridge.reference.manifest import find_manifest

    print(f"recorded them in {find_manifest(a.out)} (hlmbridge validate checks the files against it)")
    from hlmbridge.reference.fixtures import boundary_cases

    for case in boundary_cases(parsed):
        print(f"note: {case} is a boundary fit (a correlation within 1e-3 of +-1 in Stata's printed estimates): its "
              "variance-component SEs and CIs are marked explained for a singular engine fit; Stata's estimates "
              "there may stop short of the optimum, so validate may find them off: a tolerance measured for it "
              "goes in an overrides file (--overrides)" if not a.overrides else
              f"note: {case} is a boundary fit: its variance-component SEs and CIs are marked explained for a "
              "singular engine fit")
    for bad in parsed.invalid:
        print(f"note: line {bad.line} `{bad.command}`: {bad.reason}; the estimation context is unchanged")
    for u in parsed.unchecked:
        print(f"note: line {u.line} `{u.command}`: {u.reason}")
    if parsed.problems:
        print(f"{len(parsed.problems)} block(s) skipped (--lenient), each with its line:", file=sys.stderr)
    for prob in parsed.problems:
        print(f"problem: {prob}", file=sys.stderr)
    return 1 if parsed.problems else 0


def _summarize(a: argparse.Namespace) -> int:
    from hlmbridge.data import summarize
    from hlmbridge.display_data import format_summarize

    print(format_summarize(summarize(_load_data(a.file), by_group=a.by)))
    return 0


_EXIT_HOOK: list[bool] = []


def _skip_the_last_collection_at_exit() -> None:
    """At exit, freeze the garbage collector's objects (``gc.freeze``) after every other exit
    handler has run: the interpreter's final collections then skip them.

    With pandas and R loaded those collections cost about 0.2 s, after the output is written;
    an ``hlmbridge`` run holds no object whose clean-up waits for them (its files are closed
    when written, R is ended by its own exit handler). Registered once per process.
    """
    if not _EXIT_HOOK:
        import atexit
        import gc

        atexit.register(gc.freeze)  # registered before R starts: runs after R's exit handler
        _EXIT_HOOK.append(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    _skip_the_last_collection_at_exit()
    parser = build_parser()
    a = parser.parse_args(argv)
    handler = {"validate": _validate, "fit": _fit, "translate": _translate, "import-stata": _import,
               "summarize": _summarize}[a.command]
    try:
        return handler(a)
    except HlmbridgeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"hlmbridge {a.command}: error: {msg}", file=sys.stderr)
        pointer = getattr(exc, "pointer", "")
        if pointer:
            print(pointer, file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
