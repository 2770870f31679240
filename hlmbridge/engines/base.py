"""What every engine adapter provides, and the raw estimates it hands back.

An engine turns a :class:`~hlmbridge.design.build.Design` into point estimates; everything
Stata prints beyond them (SEs of variance components, CIs, tests) is computed once, for
every engine alike, by :mod:`hlmbridge.inference.stata_parity` and :mod:`hlmbridge.fit`.

Examples
--------
>>> from hlmbridge.engines.base import Engine
>>> hasattr(Engine, "fit_design")
True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design
from hlmbridge.spec.model import ModelSpec

__all__ = ["FIT_CONTEXT", "Engine", "EngineFit", "tuning_options"]

#: Keywords ``fit`` passes to every engine's ``fit_design``: reuse hints, not model inputs.
FIT_CONTEXT: tuple[str, ...] = ("data", "column_prints")


def tuning_options(engine: Engine) -> tuple[str, ...]:
    """The engine's own keyword options: the keyword-only parameters of its ``fit_design``
    other than ``FIT_CONTEXT``. An engine takes no catch-all ``**kwargs``.

    >>> from hlmbridge.engines.statsmodels import StatsmodelsEngine
    >>> tuning_options(StatsmodelsEngine())
    ('max_iterations',)
    """
    return _keyword_options(type(engine))


@functools.lru_cache(maxsize=None)
def _keyword_options(engine_type: type) -> tuple[str, ...]:
    # Once per engine class: inspect.signature costs about 0.15 ms, and fit() asks every call.
    import inspect

    params = inspect.signature(engine_type.fit_design).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in FIT_CONTEXT)


@dataclass(frozen=True, eq=False)
class EngineFit:
    """Point estimates from one engine, in hlmbridge's order.

    ``beta`` follows ``design.fixed_stata``; ``theta`` follows
    :func:`hlmbridge.inference.stata_parity.variance_parameters` (residual variance last).
    ``fixed_vcov`` is the engine's own covariance of ``beta`` when it has one.
    """

    beta: np.ndarray
    theta: np.ndarray
    loglik: float
    converged: bool
    singular: bool
    optimizer: str
    versions: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    fixed_vcov: np.ndarray | None = None
    engine_seconds: float = float("nan")
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The Stata-parity evaluation at exactly these estimates when the engine made it already
    #: (the lme4 engine's Newton polish ends with one); ``fit`` then reuses it.
    inference: Any = None


class Engine(Protocol):
    """An engine adapter."""

    name: str

    def available(self) -> tuple[bool, str]:
        """Whether the engine can run here, and if not, what to install (one line)."""
        ...

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Reasons this engine cannot fit ``spec`` exactly (empty when it can)."""
        ...

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None, **options: Any) -> EngineFit:
        """Fit ``design`` and return the estimates (raises FitError on failure).

        ``data`` and ``column_prints`` (``FIT_CONTEXT``) are the caller's frame and its model
        columns' fingerprints: hints an engine may use to reuse work,
        never inputs that change the model. Every other keyword is the engine's own tuning
        option and is named in its signature (no catch-all), so ``fit`` can refuse the rest.
        """
        ...
