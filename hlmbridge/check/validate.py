"""The main job: every reference case on the bundled data, every engine, one report.

Each distinct (model spec, engine) is fitted once and reused by every case that names
that model (parsed specs are compared, so ``qui mixed ...`` and ``mixed ...`` share a
fit). A model command with ``dfmethod()`` gets that df method on its fit
(``result.with_df``, no refit), so a table Stata printed with t and df is judged against t
and df. A fit that fails turns that case's numbers into *missing* rows carrying the
engine's message.

Validate cannot pass without checking: it fails when it compares nothing; when an engine
asked for (``engines``) or named by the fixtures (``[case] engines``; all of them when no
``engines`` are given) cannot run here (:class:`~hlmbridge.errors.EngineUnavailableError`,
never a silent fallback to the engines that can); when a fixture file is not a case and
declares no other format (a misspelled ``[case]``), is truncated, holds a key its table does
not have (``FORMAT_KEYS``), sits in a symlinked folder, or is not UTF-8
(:class:`~hlmbridge.errors.FixtureError`); when the files differ from the fixture set's
``MANIFEST.toml`` (a file missing, extra or changed: :mod:`hlmbridge.reference.manifest`,
checked before any fit); and when any number a fixture holds for an engine got no verdict (a
*missing* row). A mismatch on a fit the engine reports singular says so, and how a measured
tolerance is recorded (:data:`BOUNDARY_HINT`).

Examples
--------
>>> from hlmbridge.check.validate import select_cases
>>> from hlmbridge.reference.fixtures import load_references
>>> [r.case for r in select_cases(load_references(), ["L0174_mixed"])]
['L0174_mixed']
"""

from __future__ import annotations

import fnmatch
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hlmbridge.check.crosscheck import CheckReport, CheckRow, compare_engines, crosscheck, merge_reports
from hlmbridge.errors import EngineUnavailableError, HlmbridgeError, UsageError
from hlmbridge.reference.fixtures import Reference, load_references

__all__ = ["BOUNDARY_HINT", "load_data", "resolve_engines", "select_cases", "validate"]

Progress = Callable[[int, int, str], None]


def select_cases(refs: Sequence[Reference], cases: Sequence[str] | None) -> list[Reference]:
    """The references named by ``cases`` (exact names or shell patterns); all when None."""
    if not cases:
        return list(refs)
    names = [r.case for r in refs]
    chosen: dict[str, Reference] = {}
    for c in cases:
        hits = [r for r in refs if r.case == c or fnmatch.fnmatchcase(r.case, c)]
        if not hits:
            raise UsageError(f"unknown case {c!r}; valid cases: {', '.join(names)}")
        chosen.update((r.case, r) for r in hits)
    return [r for r in refs if r.case in chosen]


def resolve_engines(engines: Sequence[str] | None, required: Sequence[str] = ()) -> list[str]:
    """The engines to run: the named ones, else ``required``, else every available one.

    Every engine named or required must be able to run here: an unavailable one is an
    :class:`~hlmbridge.errors.EngineUnavailableError` saying why, never skipped.
    """
    from hlmbridge.engines import ENGINES, available_engines, get_engine

    known = list(ENGINES)
    if engines:
        unknown = [e for e in engines if e not in known]
        if unknown:
            raise UsageError(f"unknown engine {unknown[0]!r}; valid engines: {', '.join(known)}")
        for e in dict.fromkeys(engines):
            ok, why = get_engine(e).available()
            if not ok:
                raise EngineUnavailableError(f"engine {e} was asked for but cannot run here. Why: {_first_line(why)}")
        return list(dict.fromkeys(engines))
    if required:
        names = [e for e in known if e in required]
        for e in names:
            ok, why = get_engine(e).available()
            if not ok:
                raise EngineUnavailableError(
                    f"engine {e} cannot run here, and the fixtures name it ([case] engines); install it, or choose "
                    f"the engines to check with --engine. Why: {_first_line(why)}")
        return names
    avail = available_engines()
    if not avail:
        raise EngineUnavailableError(
            "no engine is available: install statsmodels (pip install statsmodels) or R with lme4 plus rpy2 "
            "(pip install 'hlmbridge[r]')"
        )
    return avail


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


