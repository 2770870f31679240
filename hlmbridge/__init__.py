"""hlmbridge: multilevel linear models through lme4 and statsmodels, checked against Stata.

``import hlmbridge`` never needs R: the lme4 engine imports rpy2 only when asked for.

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
from hlmbridge.results.fit_result import FitResult, GroupInfo
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "DataError",
    "EngineUnavailableError",
    "FitError",
    "FitResult",
    "FixtureError",
    "GroupInfo",
    "HlmbridgeError",
    "ModelSpec",
    "RandomLevel",
    "SpecError",
    "Term",
    "UnsupportedSpecError",
    "UsageError",
    "Var",
    "__version__",
]

from hlmbridge import datasets  # noqa: E402
from hlmbridge.data import center, merge_levels, read_dta, summarize, tag_first  # noqa: E402

__all__ += ["center", "datasets", "merge_levels", "read_dta", "summarize", "tag_first"]

from hlmbridge.fit import fit  # noqa: E402
from hlmbridge.results.postestimation import LRTest, VarianceExplained, lrtest, variance_explained  # noqa: E402

__all__ += ["LRTest", "VarianceExplained", "fit", "lrtest", "variance_explained"]

from hlmbridge.parallel import fit_many  # noqa: E402

__all__ += ["fit_many"]

from hlmbridge.check.crosscheck import CheckReport, crosscheck  # noqa: E402
from hlmbridge.spec.translate import parse_any, translate  # noqa: E402

__all__ += ["CheckReport", "crosscheck", "parse_any", "translate"]
