"""Shared test setup: the R availability gate and the bundled HSB data.

* Tests marked ``requires_r`` (marker registered in pyproject.toml) are skipped with the
  reason when rpy2, R or lme4 is unavailable - except when the environment variable ``CI``
  is ``"true"``: in CI nothing may be skipped, so a missing R fails those tests.
* The probe runs lazily, once per session, and only when a ``requires_r`` test is
  collected; it imports rpy2 in-process (no subprocess).
* Session-scoped fixtures ``hsb_combined``, ``hsb_students``, ``hsb_schools`` read the
  bundled .dta files once. They are shared: tests must not modify them (copy first).
"""

from __future__ import annotations

import os
from functools import lru_cache

import pandas as pd
import pytest

from hlmbridge import datasets


@lru_cache(maxsize=1)
def r_available() -> tuple[bool, str]:
    """Whether rpy2 can load R with lme4; the reason when not. Probed once, lazily."""
    try:
        import rpy2.robjects as robjects
    except Exception as exc:  # ImportError, or rpy2 failing to find/load libR
        return False, f"rpy2 cannot be imported ({type(exc).__name__}: {exc})"
    try:
        robjects.r("suppressPackageStartupMessages(library(lme4))")
    except Exception as exc:
        return False, f"R package lme4 cannot be loaded through rpy2 ({exc})"
    return True, ""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(autouse=True)
def _gate_requires_r(request: pytest.FixtureRequest) -> None:
    """Skip (or, under CI=true, fail) ``requires_r`` tests when R/lme4/rpy2 are missing."""
    if request.node.get_closest_marker("requires_r") is None:
        return
    ok, reason = r_available()
    if ok:
        return
    message = f"requires R with lme4 through rpy2: {reason}. Run `bash scripts/install.sh`."
    if _in_ci():
        pytest.fail("CI=true, so R may not be skipped: " + message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def hsb_combined() -> pd.DataFrame:
    """hsb.dta: 7,185 students with their school's variables (do not modify)."""
    return datasets.hsb("combined")


@pytest.fixture(scope="session")
def hsb_students() -> pd.DataFrame:
    """hsb1.dta: 7,185 students (do not modify)."""
    return datasets.hsb("students")


@pytest.fixture(scope="session")
def hsb_schools() -> pd.DataFrame:
    """hsb2.dta: 160 schools (do not modify)."""
    return datasets.hsb("schools")