def load_data(data: str | Path | pd.DataFrame | None) -> pd.DataFrame:
    """The data the models are fitted to: a frame, a .dta/.csv path, or the bundled HSB data."""
    if isinstance(data, pd.DataFrame):
        return data
    if data is None:
        from hlmbridge.datasets import hsb

        return hsb("combined")
    p = Path(data)
    from hlmbridge.errors import DataError

    if not p.is_file():
        raise DataError(f"no such data file: {p}")
    if p.suffix.lower() == ".dta":
        from hlmbridge.data import read_dta

        return read_dta(p)
    if p.suffix.lower() == ".csv":
        return _read_csv(p)
    raise DataError(f"unsupported data file type {p.suffix!r} (use .dta or .csv)")


def _read_csv(p: Path) -> pd.DataFrame:
    """A CSV file as a frame; an empty, unreadable or malformed file is a DataError (one line)."""
    from hlmbridge.errors import DataError

    try:
        frame = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: the CSV file is empty (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "re-save the CSV as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{p}: not a well-formed CSV file: {_first_line(str(exc))}") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror}") from None
    if frame.empty:
        raise DataError(f"{p}: the CSV file has no data rows (columns: {', '.join(map(str, frame.columns))})")
    return frame


def _stderr_progress(done: int, total: int, label: str) -> None:
    width = 24
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}\n")
    sys.stderr.flush()


def _fit_all(jobs_list: list[tuple[Any, str]], data: pd.DataFrame, jobs: int | None,
             progress: Progress | None) -> dict[tuple[Any, str], Any]:
    """Fit every (spec, engine); values are FitResults or the HlmbridgeError raised."""
    import hlmbridge

    out: dict[tuple[Any, str], Any] = {}
    total = len(jobs_list)
    if jobs and jobs > 1:
        # Worker processes (spawned, never forked from a process running R); one failed fit
        # comes back as its error and does not stop the others.
        results = hlmbridge.fit_many(
            [(spec, data, eng) for spec, eng in jobs_list],
            max_workers=jobs,
            return_exceptions=True,
            progress=progress is not None,
        )
        for job, res in zip(jobs_list, results, strict=True):
            out[job] = _as_error(res) if isinstance(res, BaseException) else res
        return out
    for k, (spec, eng) in enumerate(jobs_list, start=1):
        t0 = time.perf_counter()
        try:
            out[(spec, eng)] = hlmbridge.fit(spec, data, engine=eng)
        except Exception as exc:  # an engine bug must not hide the other engines' verdicts
            out[(spec, eng)] = _as_error(exc)
        if progress:
            label = getattr(spec, "_source", None) or spec
            progress(k, total, f"{eng}: {label} ({time.perf_counter() - t0:.1f}s)")
    return out


def _as_error(exc: BaseException) -> HlmbridgeError:
    """A failed fit as an HlmbridgeError (other exceptions wrapped, naming their type)."""
    return exc if isinstance(exc, HlmbridgeError) else HlmbridgeError(f"{type(exc).__name__}: {exc}")


def _missing(ref: Reference, engine: str, why: str) -> CheckReport:
    rows = tuple(
        CheckRow(ref.case, v.key, engine, v.value, math.nan, v.printed, math.nan, math.nan, math.nan, math.nan,
                 "", "", "missing", why)
        for v in ref.checked
    )
    return CheckReport(rows, (ref.case,), (engine,))


