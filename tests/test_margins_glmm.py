"""Stata's ``margins`` after a GLMM (:mod:`hlmbridge.results.margins`) against real R.

``Rscript r/tests/margins_glmm_reference.R`` fits the hospital births (logit, nAGQ = 12) and
grouseticks (Poisson, nAGQ = 9) with glmer and computes, at glmer's estimates and without any
quadrature rule of hlmbridge's:

* the margins with the random intercept integrated out (``predict(mu marginal)``, Stata's
  default) by R's ``integrate()``, a covariate's average derivative likewise;
* their Jacobian in (beta, variance) by finite differences in R, and the delta-method SEs with
  the block-diagonal covariance (what hlmbridge's result carries) and with the full one;
* emmeans on the response scale for the fixed-only prediction (``counterfactuals``), the same
  quantity as ``margins YEAR, predict(mu conditional(fixedonly))``.

hlmbridge's fit is put at glmer's estimates and covariance (:func:`at_glmer`) so that each
comparison is of one quantity computed two ways; hlmbridge's own fit is compared with glmer in
tests/test_glmm.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.results.fit_result import FitResult
from hlmbridge.results.margins import margins

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"YEAR": str, "BROOD": str, "mother": str}
CASES = {
    "hospital": ("hosp ~ loginc + distance + dropout + college + (1 | mother)", "binomial", 12),
    "grouse": ("TICKS ~ YEAR + H + (1 | BROOD)", "poisson", 9),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("margins_glmm")
    proc = subprocess.run(["Rscript", "--vanilla", str(REPO / "r" / "tests" / "margins_glmm_reference.R"), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=480)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "margins_glmm_reference.json").read_text(encoding="utf-8"))


def at_glmer(res: FitResult, r: dict) -> FitResult:
    """``res`` at glmer's estimates and covariance: fixed effects, the random-intercept variance,
    the beta block, the variance's variance and their cross-covariance, from R's covariance of
    (variance, beta)."""
    V = np.asarray(r["vcov_full"], dtype=float)
    fixed = tuple((row[0], row[1], r["fixef"][row[0]], *row[3:]) for row in res.fixed_rows)
    assert len(res.random_rows) == 1
    random = ((*res.random_rows[0][:5], float(r["variance"]), *res.random_rows[0][6:]),)
    order = [list(r["fixef"]).index(row[0]) + 1 for row in res.fixed_rows]
    return dataclasses.replace(res, fixed_rows=fixed, random_rows=random,
                               fixed_vcov=tuple(map(tuple, V[np.ix_(order, order)].tolist())),
                               random_vcov=((float(V[0, 0]),),),
                               fixed_random_vcov=tuple(map(tuple, V[np.ix_(order, [0])].tolist())))


def full_vcov(res: FitResult, r: dict) -> np.ndarray:
    """R's covariance of (variance, beta) reordered to hlmbridge's (beta in fixed order, variance)."""
    V = np.asarray(r["vcov_full"], dtype=float)
    order = [list(r["fixef"]).index(row[0]) + 1 for row in res.fixed_rows] + [0]
    return V[np.ix_(order, order)]


@pytest.fixture(scope="module")
def fits(reference):
    out, ref = reference
    cache: dict[str, FitResult] = {}

    def get(case: str) -> FitResult:
        if case not in cache:
            formula, family, nagq = CASES[case]
            data = pd.read_csv(out / f"{case}.csv", dtype=DTYPES)
            cache[case] = at_glmer(hlmbridge.fit(formula, data, family=family, nAGQ=nagq), ref[case])
        return cache[case]

    return get


def close(got, want, rtol: float, atol: float = 0.0, what: str = "") -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, what
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    assert np.all(err <= 0), f"{what}: max |diff| {np.max(np.abs(got - want)):.3g} (got {got}, want {want})"


def _hospital(res: FitResult, **kw) -> pd.DataFrame:
    """The hospital reference's margins, in its order: overall, college 0/1, dydx(distance),
    college=dropout=1, dydx(distance) atmeans."""
    return pd.concat([margins(res, **kw).table, margins(res, at={"college": [0, 1]}, **kw).table,
                      margins(res, dydx="distance", **kw).table.rename(columns={"dydx": "margin"}),
                      margins(res, at={"college": 1, "dropout": 1}, **kw).table,
                      margins(res, dydx="distance", atmeans=True, **kw).table.rename(columns={"dydx": "margin"})],
                     ignore_index=True)


def _grouse(res: FitResult, **kw) -> pd.DataFrame:
    """The grouseticks reference's margins: YEAR's three, dydx(H), dydx(YEAR)'s two, dydx(H) over(YEAR)'s three."""
    return pd.concat([margins(res, "YEAR", **kw).table,
                      margins(res, dydx="H", **kw).table.rename(columns={"dydx": "margin"}),
                      margins(res, dydx="YEAR", **kw).table.rename(columns={"dydx": "margin"}),
                      margins(res, dydx="H", over="YEAR", **kw).table.rename(columns={"dydx": "margin"})],
                     ignore_index=True)


TABLES = {"hospital": _hospital, "grouse": _grouse}


# ---- the default: random effects integrated out, against integrate() -------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_marginal_margins_match_integrate(reference, fits, case):
    """Quadrature against integrate(): 40 points agree to 1e-9 relative (measured 1e-11: the
    integrand is smooth); the fit's own points (12, 9) to 1e-4 of each margin's SE (measured:
    3.5e-5 SE, 1.5e-5 relative, for the hospital derivative at the mean row, where no average
    over rows smooths the 12-point rule's error; 1e-10 SE on grouseticks). The SEs, from
    hlmbridge's Jacobian against R's finite-difference one, to 1e-6 relative (measured 9e-9)."""
    _, ref = reference
    r = ref[case]
    res = fits(case)
    got = TABLES[case](res, points=40)
    close(got["margin"], r["estimate"], 1e-9, 1e-12, f"{case}: margins")
    # the result carries cov(beta, variance) (fixed_random_vcov): Stata's full e(V) SEs
    close(got["std_error"], r["se_full"], 1e-6, 0, f"{case}: SE (the result's full covariance)")
    close(got["statistic"], np.asarray(r["estimate"]) / np.asarray(r["se_full"]), 1e-6, 0, f"{case}: z")
    default = TABLES[case](res)
    assert np.all(np.abs(default["margin"] - r["estimate"]) <= 1e-4 * np.asarray(r["se_block"])), \
        f"{case}: margins at the fit's points"
    assert default.shape[0] == len(r["names"])
    m = margins(res)
    assert m.predict == "mu" and "Marginal predicted mean" in m.notes[1]
    assert not any("cross-covariance" in n for n in m.notes)
    # a result without the cross block (e.g. read from JSON written before it existed): block SEs, said
    old_res = dataclasses.replace(res, fixed_random_vcov=())
    close(TABLES[case](old_res, points=40)["std_error"], r["se_block"], 1e-6, 0, f"{case}: SE (block diagonal)")
    assert any("cross-covariance" in n for n in margins(old_res).notes)


@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_marginal_margins_with_the_full_covariance(reference, fits, case):
    """With ``vcov=`` R's full covariance of (beta, variance) (cross terms, as Stata's e(V)) the SEs
    are R's full delta-method SEs (1e-6). Measured: the cross terms move the hospital overall
    margin's SE from 0.01744 to 0.01448 (-17%)."""
    _, ref = reference
    r = ref[case]
    res = fits(case)
    got = TABLES[case](res, points=40, vcov=full_vcov(res, r))
    close(got["std_error"], r["se_full"], 1e-6, 0, f"{case}: SE (full covariance)")
    q = 1.959963984540054
    close(got["conf_low"], got["margin"] - q * np.asarray(r["se_full"]), 1e-6, 1e-12, f"{case}: CI")
    assert not any("cross-covariance" in n for n in margins(res, vcov=full_vcov(res, r)).notes)


