"""A GLMM after the fit (issue 23 item 4, issue 24 item 3) against real glmer and R's integrate().

``Rscript r/tests/glmm_postfit_reference.R`` fits each case with glmer (another optimizer:
nloptwrap to tight tolerances) and writes glmer's ``fitted``, ``residuals(type = ...)``,
``predict`` (link and response, ``re.form`` NULL and NA, new rows with unseen groups), its
``ranef(condVar = TRUE)``, and, by R's ``integrate()`` at glmer's estimates, the posterior means
and SDs of a scalar random intercept (Stata's ``ebmeans``/``reses``) and the marginal means
(Stata's ``predict, marginal``).

hlmbridge's fit is then put at glmer's own estimates (fixed effects, variances and conditional
modes replaced in the result: :func:`at_glmer`), so that every comparison is of the same
numbers computed two ways: arithmetic (predictions, residuals) to 1e-9 relative, quadrature
against ``integrate()`` to the quadrature error measured here. The hlmbridge fit itself (its own
optimum) is compared with glmer in tests/test_glmm.py.
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

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"YEAR": str, "BROOD": str, "LOCATION": str, "district": str, "mother": str}

CASES = {
    "hospital_agq12": ("hospital", "hosp ~ loginc + distance + dropout + college + (1 | mother)", "binomial", 12),
    "grouse_agq9": ("grouse", "TICKS ~ YEAR + H + (1 | BROOD)", "poisson", 9),
    "grouse_crossed": ("grouse", "TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)", "poisson", 1),
    "contraception_slope": ("contraception", "use ~ urban + age + (urban | district)", "binomial", 1),
}
SCALAR = ["hospital_agq12", "grouse_agq9"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("glmm_postfit")
    proc = subprocess.run(["Rscript", "--vanilla", str(REPO / "r" / "tests" / "glmm_postfit_reference.R"), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "glmm_postfit_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fits(reference):
    out, _ = reference
    cache: dict[str, tuple[FitResult, pd.DataFrame, pd.DataFrame]] = {}

    def get(case: str) -> tuple[FitResult, pd.DataFrame, pd.DataFrame]:
        if case not in cache:
            name, formula, family, nagq = CASES[case]
            data = pd.read_csv(out / f"{name}.csv", dtype=DTYPES)
            new = pd.read_csv(out / f"{name}_new.csv", dtype=DTYPES)
            cache[case] = (hlmbridge.fit(formula, data, family=family, nAGQ=nagq), data, new)
        return cache[case]

    return get


def at_glmer(res: FitResult, r: dict) -> FitResult:
    """``res`` with glmer's estimates: fixed effects, variance parameters and conditional modes."""
    fixed = tuple((row[0], row[1], r["fixef"][row[0]], *row[3:]) for row in res.fixed_rows)
    random = []
    for row in res.random_rows:
        group, kind, t1, t2 = row[0], row[1], row[2], row[3]
        mat = np.atleast_2d(np.asarray(r["varcorr"][group], dtype=float))
        terms = ["(Intercept)"] + sorted({x[2] for x in res.random_rows if x[0] == group} - {"(Intercept)"})
        i = terms.index(t1)
        j = i if kind == "var" else terms.index(t2)
        random.append((*row[:5], float(mat[i, j]), *row[6:]))
    rf = pd.DataFrame(r["ranef"])
    ranef = tuple((g, str(lv), t, float(m), float(s)) for g, lv, t, m, s in
                  zip(rf["grpvar"], rf["grp"], rf["term"], rf["condval"], rf["condsd"], strict=True))
    assert len(ranef) == len(res.engine_ranef)
    return dataclasses.replace(res, fixed_rows=fixed, random_rows=tuple(random), engine_ranef=ranef)


