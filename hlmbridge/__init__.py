"""hlmbridge: multilevel linear models through lme4 and statsmodels, checked against Stata.

``import hlmbridge`` never needs R: the lme4 engine imports rpy2 only when asked for. It loads
only the errors and the model spec; the rest (pandas, numpy and every stage below) loads on
first use of a name (``hlmbridge.fit``, ``hlmbridge.FitResult`` ...): about 0.05 s instead of
0.35 s (issue 13, cold start).

The package is laid out by stage of the flow; each stage is a folder with one entry point:

======================  ===========================  =============================================
stage                   folder                       main entry point
======================  ===========================  =============================================
1. model                ``hlmbridge/spec/``          ``ModelSpec.from_stata`` / ``.from_lme4``
2. design               ``hlmbridge/design/``        ``design.build.build_design``
3. engines              ``hlmbridge/engines/``       ``engines.get_engine``
4. inference            ``hlmbridge/inference/``     ``inference.stata_parity.evaluate``
5. results              ``hlmbridge/results/``       ``FitResult`` (``.summary()``, ``.icc()`` …)
6. reference numbers    ``hlmbridge/reference/``     ``reference.fixtures.load_references``
7. cross-check          ``hlmbridge/check/``         ``crosscheck``, ``check.validate.validate``
======================  ===========================  =============================================

``fit`` runs stages 1–5, ``fit_many`` runs fits in parallel; ``data``, ``datasets``, ``errors``,
``parallel`` and ``cli`` stay at the top.

Examples
--------
>>> import hlmbridge
>>> spec = hlmbridge.ModelSpec.from_stata("mixed mathach ses || id: ses, cov(unstr)")
>>> spec.method
'ml'
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

from hlmbridge.errors import (
    ConvergenceError,
    DataError,
    EngineUnavailableError,
    FitError,
    FixtureError,
    HlmbridgeError,
    SpecError,
    UnsupportedSpecError,
    UsageError,
)
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

__version__ = "0.1.0"

# Public name -> the module that defines it (a module itself when the name is the module's).
_LAZY = {
    "FitResult": "hlmbridge.results.fit_result",
    "GroupInfo": "hlmbridge.results.fit_result",
    "datasets": "hlmbridge.datasets",
    "center": "hlmbridge.data",
    "merge_levels": "hlmbridge.data",
    "read_dta": "hlmbridge.data",
    "summarize": "hlmbridge.data",
    "tag_first": "hlmbridge.data",
    "fit": "hlmbridge.fit",
    "LRTest": "hlmbridge.results.postestimation",
    "VarianceExplained": "hlmbridge.results.postestimation",
    "lrtest": "hlmbridge.results.postestimation",
    "anova": "hlmbridge.results.compare",
    "kr_modcomp": "hlmbridge.results.compare",
    "sat_modcomp": "hlmbridge.results.compare",
    "pbmodcomp": "hlmbridge.inference.pbmodcomp",
    "variance_explained": "hlmbridge.results.postestimation",
    "fit_many": "hlmbridge.parallel",
    "CheckReport": "hlmbridge.check.crosscheck",
    "crosscheck": "hlmbridge.check.crosscheck",
    "EstimatesTable": "hlmbridge.results.estimates_table",
    "estimates_table": "hlmbridge.results.estimates_table",
    "parse_any": "hlmbridge.spec.translate",
    "translate": "hlmbridge.spec.translate",
    "emmeans": "hlmbridge.results.emmeans",
    "margins": "hlmbridge.results.margins",
    "marginsplot": "hlmbridge.results.margins_plot",
}

__all__ = [
    "CheckReport",
    "ConvergenceError",
    "DataError",
    "EngineUnavailableError",
    "EstimatesTable",
    "FitError",
    "FitResult",
    "FixtureError",
    "GroupInfo",
    "HlmbridgeError",
    "LRTest",
    "ModelSpec",
    "RandomLevel",
    "SpecError",
    "Term",
    "UnsupportedSpecError",
    "UsageError",
    "Var",
    "VarianceExplained",
    "__version__",
    "anova",
    "center",
    "crosscheck",
    "datasets",
    "emmeans",
    "estimates_table",
    "fit",
    "fit_many",
    "kr_modcomp",
    "lrtest",
    "margins",
    "marginsplot",
    "merge_levels",
    "parse_any",
    "pbmodcomp",
    "read_dta",
    "sat_modcomp",
    "summarize",
    "tag_first",
    "translate",
    "variance_explained",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from hlmbridge import datasets
    from hlmbridge.check.crosscheck import CheckReport, crosscheck
    from hlmbridge.data import center, merge_levels, read_dta, summarize, tag_first
    from hlmbridge.fit import fit
    from hlmbridge.parallel import fit_many
    from hlmbridge.inference.pbmodcomp import pbmodcomp
    from hlmbridge.results.compare import anova, kr_modcomp, sat_modcomp
    from hlmbridge.results.emmeans import emmeans
    from hlmbridge.results.estimates_table import EstimatesTable, estimates_table
    from hlmbridge.results.fit_result import FitResult, GroupInfo
    from hlmbridge.results.margins import margins
    from hlmbridge.results.margins_plot import marginsplot
    from hlmbridge.results.postestimation import LRTest, VarianceExplained, lrtest, variance_explained
    from hlmbridge.spec.translate import parse_any, translate


# The package's own modules, reachable as attributes without importing them first (as when the
# package imported them all on load).
_SUBMODULES = frozenset({"check", "cli", "data", "design", "display_data", "engines", "errors", "inference",
                         "parallel", "reference", "results", "spec"})


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562) and keep it."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module == f"{__name__}.{name}" and name != "fit" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The package module. Importing the submodule ``hlmbridge.fit`` binds it as the package's
    attribute ``fit``, where the function :func:`hlmbridge.fit.fit` belongs: the function is
    kept (the submodule stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "fit" and isinstance(value, _types.ModuleType) and value.__name__ == f"{__name__}.fit":
            value = value.fit
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
