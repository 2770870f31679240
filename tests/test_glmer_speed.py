"""glmer's fast path (issue 23 item 8): glmer's default optimizers finished by Newton steps on
its deviance (``hlmbridge_glmer_polish`` in r/hlmbridge.R) give the tight optimizer's optimum
(bobyqa in both stages to rhoend 1e-10, the path taken with ``rhoend=``) to the digits the
differential suite checks, with the standard errors from the Hessian at the polished point;
where the polish cannot finish (a boundary fit) the tight settings are taken and said.
Both sides are real glmer fits in the embedded R."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge

REPO = Path(__file__).resolve().parent.parent
HOSP_FORMULA = "hosp ~ loginc + distance + dropout + college + (1 | mother)"


@pytest.fixture(scope="module")
def hospital() -> pd.DataFrame:
    return pd.read_csv(REPO / "fixtures" / "glmm" / "hospital.dat", sep=r"\s+", header=None,
                       names=["hosp", "loginc", "distance", "dropout", "college", "mother"])


def _near_boundary(seed: int) -> pd.DataFrame:
    """A binary response with no group effect: glmer's optimum is at or near zero variance."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": (rng.random(400) < 0.4).astype(float), "x": rng.normal(size=400),
                         "g": np.repeat(np.arange(40), 10).astype(str)})


def _same_optimum(fast: hlmbridge.FitResult, tight: hlmbridge.FitResult) -> None:
    assert fast.loglik >= tight.loglik - 1e-9 * abs(tight.loglik)
    assert abs(fast.loglik - tight.loglik) <= 1e-8 * abs(tight.loglik)
    fa, ti = fast.fixed.set_index("term"), tight.fixed.set_index("term")
    se = ti["std_error"]
    assert np.all(np.abs(fa["estimate"] - ti["estimate"]) <= 1e-5 * se), (fa["estimate"] - ti["estimate"]) / se
    assert np.all(np.abs(fa["std_error"] / se - 1) <= 1e-5), fa["std_error"] / se - 1
    ra, rt = fast.random, tight.random
    assert np.all(np.abs(ra["estimate"] - rt["estimate"]) <= 1e-5 * rt["std_error"])
    assert np.all(np.abs(ra["std_error"] / rt["std_error"] - 1) <= 1e-5)
    ea, et = fast.ranef(), tight.ranef()
    assert np.all(np.abs(ea["estimate"] - et["estimate"]) <= 1e-4 * et["std_error"])
    assert np.all(np.abs(ea["std_error"] / et["std_error"] - 1) <= 1e-4)
    assert fast.converged and fast.warnings == tight.warnings, fast.warnings


@pytest.mark.requires_r
@pytest.mark.parametrize("nagq", [1, 12])
def test_default_path_is_the_polished_default_optimizers(hospital, nagq):
    fast = hlmbridge.fit(HOSP_FORMULA, hospital, family="binomial", nAGQ=nagq)
    tight = hlmbridge.fit(HOSP_FORMULA, hospital, family="binomial", nAGQ=nagq, rhoend=1e-10)
    assert "glmer's default optimizers (bobyqa, Nelder-Mead)" in fast.optimizer
    assert "Newton step" in fast.optimizer and f"nAGQ = {nagq}" in fast.optimizer
    assert "bobyqa in both stages, rhoend=1e-10" in tight.optimizer and "PIRLS restarted" in tight.optimizer
    _same_optimum(fast, tight)


@pytest.mark.requires_r
def test_polish_near_the_boundary_and_fallback_on_it():
    near = _near_boundary(1)  # variance 0.026: interior, polished
    fast = hlmbridge.fit("y ~ x + (1 | g)", near, family="binomial")
    assert "Newton step" in fast.optimizer and not fast.singular
    _same_optimum(fast, hlmbridge.fit("y ~ x + (1 | g)", near, family="binomial", rhoend=1e-10))
    on = _near_boundary(0)  # glmer's optimum is the boundary: the tight settings, said
    res = hlmbridge.fit("y ~ x + (1 | g)", on, family="binomial")
    assert res.singular and "Newton" not in res.optimizer.split("(the Newton polish")[0]
    assert "bobyqa in both stages, rhoend=1e-10" in res.optimizer
    assert "the Newton polish could not finish the default optimizers' optimum" in res.optimizer