def validate(
    fixtures: str | Path | None = None,
    data: str | Path | pd.DataFrame | None = None,
    engines: Sequence[str] | None = None,
    cases: Sequence[str] | None = None,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    compare: bool = True,
) -> CheckReport:
    """Cross-check reference cases against engine fits; see the module docstring.

    Parameters
    ----------
    fixtures
        Fixture directory or file (default: ``fixtures/stata``).
    data
        Data for the model fits (default: the bundled HSB data, combined file).
    engines
        Engine names (default: every available engine).
    cases
        Case names or shell patterns (default: all).
    jobs
        Parallel fits through ``hlmbridge.fit_many`` when it exists (else serial).
    progress
        ``callback(done, total, label)`` after each fit.
    compare
        Also judge the engines against each other (rows named ``"statsmodels vs lme4"``)
        when more than one engine ran, and nlme's log likelihood of a residual-structure fit
        against hlmbridge's own (rows ``"nlme vs own likelihood"``, :mod:`hlmbridge.check.nlme_rows`).
    """
    from hlmbridge.reference.quantities import quantities_for
    from hlmbridge.spec.model import ModelSpec
    from hlmbridge.spec.parse_stata import parse_stata_df_method

    refs = select_cases(_load_checked(fixtures, cases), cases)
    engs = resolve_engines(engines, sorted({e for r in refs if r.needs_engine for e in r.engines}))
    frame: pd.DataFrame | None = None
    specs: dict[str, Any] = {}
    df_methods: dict[str, str | None] = {}  # a command's dfmethod(): applied to its fit (no refit)
    small: dict[tuple[str, str], Any] = {}
    wanted: dict[tuple[Any, str], None] = {}
    for ref in refs:
        if not ref.needs_engine:
            continue
        for m in ref.models:
            if m.command not in specs:
                specs[m.command] = ModelSpec.parse(m.command)
                # a GLMM command has no dfmethod() (z tests, as melogit)
                df_methods[m.command] = None if specs[m.command].is_glmm else parse_stata_df_method(m.command)
            wanted.update(((specs[m.command], e), None) for e in _engines_for(ref, engs))
    fits: dict[tuple[Any, str], Any] = {}
    base = load_data(data) if data is not None else None
    if wanted:
        frame, blocked = _prepared_data(refs, base if base is not None else load_data(None))
        fits = _fit_all([w for w in wanted if w not in blocked], frame, jobs, progress)
        fits.update(blocked)
    reports: list[CheckReport] = []
    cache: dict[str, Any] = {"data:base": base} if base is not None else {}
    if frame is not None:
        cache["data:frame"] = frame
    for ref in refs:
        actuals_by_engine: dict[str, Any] = {}
        ref_engines = _engines_for(ref, engs)
        if not ref_engines and ref.checked:
            reports.append(_missing(ref, "/".join(ref.engines), f"not compared: the case names engines "
                                    f"{', '.join(ref.engines)}, and none of them was chosen ({', '.join(engs)})"))
        by_cmd: dict[str, Any] = {}
        for eng in ref_engines:
            by_cmd = {}
            failed = None
            for m in ref.models:
                if m.command in specs:
                    res = fits[(specs[m.command], eng)]
                    if isinstance(res, BaseException):
                        failed = f"{m.command}: {res}"
                        break
                    if df_methods.get(m.command):
                        if (m.command, eng) not in small:
                            try:
                                small[(m.command, eng)] = res.with_df(df_methods[m.command])
                            except HlmbridgeError as exc:
                                small[(m.command, eng)] = exc
                        res = small[(m.command, eng)]
                        if isinstance(res, BaseException):
                            failed = f"{m.command}: df method: {res}"
                            break
                    by_cmd[m.command] = res
            if failed:
                reports.append(_missing(ref, eng, f"fit failed: {failed}"))
                continue
            if not ref.checked:
                continue
            actuals = quantities_for(ref, by_cmd, cache=cache)
            actuals_by_engine[eng] = actuals
            reports.append(crosscheck(ref, {eng: actuals}))
        if compare and len(actuals_by_engine) > 1 and by_cmd:
            # Engine against engine on every number the case holds (the first engine is the yardstick).
            reports.append(compare_engines(actuals_by_engine, ref))
    if compare and "nlme" in engs:  # nlme's logLik against hlmbridge's own likelihood (issue 25)
        from hlmbridge.check.nlme_rows import own_likelihood_rows

        reports.append(own_likelihood_rows(refs, fits, specs))
    if compare and frame is not None and len(engs) > 1:
        # Engine against engine on the random effects of every model (no Stata reference).
        from hlmbridge.check.random_effects_check import compare_random_effects

        by_command: dict[str, dict[str, Any]] = {}
        for (spec, eng), res in fits.items():
            # a GLMM's random effects are the engine's conditional modes, not the LMM's BLUPs recomputed here
            if not isinstance(res, BaseException) and not spec.is_glmm:
                by_command.setdefault(spec.to_stata(), {})[eng] = res
        ordered = {c: {e: by_command[c][e] for e in engs if e in by_command[c]} for c in by_command}
        reports.append(compare_random_effects(ordered, frame))
    merged = _with_boundary_hints(merge_reports(reports), refs, fits, specs)
    if not merged.rows:
        raise UsageError(f"validate compared nothing: no reference numbers in {fixtures or 'the bundled fixtures'}"
                         f"{' for cases ' + ', '.join(cases) if cases else ''}.")
    unjudged = _not_judged(refs, engs, merged)
    return merge_reports([merged, unjudged]) if unjudged.rows else merged