# ---- fixed-only predictions: emmeans on the response scale ------------------------------
@pytest.mark.requires_r
def test_fixedonly_margins_match_emmeans(reference, fits):
    """``margins YEAR, predict(mu conditional(fixedonly))`` is emmeans' ``counterfactuals``
    means on the response scale; ``dydx(YEAR)`` its ``trt.vs.ctrl`` contrasts (1e-8: both the
    delta method in beta with glmer's vcov, hlmbridge's Jacobian by central differences)."""
    _, ref = reference
    em = ref["grouse"]["emmeans"]
    res = fits("grouse")
    got = margins(res, "YEAR", predict="mu_fixedonly")
    assert [str(v) for v in got.table["YEAR"]] == em["level"]
    close(got.table["margin"], em["estimate"], 1e-8, 0, "emmeans estimate")
    close(got.table["std_error"], em["se"], 1e-7, 0, "emmeans SE")
    close(got.table[["conf_low", "conf_high"]].to_numpy().T, [em["lower"], em["upper"]], 1e-7, 0, "emmeans CI")
    same = margins(res, "YEAR", predict="mu conditional(fixedonly)")
    assert np.array_equal(same.table["margin"], got.table["margin"])
    con = ref["grouse"]["contrast"]
    eff = margins(res, dydx="YEAR", predict="mu_fixedonly").table
    assert list(eff["term"]) == ["YEAR: 96 vs 95", "YEAR: 97 vs 95"]
    close(eff["dydx"], con["estimate"], 1e-8, 0, "contrast estimate")
    close(eff["std_error"], con["se"], 1e-7, 0, "contrast SE")
    close(eff["statistic"], con["z"], 1e-7, 0, "contrast z")
    close(eff["p_value"], con["p"], 1e-6, 0, "contrast p")
    # the linear prediction's margins are the fixed-effect combinations: the same as the LMM path
    xb = margins(res, "YEAR", predict="xb")
    beta = np.array([row[2] for row in res.fixed_rows])
    close(xb.table["margin"], xb.L @ beta, 1e-12, 1e-12, "xb")


