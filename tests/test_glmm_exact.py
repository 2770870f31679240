"""The lme4 engine's GLMM optimum is the exact Laplace/AGQ optimum (r/hlmbridge.R,
``hlmbridge_glmer_restart``).

glmer's deviance function starts its inner iterations (PIRLS) at every evaluation from the
linear predictor of the end of glmer's first stage, and PIRLS stops short of its fixpoint
(tolPwrss is relative), so glmer's deviance depends on that start: on VerbAgg's crossed
Laplace fit by 3.7e-4 in the log likelihood and 2e-3 in the intercept's SE. The lme4 engine
polishes and differentiates the deviance with PIRLS restarted at each point's own linear
predictor. hlmbridge's own GLMM engine (``engine="quadrature"``, numpy, no R) computes the
same integrals independently; the two must agree: log likelihood 1e-8 relative, estimates
within 1e-5 of their SE, SEs 1e-4 relative. Both engines are real fits (glmer in the
embedded R; the data of R's packages written by Rscript).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.requires_r, pytest.mark.slow]

_WRITE = """
args <- commandArgs(trailingOnly = TRUE)
w <- function(d, name) { old <- options(digits = 17); on.exit(options(old))
  utils::write.csv(d, file.path(args[[1]], paste0(name, ".csv")), row.names = FALSE) }
gt <- lme4::grouseticks
w(data.frame(TICKS = gt$TICKS, YEAR = as.character(gt$YEAR), H = as.numeric(scale(gt$HEIGHT)),
             BROOD = as.character(gt$BROOD), LOCATION = as.character(gt$LOCATION)), "grouse")
cn <- mlmRev::Contraception
w(data.frame(use = as.integer(cn$use == "Y"), urban = as.integer(cn$urban == "Y"), age = cn$age,
             livch = as.character(cn$livch), district = as.character(cn$district)), "contra")
va <- lme4::VerbAgg
w(data.frame(r2 = as.integer(va$r2 == "Y"), Anger = va$Anger, Gender = as.character(va$Gender),
             btype = as.character(va$btype), situ = as.character(va$situ), id = as.character(va$id),
             item = as.character(va$item)), "verb")
"""
_TEXT = {"YEAR": str, "BROOD": str, "LOCATION": str, "livch": str, "district": str, "Gender": str, "btype": str,
         "situ": str, "id": str, "item": str}
HOSP = "hosp ~ loginc + distance + dropout + college + (1 | mother)"
#: case -> (data, formula, family, nAGQ)
CASES = {
    "hospital_laplace": ("hospital", HOSP, "binomial", 1),
    "hospital_agq12": ("hospital", HOSP, "binomial", 12),
    "grouse_two_levels": ("grouse", "TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)", "poisson", 1),
    "contraception_slope": ("contra", "use ~ urban + age + livch + (urban | district)", "binomial", 1),
    "verbagg_crossed": ("verb", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial", 1),
}


@pytest.fixture(scope="module")
def datadir(tmp_path_factory):
    out = tmp_path_factory.mktemp("glmm_exact")
    proc = subprocess.run(["Rscript", "--vanilla", "-e", _WRITE, str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


_FITS: dict = {}


def _fits(datadir: Path, case: str):
    if case not in _FITS:
        name, formula, fam, nagq = CASES[case]
        path = REPO / "fixtures" / "glmm" / "hospital.csv" if name == "hospital" else datadir / f"{name}.csv"
        data = pd.read_csv(path, dtype=_TEXT)
        _FITS[case] = tuple(hlmbridge.fit(formula, data, family=fam, nAGQ=nagq, engine=e)
                            for e in ("lme4", "quadrature"))
    return _FITS[case]


@pytest.mark.parametrize("case", list(CASES))
def test_lme4_optimum_is_the_exact_laplace(datadir, case):
    r, q = _fits(datadir, case)
    assert r.converged and q.converged
    assert abs(r.loglik - q.loglik) <= 1e-8 * abs(q.loglik), (case, r.loglik, q.loglik)
    a, b = r.fixed.set_index("term"), q.fixed.set_index("term")
    assert sorted(a.index) == sorted(b.index)
    move = (a["estimate"] - b.loc[a.index, "estimate"]).abs() / b.loc[a.index, "std_error"]
    assert move.max() <= 1e-5, (case, move.to_dict())
    ra, rq = r.random.reset_index(drop=True), q.random.reset_index(drop=True)
    assert list(ra["stata_term"]) == list(rq["stata_term"])
    move = (ra["estimate"] - rq["estimate"]).abs() / rq["std_error"]
    assert move.max() <= 1e-5, (case, move.to_list())


@pytest.mark.parametrize("case", CASES)
def test_lme4_standard_errors_are_the_exact_laplaces(datadir, case):
    r, q = _fits(datadir, case)
    a, b = r.fixed.set_index("term"), q.fixed.set_index("term")
    rel = (a["std_error"] / b.loc[a.index, "std_error"] - 1).abs()
    assert rel.max() <= 1e-4, (case, rel.to_dict())
    rel = (r.random["std_error"].to_numpy() / q.random["std_error"].to_numpy() - 1)
    assert np.abs(rel).max() <= 1e-4, (case, rel)


@pytest.mark.parametrize("case", CASES)
def test_both_engines_carry_the_same_covariance_of_beta_with_the_variances(datadir, case):
    """``fixed_random_vcov`` (Stata's e(V) off-diagonal block, which margins' delta method uses),
    from each engine's own full observed information, on the correlation scale to 1e-4."""
    r, q = _fits(datadir, case)
    a, b = np.asarray(r.fixed_random_vcov), np.asarray(q.fixed_random_vcov)
    p, k = len(r.fixed), len(r.random)
    assert a.shape == b.shape == (p, k), (a.shape, b.shape)
    scale = np.outer(q.fixed["std_error"], q.random["std_error"])
    assert np.abs(a / scale - b / scale).max() <= 1e-4, (case, np.abs(a / scale - b / scale).max())
