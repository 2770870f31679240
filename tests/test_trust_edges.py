"""Engine edge cases that used to be silent or crash (issue 26).

1. ``singular`` means lme4's ``isSingular`` for every engine: some pivot of a relative
   covariance factor below 1e-4, computed by hlmbridge from the estimates. A 3x3 block of
   rank 2 (every correlation inside (-1, 1)) used to be "not singular" in the statsmodels
   engine while lme4 said it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hlmbridge


# ---------------------------------------------------------------------------- 1. singular
@pytest.fixture(scope="module")
def exam(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """mlmRev's Exam, exported by the committed R script and read back with R's classes."""
    from tests.r_reference import export_datasets, load_dataset

    out = tmp_path_factory.mktemp("r_datasets")
    export_datasets(out)
    return load_dataset(out, "Exam")


def _r_is_singular(formula: str, reml: bool) -> bool:
    """lme4's own isSingular of lmer (its defaults) on mlmRev's Exam, in a private R env."""
    import rpy2.robjects as ro

    fun = ro.r("function(f, reml) suppressMessages(suppressWarnings(lme4::isSingular("
               "lme4::lmer(stats::as.formula(f), data = mlmRev::Exam, REML = reml))))")
    return bool(fun(formula, reml)[0])


#: On Exam: a 3x3 block of rank 2 (lme4's last pivot 0 under REML and ML; no correlation at
#: +-1, no variance at 0), and a 3x3 block whose smallest pivot is 0.029 (not singular).
SINGULAR_CASES = [
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", True),
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", False),
    ("normexam ~ standLRT + (standLRT + I(standLRT^2) | school)", False),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("formula,reml", SINGULAR_CASES)
def test_singular_is_lme4s_is_singular_for_both_engines(exam: pd.DataFrame, formula: str, reml: bool) -> None:
    expected = _r_is_singular(formula, reml)
    for engine in ("lme4", "statsmodels"):
        res = hlmbridge.fit(formula, exam, engine=engine, reml=reml)
        assert res.singular is expected, (engine, formula, reml)
    if formula.startswith("normexam ~ standLRT + sex"):
        assert expected  # the case is what it claims: lme4 says singular
