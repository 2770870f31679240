"""The lme4 engine: the only module that talks to R.

rpy2 is imported lazily, on the first fit. The R code in ``r/hlmbridge.R`` is loaded
into a private environment (never R's global environment). Each data column a model
needs is pushed to R once per data frame and reused by later fits; each fit is one R
call, which returns plain vectors and lists. R warnings and messages are captured into
the result, never printed.

Examples
--------
>>> from hlmbridge.engines.lme4 import Lme4Engine
>>> engine = Lme4Engine()          # cheap: R starts only when a fit needs it
>>> engine.name
'lme4'
"""

from __future__ import annotations

import re
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design import Design
from hlmbridge.engines.base import EngineFit
from hlmbridge.errors import EngineUnavailableError, FitError, UnsupportedSpecError
from hlmbridge.inference import theta_from_matrices
from hlmbridge.spec import ModelSpec

__all__ = ["INSTALL_HINT", "Lme4Engine", "r_source_path"]

INSTALL_HINT = (
    "the lme4 engine needs R (>= 4.2) with the lme4 package, and the Python package rpy2 "
    "(rpy2<3.6 for R older than 4.5): on Debian/Ubuntu run `bash scripts/install.sh`, or "
    "`apt-get install r-base-core r-cran-lme4` and `pip install 'rpy2>=3.5.17,<3.6'`"
)


def r_source_path() -> Path:
    """Where ``hlmbridge.R`` lives (the repository's ``r/`` folder)."""
    path = Path(__file__).resolve().parents[2] / "r" / "hlmbridge.R"
    if not path.is_file():
        raise EngineUnavailableError(
            f"cannot find {path}: install hlmbridge from its source tree (pip install -e .)"
        )
    return path


class _RSession:
    """The embedded R, with hlmbridge's functions in a private environment."""

    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rpy2 warns about LD_LIBRARY_PATH on start-up
                import rpy2.rinterface as ri
                import rpy2.robjects as ro
        except Exception as exc:  # ImportError, or R itself failing to start
            raise EngineUnavailableError(f"{INSTALL_HINT} (rpy2/R failed: {exc})") from exc
        self.ro = ro
        self.ri = ri
        ok = ro.r('isTRUE(suppressMessages(requireNamespace("lme4", quietly = TRUE)))')[0]
        if not ok:
            raise EngineUnavailableError(f"{INSTALL_HINT} (R found, but not the lme4 package)")
        self.env = ro.r("new.env(parent = baseenv())")
        ro.r["sys.source"](str(r_source_path()), envir=self.env)
        self.fit = self.env["hlmbridge_fit"]
        self.frame = self.env["hlmbridge_frame"]
        self.codes_factor = self.env["hlmbridge_codes_factor"]
        versions = self.env["hlmbridge_versions"]()
        self.versions = dict(zip(versions.names, versions, strict=True))
        import rpy2

        self.versions["rpy2"] = rpy2.__version__
        self.lock = threading.Lock()


_SESSION: _RSession | None = None
_SESSION_ERROR: EngineUnavailableError | None = None


def _session() -> _RSession:
    global _SESSION, _SESSION_ERROR
    if _SESSION is None:
        if _SESSION_ERROR is not None:
            raise _SESSION_ERROR
        try:
            _SESSION = _RSession()
        except EngineUnavailableError as exc:
            _SESSION_ERROR = exc
            raise
    return _SESSION


def _py(obj: Any) -> Any:
    """An R value (from hlmbridge.R's plain lists and vectors) as Python data."""
    from rpy2.rinterface import NULLType

    if isinstance(obj, NULLType):
        return None
    names = obj.names if hasattr(obj, "names") else None
    rclass = tuple(obj.rclass) if hasattr(obj, "rclass") else ()
    if "list" in rclass:
        items = [_py(v) for v in obj]
        if names is not None and not isinstance(names, NULLType) and len(names):
            return dict(zip([str(n) for n in names], items, strict=True))
        return items
    if "character" in rclass:
        return [str(v) for v in obj]
    values = np.asarray(obj)
    dim = obj.do_slot("dim") if "dim" in [str(n) for n in obj.list_attrs()] else None
    if dim is not None:
        values = values.reshape(tuple(dim), order="F")
        dimnames = obj.do_slot("dimnames") if "dimnames" in [str(n) for n in obj.list_attrs()] else None
        if dimnames is not None:
            return values, [None if isinstance(d, NULLType) else [str(x) for x in d] for d in dimnames]
        return values, None
    if names is not None and not isinstance(names, NULLType) and len(names):
        return dict(zip([str(n) for n in names], values.tolist(), strict=True))
    return values