def close(got, want, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    assert np.all(err <= 0), f"max |diff| {np.max(np.abs(got - want)):.3g} at {int(np.argmax(err))}"


# ---- glmer's fitted, residuals, predict ----------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_fitted_residuals_predict_are_glmers(reference, fits, case):
    _, ref = reference
    r = ref[case]
    res = at_glmer(fits(case)[0], r)
    close(res.fitted(), r["fitted"])
    for kind in ("response", "pearson", "deviance", "working"):
        close(res.residuals(kind), r["residuals"][kind])
    p = r["predict"]
    close(res.predict(), p["link"])
    close(res.predict(type="response"), p["response"])
    close(res.predict(re_form="~0"), p["link_fixed"])
    close(res.predict(re_form="~0", type="response"), p["response_fixed"])
    close(res.fitted(level=0), p["response_fixed"])


@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_predict_new_rows_and_levels_as_glmer(reference, fits, case):
    _, ref = reference
    r = ref[case]
    res, _, new = fits(case)
    res = at_glmer(res, r)
    p = r["predict_new"]
    link = res.predict(new)
    assert list(link.values.index) == list(new.index)
    # rows meeting a group the fit did not see (the R script's new frames): 2, or 3 when LOCATION counts too
    assert link.n_new_levels == (3 if case == "grouse_crossed" else 2)
    close(link, p["link"])
    close(res.predict(new, type="response"), p["response"])
    fixed = res.predict(new, re_form="~0")
    assert fixed.n_new_levels == 0
    close(fixed, p["link_fixed"])
    close(res.predict(new, re_form="~0", type="response"), p["response_fixed"])


# ---- empirical Bayes: modes (glmer's ranef) and means (Stata's ebmeans) ------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("case", SCALAR)
def test_ebmodes_are_glmers_ranef(reference, fits, case):
    _, ref = reference
    res = fits(case)[0]
    eb = res.ebmeans()
    own = res.ranef()  # glmer's conditional modes of the same fit
    close(eb["ebmode"], own["estimate"], rtol=0, atol=1e-8)
    # glmer's conditional SDs are the curvature at the weights of its last PIRLS pass: 4e-7 relative
    # off the curvature at its modes with tolPwrss = 1e-10 (as the engine runs it), 2e-13 with 1e-14
    # (measured in R on grouseticks); hlmbridge's are the curvature at the modes
    close(eb["ebmode_sd"], own["std_error"], rtol=1e-6)
    at = at_glmer(res, ref[case]).ebmeans()  # and at the reference glmer's estimates
    rf = pd.DataFrame(ref[case]["ranef"]).set_index("grp").loc[list(at["level"])]
    close(at["ebmode"], rf["condval"], rtol=0, atol=1e-8)
    close(at["ebmode_sd"], rf["condsd"], rtol=1e-6)
    assert "ebmeans" in at.attrs["source"] and "glmer's ranef" in at.attrs["source"]


@pytest.mark.requires_r
@pytest.mark.parametrize("case", SCALAR)
def test_ebmeans_equal_integrate(reference, fits, case):
    """Posterior means and SDs by mean-variance adaptive quadrature equal R's integrate(): with 40
    points within 1e-9 of the posterior SD (measured 2e-11); with the fit's own points (12, 9; the
    default, as Stata's predict uses the estimation's) within the k-point rule's error, 1e-3 of the
    posterior SD (measured 8e-6 hospital, 1.4e-4 grouseticks)."""
    _, ref = reference
    r = ref[case]
    res = at_glmer(fits(case)[0], r)
    want = pd.DataFrame(r["ebmeans"]).set_index("grp")
    for points, tol in ((40, 1e-9), (None, 1e-3)):
        eb = res.ebmeans(points)
        assert eb.attrs["points"] == (points or CASES[case][3])
        w = want.loc[list(eb["level"])]
        sd = w["sd"].to_numpy()
        assert np.max(np.abs(eb["ebmean"].to_numpy() - w["mean"].to_numpy()) / sd) < tol
        assert np.max(np.abs(eb["ebmean_sd"].to_numpy() - sd) / sd) < tol
    # the means differ from the modes (a skewed posterior): the two are not the same numbers
    assert np.max(np.abs(eb["ebmean"] - eb["ebmode"])) > 1e-2


@pytest.mark.requires_r
def test_ebmeans_random_slope(reference, fits):
    """A vector random effect (intercept and urban slope by district): the k^q-point product rule,
    mean-variance adaptive, against R's nested integrate() for three districts: 20 points within
    1e-9 of the posterior SD (measured 1.5e-12), Stata's default 7 points within 1e-3 (measured
    2.6e-5). The modes are glmer's ranef; glmer's conditional SDs are 4.2e-6 relative off the
    curvature at its modes here (its last PIRLS weights with tolPwrss = 1e-10; 2e-11 with 1e-14,
    measured in R), so they are held to 1e-5."""
    _, ref = reference
    r = ref["contraception_slope"]
    res = fits("contraception_slope")[0]
    own = res.ebmeans(points=7)
    glmer = res.ranef()
    assert list(own["level"]) == list(glmer["level"]) and list(own["term"]) == list(glmer["term"])
    close(own["ebmode"], glmer["estimate"], rtol=0, atol=1e-8)
    close(own["ebmode_sd"], glmer["std_error"], rtol=1e-5)
    res = at_glmer(res, r)
    want = pd.DataFrame(r["ebmeans"]).set_index(["grp", "term"])
    for points, tol in ((20, 1e-9), (7, 1e-3)):
        eb = res.ebmeans(points).set_index(["level", "term"]).loc[want.index]
        sd = want["sd"].to_numpy()
        assert np.max(np.abs(eb["ebmean"].to_numpy() - want["mean"].to_numpy()) / sd) < tol
        assert np.max(np.abs(eb["ebmean_sd"].to_numpy() - sd) / sd) < tol
    with pytest.raises(UsageError, match="Laplace approximation"):
        res.ebmeans()


# ---- population averaged: Stata's predict, marginal ----------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("case", SCALAR)
def test_marginal_predict_equals_integrate(reference, fits, case):
    _, ref = reference
    r = ref[case]
    res = at_glmer(fits(case)[0], r)
    close(res.marginal_predict(points=40), r["marginal"], rtol=1e-9)
    # at the fit's own points (Stata's default for predict, marginal): the k-point rule's error
    close(res.marginal_predict(), r["marginal"], rtol=1e-4)
    assert np.all(np.abs(np.asarray(res.marginal_predict()) - np.asarray(res.predict(re_form="~0", type="response")))
                  > 0)


@pytest.mark.requires_r
def test_marginal_predict_random_slope(reference, fits):
    """A random slope: the marginal mean is one integral over z'b ~ N(0, z'Dz), checked against R's
    nested integrate() over both random effects."""
    _, ref = reference
    r = ref["contraception_slope"]
    res, data, _ = fits("contraception_slope")
    res = at_glmer(res, r)
    rows = np.asarray(r["marginal_rows"]) - 1
    close(np.asarray(res.marginal_predict(points=40))[rows], r["marginal"], rtol=1e-8)
    new = data.iloc[rows]  # the same rows as new data (random slopes need their columns there)
    close(res.marginal_predict(new, points=40), r["marginal"], rtol=1e-8)
    with pytest.raises(UsageError, match="Laplace approximation"):
        res.marginal_predict()


# ---- refusals -------------------------------------------------------------------------------
@pytest.mark.requires_r
def test_glmm_postfit_usage_errors(reference, fits):
    res = fits("grouse_crossed")[0]
    with pytest.raises(UsageError, match="kind must be one of 'response', 'pearson', 'deviance', 'working'"):
        res.residuals("partial")
    with pytest.raises(UsageError, match="type must be 'link' or 'response'"):
        res.predict(type="terms")
    with pytest.raises(UnsupportedSpecError, match="integrates the random effects of one grouping level; this model has 2"):
        res.ebmeans()
    with pytest.raises(UnsupportedSpecError, match="needs a binomial model with one random intercept"):
        res.xtrho()
    with pytest.raises(UsageError, match="points must be a positive whole number"):
        fits("hospital_agq12")[0].marginal_predict(points=0)
    lmm = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", hlmbridge.datasets.sleepstudy(), engine="statsmodels")
    with pytest.raises(UnsupportedSpecError, match="belongs to a GLMM"):
        lmm.ebmeans()
    with pytest.raises(UnsupportedSpecError, match="integrates a GLMM's random effects out"):
        lmm.marginal_predict()
    with pytest.raises(UsageError, match="type must be 'link' or 'response'"):
        lmm.predict(type="probability")
    assert np.allclose(lmm.predict(type="response"), lmm.predict())  # identity link: the same numbers
