"""hlmbridge: multilevel linear models through lme4 and statsmodels, checked against Stata.

``import hlmbridge`` never needs R: the lme4 engine imports rpy2 only when asked for.

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
from hlmbridge.result import FitResult, GroupInfo
from hlmbridge.spec import ModelSpec, RandomLevel, Term, Var

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
from hlmbridge.postestimation import LRTest, VarianceExplained, lrtest, variance_explained  # noqa: E402

__all__ += ["LRTest", "VarianceExplained", "fit", "lrtest", "variance_explained"]

from hlmbridge.parallel import fit_many  # noqa: E402

__all__ += ["fit_many"]

from hlmbridge.crosscheck import CheckReport, crosscheck  # noqa: E402
from hlmbridge.syntax import parse_any, translate  # noqa: E402

__all__ += ["CheckReport", "crosscheck", "parse_any", "translate"]