class _PushedColumns:
    """R copies of a data frame's columns, made once and reused while the column is unchanged."""

    def __init__(self) -> None:
        self._by_frame: dict[int, dict[str, tuple[Any, Any]]] = {}

    def get(self, session: _RSession, data: pd.DataFrame, name: str, as_factor: bool) -> Any:
        key = id(data)
        cols = self._by_frame.get(key)
        if cols is None:
            cols = self._by_frame[key] = {}
            weakref.finalize(data, self._by_frame.pop, key, None)
        column = data[name]
        stamp = (as_factor, len(column), str(column.dtype), int(pd.util.hash_pandas_object(column, index=False).sum()))
        hit = cols.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        vector = _to_r(session, column, as_factor)
        cols[name] = (stamp, vector)
        return vector

    def clear(self) -> None:
        self._by_frame.clear()


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _to_r(session: _RSession, column: pd.Series, as_factor: bool) -> Any:
    ro = session.ro
    if as_factor:
        codes, uniques = pd.factorize(column, sort=True)
        codes = codes.astype(float)
        codes[codes < 0] = np.nan
        return session.codes_factor(ro.FloatVector(codes), ro.StrVector([_label(u) for u in uniques]))
    return ro.FloatVector(column.to_numpy(dtype=float, na_value=np.nan))


_PUSHED = _PushedColumns()
_SUFFIX = re.compile(r"\.\d+$")


class Lme4Engine:
    """Fits through ``lme4::lmer`` with tight bobyqa settings (rhoend 1e-12)."""

    name = "lme4"

    def available(self) -> tuple[bool, str]:
        """True when rpy2, R and lme4 load; otherwise what to install."""
        try:
            _session()
        except EngineUnavailableError as exc:
            return False, str(exc)
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Constructs lme4 cannot fit exactly."""
        try:
            spec.to_lme4()
        except UnsupportedSpecError as exc:
            return [str(exc)]
        return []

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None, rhoend: float = 1e-12,
                   maxfun: int = 100_000, **_: Any) -> EngineFit:
        """Fit with lme4. ``data`` is the caller's frame (its columns are pushed once and reused)."""
        if data is None:
            raise FitError("the lme4 engine needs the original data frame", engine=self.name)
        session = _session()
        spec = design.spec
        model = spec.to_lme4()
        ro = session.ro
        group_vars = {lv.group for lv in spec.levels}
        with session.lock:
            columns = {
                v: _PUSHED.get(session, data, v, as_factor=v in group_vars) for v in spec.variables
            }
            frame = session.frame(ro.ListVector(columns))
            factors = ro.ListVector({name: ro.FloatVector([base]) for name, base in design.factor_bases})
            all_rows = design.n_dropped == 0 and np.array_equal(design.rows, np.arange(len(data)))
            rows = ro.NULL if all_rows else ro.IntVector((design.rows + 1).tolist())
            t0 = time.perf_counter()
            out = _py(session.fit(frame, model.formula, model.reml, factors, rows, rhoend, maxfun))
            seconds = time.perf_counter() - t0
        if "error" in out:
            raise FitError(f"lme4 failed: {out['error'][0]}", engine=self.name)
        settings = f"rhoend={rhoend:g}, maxfun={maxfun:g}, calc.derivs=FALSE"
        return self._estimates(design, out, session.versions, seconds, settings)

    def _estimates(self, design: Design, out: dict[str, Any], versions: dict[str, str], seconds: float,
                   settings: str) -> EngineFit:
        fixef = out["fixef"]
        if set(fixef) != set(design.fixed_lme4):
            raise FitError(
                f"lme4 built other fixed-effect columns ({list(fixef)}) than hlmbridge's design "
                f"({list(design.fixed_lme4)})",
                engine=self.name,
            )
        beta = np.array([fixef[t] for t in design.fixed_lme4])
        vcov, (rn, _) = out["vcov"]
        idx = [rn.index(t) for t in design.fixed_lme4]
        fixed_vcov = vcov[np.ix_(idx, idx)]

        covs = [np.zeros((ld.Z.shape[1], ld.Z.shape[1])) for ld in design.levels]
        keys = {ld.key: i for i, ld in enumerate(design.levels)}
        for group, terms, (mat, _) in zip(out["re_groups"], out["re_terms"], out["re"], strict=True):
            level = keys.get(group)
            if level is None:
                level = keys.get(_SUFFIX.sub("", group))
            if level is None:
                raise FitError(f"lme4 returned a random-effects block for unknown group {group!r}", engine=self.name)
            order = list(design.levels[level].level.lme4_terms)
            pos = [order.index(t) for t in terms]
            covs[level][np.ix_(pos, pos)] = mat
        theta = theta_from_matrices(design, covs, float(np.asarray(out["sigma2"]).ravel()[0]))
        conv_code = int(np.asarray(out["conv_code"]).ravel()[0])
        conv_msgs = tuple(out["conv_messages"] or ())
        warns = tuple(out["warnings"] or ()) + tuple(out["messages"] or ()) + conv_msgs
        return EngineFit(
            beta=beta,
            theta=theta,
            loglik=float(np.asarray(out["loglik"]).ravel()[0]),
            converged=conv_code == 0 and not conv_msgs,
            singular=bool(np.asarray(out["singular"]).ravel()[0]),
            optimizer=f"lme4 {out['optimizer'][0]} ({settings})",
            versions=dict(versions),
            warnings=warns,
            fixed_vcov=fixed_vcov,
            engine_seconds=float(np.asarray(out["elapsed"]).ravel()[0]),
            extra={"feval": int(np.asarray(out["feval"]).ravel()[0]), "call_seconds": seconds},
        )
