"""The parametric bootstrap comparison (pbkrtest's ``PBmodcomp``): reproducible per seed, failures
counted, and its p-values in distribution with pbkrtest's (R's own random numbers differ, so the
check is within Monte Carlo error, plus a two-sample test of the two reference distributions).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from hlmbridge.inference.pbmodcomp import pbmodcomp, summarize_reference

REPO = Path(__file__).resolve().parents[1]
R_FILES = tuple(REPO / "r" / "tests" / f for f in ("df_reference.R", "anova_reference.R", "compare_reference.R"))
LARGE = "Reaction ~ Days + I(Days^2) + (Days | Subject)"
SMALL = "Reaction ~ Days + (Days | Subject)"


def _fits(engine: str = "lme4", reml: bool = False):
    ss = hlmbridge.datasets.sleepstudy()
    return ss, hlmbridge.fit(LARGE, ss, engine=engine, reml=reml), hlmbridge.fit(SMALL, ss, engine=engine, reml=reml)


def test_summary_formulas_are_pbkrtests() -> None:
    """pbkrtest's .summarizePB by hand on a small reference set: Gamma by its moments, Bartlett
    scaled by df / mean, F on 2 mean / (mean - 1) df; non-positive replicates left out."""
    from scipy import stats

    ref = np.array([0.5, 1.5, 3.0, 0.0, -1e-9, 2.5, 0.2])
    tab = summarize_reference(2.0, 1, ref).set_index("test")
    pos = ref[ref > 0]
    ee, vv = pos.mean(), pos.var(ddof=1)
    assert tab.loc["PBtest", "p_value"] == (1 + 2) / (1 + 5)
    assert tab.loc["LRT", "p_value"] == pytest.approx(stats.chi2.sf(2.0, 1), rel=1e-14)
    assert tab.loc["Gamma", "p_value"] == pytest.approx(stats.gamma.sf(2.0, ee**2 / vv, scale=vv / ee), rel=1e-14)
    assert tab.loc["Bartlett", "stat"] == pytest.approx(2.0 / ee, rel=1e-14)
    assert tab.loc["F", "ddf"] == pytest.approx(2 * ee / (ee - 1), rel=1e-14)


def test_pbmodcomp_is_reproducible_and_refits_reml_by_ml() -> None:
    ss, big, sm = _fits("statsmodels", reml=True)
    stream = io.StringIO()
    a = pbmodcomp(big, sm, ss, nsim=6, seed=5, progress=stream, max_workers=2)
    b = pbmodcomp(big, sm, ss, nsim=6, seed=5, progress=False, max_workers=2)
    assert a.ref == b.ref and len(a.ref) + a.n_failed == 6
    assert stream.getvalue()  # the progress bar of fit_many
    # the observed statistic is the ML one (pbkrtest's getLRT refits both by ML)
    big_ml = hlmbridge.fit(LARGE, ss, engine="statsmodels", reml=False)
    sm_ml = hlmbridge.fit(SMALL, ss, engine="statsmodels", reml=False)
    assert a.tobs == pytest.approx(2 * (big_ml.loglik - sm_ml.loglik), rel=1e-9, abs=1e-9)
    assert a.ndf == 1
    assert "PBtest" in str(a)
    with pytest.raises(UsageError, match="give the model with more parameters first"):
        pbmodcomp(sm, big, ss, nsim=2, progress=False)
    with pytest.raises(UsageError, match="nsim"):
        pbmodcomp(big, sm, ss, nsim=0, progress=False)


@pytest.mark.slow
@pytest.mark.requires_r
def test_pbmodcomp_p_values_in_distribution_with_pbkrtest() -> None:
    """200 replicates each, hlmbridge (lme4 engine) and pbkrtest, on sleepstudy's quadratic term
    (p about 0.2): the PBtest, Gamma and Bartlett p-values within 4 Monte Carlo standard errors
    of the difference of two independent estimates, and the two reference distributions not told
    apart by a two-sample Kolmogorov-Smirnov test (p > 0.001). The observed statistic is the
    same to 1e-6."""
    import rpy2.robjects as ro
    from scipy import stats

    env = ro.Environment()
    for f in R_FILES:
        ro.r["sys.source"](str(f), envir=env)
    nsim = 200
    d_r = env["anova_reference_data"]("lme4", "sleepstudy")
    out = env["compare_reference_pbmodcomp"](d_r, LARGE, SMALL, nsim, 20261208)
    ref_r = dict(zip(out.names, out))
    ss, big, sm = _fits("lme4")
    got = pbmodcomp(big, sm, ss, nsim=nsim, seed=20261208, progress=False, max_workers=2)
    assert got.n_failed == 0
    print({"hlmbridge": got.table()["p_value"].tolist(), "pbkrtest": list(ref_r["p"])})
    assert got.tobs == pytest.approx(float(ref_r["tobs"][0]), rel=1e-6, abs=1e-6)
    p_r = np.array(ref_r["p"], dtype=float)
    p_py = got.table()["p_value"].to_numpy()
    assert p_py[0] == pytest.approx(p_r[0], rel=1e-6)  # LRT: no simulation
    # F's denominator df, 2 mean / (mean - 1), is undefined below a mean of 1 and unbounded near it:
    # on one df (a chi2(1)-like reference, mean about 1) it is not a stable summary to compare.
    for name, a, b in zip(("PBtest", "Gamma", "Bartlett"), p_py[1:4], p_r[1:4]):
        p = 0.5 * (a + b)
        se = np.sqrt(2 * p * (1 - p) / nsim)
        assert abs(a - b) <= 4 * se, f"{name}: hlmbridge {a:.4f}, pbkrtest {b:.4f} (MC se of the difference {se:.4f})"
    ks = stats.ks_2samp(np.asarray(got.ref), np.asarray(ref_r["ref"], dtype=float))
    assert ks.pvalue > 1e-3, f"reference distributions differ: KS p = {ks.pvalue:.2e}"