# ---- usage ------------------------------------------------------------------------------
@pytest.mark.requires_r
def test_margins_glmm_usage_errors(fits):
    res = fits("grouse")
    with pytest.raises(UsageError, match="predict must be one of"):
        margins(res, predict="pr")
    with pytest.raises(UsageError, match="points= sets the quadrature"):
        margins(res, predict="mu_fixedonly", points=20)
    with pytest.raises(UsageError, match="positive number"):
        margins(res, points=0)
    with pytest.raises(UsageError, match="vcov must be a symmetric"):
        margins(res, vcov=np.eye(2))


def test_margins_lmm_refuses_glmm_predictions():
    res = hlmbridge.fit("mixed mathach i.sector##c.ses || id:", hlmbridge.datasets.hsb(), engine="statsmodels")
    with pytest.raises(UsageError, match="belongs to a GLMM"):
        margins(res, "sector", predict="mu")
    with pytest.raises(UsageError, match="vcov= belongs to a GLMM"):
        margins(res, "sector", vcov=np.eye(4))
    assert margins(res, "sector", predict="xb").predict == "xb"


@pytest.mark.requires_r
def test_marginal_margins_refuse_random_slopes_and_laplace_without_points(reference):
    out, _ = reference
    data = pd.read_csv(out / "grouse.csv", dtype=DTYPES)
    slope = hlmbridge.fit("TICKS ~ H + (H | BROOD)", data, family="poisson")
    with pytest.raises(UnsupportedSpecError, match="random intercepts only"):
        margins(slope)
    fixedonly = margins(slope, predict="mu_fixedonly").table
    assert np.isfinite(fixedonly["std_error"]).all()
    laplace = hlmbridge.fit("TICKS ~ YEAR + H + (1 | BROOD)", data, family="poisson")
    with pytest.raises(UsageError, match="give points="):
        margins(laplace)
    assert np.isfinite(margins(laplace, points=9).table["std_error"]).all()


# ---- marginsplot ------------------------------------------------------------------------
@pytest.mark.requires_r
def test_marginsplot_of_glmm_margins_writes_png(fits, tmp_path):
    pytest.importorskip("matplotlib")
    m = margins(fits("hospital"), at={"distance": [0, 5, 10]})
    fig = m.plot()
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Mean (random effects integrated out)"
    lines = [ln for ln in ax.lines if ln.get_gid() == "margins"]
    assert len(lines) == 1 and np.allclose(lines[0].get_ydata(), m.table["margin"])
    path = tmp_path / "margins_glmm.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.requires_r
def test_marginal_margins_at_a_zero_variance(fits):
    """At a variance of 0 (a singular fit's boundary) the marginal mean is the fixed-only one and
    its derivative in the variance is one-sided: E[linkinv(eta + s z)] = linkinv(eta) +
    var * linkinv''(eta) / 2 + O(var^2), for the logit linkinv'' = p (1 - p) (1 - 2 p)."""
    res = fits("hospital")
    row = res.random_rows[0]
    zero = dataclasses.replace(res, random_rows=((*row[:5], 0.0, *row[6:]),))
    got = margins(zero)
    fixedonly = margins(zero, predict="mu_fixedonly")
    close(got.table["margin"], fixedonly.table["margin"], 1e-12, 0, "margin at variance 0")
    X = zero.design.X
    beta = np.array([r[2] for r in zero.fixed_rows])
    p = 1 / (1 + np.exp(-(X @ beta)))
    jb = (p * (1 - p)) @ X / len(p)
    dv = float(np.mean(p * (1 - p) * (1 - 2 * p))) / 2
    cross = np.asarray(zero.fixed_random_vcov)[:, 0]  # cov(beta, variance)
    want = np.sqrt(jb @ np.asarray(zero.fixed_vcov) @ jb + dv**2 * zero.random_vcov[0][0] + 2 * dv * jb @ cross)
    close(got.table["std_error"], [want], 1e-6, 0, "SE at variance 0 (one-sided difference in the variance)")