def _load_checked(fixtures: str | Path | None, cases: Sequence[str] | None) -> list[Reference]:
    """Every reference under ``fixtures``, after checking the files against their manifest.

    An empty folder without a manifest compared nothing (a UsageError saying so); otherwise the
    manifest must list exactly the files there, unchanged (:func:`~hlmbridge.reference.manifest.check_manifest`).
    """
    from hlmbridge.reference.fixtures import FIXTURE_ROOT
    from hlmbridge.reference.manifest import check_manifest, find_manifest

    root = Path(fixtures) if fixtures is not None else FIXTURE_ROOT
    refs = load_references(root)
    if not refs and find_manifest(root) is None:
        raise UsageError(f"validate compared nothing: no reference numbers in {fixtures or 'the bundled fixtures'}"
                         f"{' for cases ' + ', '.join(cases) if cases else ''}.")
    check_manifest(root)
    return refs


#: Said beside a mismatch on a fit the engine reports singular (a boundary fit).
BOUNDARY_HINT = (
    "boundary fit (the engine reports a singular fit): Stata may stop short of the optimum here. If the difference "
    "is expected, measure why and record a tolerance with its reason in an overrides file, then re-import "
    "(`hlmbridge import-stata LOG --out DIR --overrides FILE`; the bundled fixtures' are in "
    "fixtures/stata/seed_overrides.toml)"
)


def _with_boundary_hints(report: CheckReport, refs: Sequence[Reference], fits: dict[tuple[Any, str], Any],
                         specs: dict[str, Any]) -> CheckReport:
    """``report`` with :data:`BOUNDARY_HINT` in the reason of every mismatch on a singular fit."""
    import dataclasses

    singular: set[tuple[str, str]] = set()
    for ref in refs:
        for m in ref.models:
            for (spec, eng), res in fits.items():
                if spec == specs.get(m.command) and getattr(res, "singular", False):
                    singular.add((ref.case, eng))
    if not singular:
        return report
    rows = tuple(
        dataclasses.replace(r, reason=f"{r.reason}; {BOUNDARY_HINT}" if r.reason else BOUNDARY_HINT)
        if r.status == "mismatch" and (r.case, r.engine) in singular else r
        for r in report.rows
    )
    return CheckReport(rows, report.cases, report.engines)


def _prepared_data(refs: Sequence[Reference], frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[Any, str], Any]]:
    """The data after the log's data steps (:mod:`hlmbridge.reference.data_prep`), and a FitError
    for every (spec, engine) whose variables a step could not make (naming that step's line)."""
    from hlmbridge.errors import FitError
    from hlmbridge.reference.data_prep import prepare_for_models
    from hlmbridge.spec.model import ModelSpec

    rep = prepare_for_models(refs, frame)
    blocked: dict[tuple[Any, str], Any] = {}
    for ref in refs:
        for m in ref.models if ref.needs_engine else ():
            spec = ModelSpec.parse(m.command)
            why = rep.why_blocked(spec.variables)
            if why:
                for e in ref.engines:
                    blocked[(spec, e)] = FitError(f"the log's data preparation could not be replayed: {why}")
    return rep.frame, blocked


def _engines_for(ref: Reference, engines: Sequence[str]) -> list[str]:
    """The chosen engines that judge ``ref``: those its ``[case] engines`` names (all for data cases)."""
    return [e for e in engines if not ref.needs_engine or e in ref.engines]


def _not_judged(refs: Sequence[Reference], engines: Sequence[str], report: CheckReport) -> CheckReport:
    """A *missing* row for every number a fixture holds that got no verdict for an engine.

    Guards the count: validate never compares fewer numbers than the fixtures hold.
    """
    judged = {(r.case, r.key, r.engine) for r in report.rows if r.status != "unexpected"}
    rows = tuple(
        CheckRow(ref.case, v.key, eng, v.value, math.nan, v.printed, math.nan, math.nan, math.nan, math.nan,
                 "", "", "missing", "no verdict: validate did not compare this number")
        for ref in refs for eng in _engines_for(ref, engines) for v in ref.checked
        if (ref.case, v.key, eng) not in judged
    )
    return CheckReport(rows, tuple(dict.fromkeys(r.case for r in rows)), tuple(dict.fromkeys(r.engine for r in rows)))
