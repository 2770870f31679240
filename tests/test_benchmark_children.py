"""The benchmark script's child processes run (issue 13).

``benchmarks/run.py`` fits its large cases in fresh child processes whose code is a string,
so a broken child (a missing import) shows only when a full run reaches it, minutes in. Here
each child runs once on tiny data; its fit must be the fit hlmbridge makes in this process.
No timing is asserted: speed is measured by ``benchmarks/run.py`` itself.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.requires_r


@pytest.fixture(scope="module")
def run():
    sys.path.insert(0, str(BENCH))
    try:
        import run as module
    finally:
        sys.path.remove(str(BENCH))
    return module


def _frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    df["g"] = df["g"].astype(np.int64)  # as the children read the group codes
    return df


def test_scale_child_fits_the_model_hlmbridge_fits(run, tmp_path: Path) -> None:
    n, groups = 3000, 30
    got = run.bench_scale(n, groups, 1, tmp_path)
    assert len(got["hlmbridge_times"]) == 1 and got["hlmbridge_times"][0] > 0
    assert got["r_lmer_s"] > 0 and got["r_lmer_default_s"] > 0 and got["converged"]
    here = hlmbridge.fit(run.SCALE_MODEL, _frame(run.simulate_scale(n, groups)), engine="lme4")
    assert math.isclose(got["loglik"], here.loglik, rel_tol=1e-10)


def test_fit_case_child_fits_the_model_hlmbridge_fits(run, tmp_path: Path) -> None:
    n, groups = 2000, 40
    cols = run.simulate_scale(n, groups)
    d = tmp_path / "case"
    run.write_columns(d, cols, {"g"})
    got = run._fit_case("tiny", d, "y ~ x + (x | g)", False, 3)
    assert got["nobs"] == n and got["converged"] and len(got["hlmbridge_times"]) == 3
    assert len(got["embedded_lmer_default_times"]) == 3 and math.isfinite(got["ratio_interleaved"])
    here = hlmbridge.fit("y ~ x + (x | g)", _frame(cols), engine="lme4", reml=False)
    assert math.isclose(got["loglik"], here.loglik, rel_tol=1e-10)


def test_glmm_child_fits_the_model_hlmbridge_fits(run, tmp_path: Path) -> None:
    """The GLMM section's child (issue 23 item 8): glmer with its defaults timed alternately with
    hlmbridge in one process, on the hospital data it reads as the section does."""
    hosp = pd.read_csv(run.HOSPITAL_DAT, sep=r"\s+", header=None,
                       names=["hosp", "loginc", "distance", "dropout", "college", "mother"])
    d = tmp_path / "glmm"
    run.write_columns(d, {c: hosp[c].to_numpy(dtype=float) for c in hosp.columns}, {"mother"})
    got = run._glmm_case("tiny", d, run.HOSPITAL_MODEL, "binomial", 12, 1)
    assert got["nobs"] == 1060 and got["converged"] and len(got["hlmbridge_times"]) == 1
    assert len(got["embedded_glmer_default_times"]) == 1 and math.isfinite(got["ratio_interleaved"])
    assert got["hlmbridge_cpu_s"] > 0 and math.isfinite(got["ratio_cpu"])
    assert "Newton step" in got["optimizer"]
    here = hlmbridge.fit(run.HOSPITAL_MODEL, hosp.assign(mother=hosp["mother"].astype(np.int64)),
                         family="binomial", nAGQ=12)
    assert math.isclose(got["loglik"], here.engine_loglik, rel_tol=1e-10)
    assert abs(got["loglik_gain"]) < 1e-4  # glmer with its defaults stops that close to the optimum here
