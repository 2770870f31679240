"""The engine registry: ``lme4`` and ``nlme`` (R through rpy2), ``statsmodels`` and ``quadrature``
(hlmbridge's own GLMM fit).

Engines are created on first use; nothing here imports rpy2.

Examples
--------
>>> from hlmbridge.engines import ENGINES, get_engine
>>> ENGINES
('lme4', 'statsmodels', 'nlme', 'quadrature')
>>> get_engine("statsmodels").name
'statsmodels'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hlmbridge.errors import EngineUnavailableError, UsageError

if TYPE_CHECKING:
    from hlmbridge.engines.base import Engine, EngineFit


def __getattr__(name: str) -> Any:
    # Engine and EngineFit load with numpy and pandas on first use: importing
    # hlmbridge.engines.r_session must not (R starts while another thread imports them).
    if name in ("Engine", "EngineFit"):
        from hlmbridge.engines import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_ENGINES", "ENGINES", "Engine", "EngineFit", "available_engines", "get_engine", "require_engine"]

ENGINES: tuple[str, ...] = ("lme4", "statsmodels", "nlme", "quadrature")
#: The engines run when none is named (``hlmbridge fit``/``validate``, a linear model's fixture
#: without ``engines =``): nlme fits what these two cannot (issue 25) and quadrature fits GLMMs
#: only (issue 24); both run when asked for by name or by a fixture's ``engines``.
DEFAULT_ENGINES: tuple[str, ...] = ("lme4", "statsmodels")
_INSTANCES: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    """The adapter for ``name`` (an unknown name raises UsageError listing the engines)."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    if name not in _INSTANCES:
        if name == "lme4":
            from hlmbridge.engines.lme4 import Lme4Engine

            _INSTANCES[name] = Lme4Engine()
        elif name == "nlme":
            from hlmbridge.engines.nlme import NlmeEngine

            _INSTANCES[name] = NlmeEngine()
        elif name == "quadrature":
            from hlmbridge.engines.quadrature import QuadratureEngine

            _INSTANCES[name] = QuadratureEngine()
        else:
            from hlmbridge.engines.statsmodels import StatsmodelsEngine

            _INSTANCES[name] = StatsmodelsEngine()
    return _INSTANCES[name]


def require_engine(name: str) -> Engine:
    """Like :func:`get_engine`, but raise EngineUnavailableError when it cannot run here."""
    engine = get_engine(name)
    ok, why = engine.available()
    if not ok:
        raise EngineUnavailableError(why)
    return engine


def available_engines() -> list[str]:
    """Names of the default engines (:data:`DEFAULT_ENGINES`) that can run on this machine."""
    return [name for name in DEFAULT_ENGINES if get_engine(name).available()[0]]
