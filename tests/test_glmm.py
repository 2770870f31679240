"""GLMMs (issue 23, first slice): the spec, glmer on the lme4 engine, the result, refusals.

The differential cases compare with glmer run by ``Rscript r/tests/glmm_reference.R`` (a
separate R process, another optimizer: nloptwrap to tight tolerances) on the hospital data
(fixtures/glmm), lme4's grouseticks and mlmRev's Contraception: log likelihood 1e-6
relative, fixed effects, their SEs (from numDeriv's Hessian of glmer's deviance; glmer's own
``vcov(use.hessian = TRUE)`` within 1e-4, see the test) and variances 1e-5 relative; and the log likelihood of a scalar random effect against R's ``integrate()``
of the marginal likelihood at glmer's estimates (the quadrature error of k points, 1e-3).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, SpecError, UnsupportedSpecError, UsageError
from hlmbridge.results.fit_result import FitResult
from hlmbridge.spec.model import GLMM_NO_REML, ModelSpec, RandomLevel
from hlmbridge.spec.translate import parse_any

REPO = Path(__file__).resolve().parent.parent
HOSPITAL = REPO / "fixtures" / "glmm" / "hospital.dat"
HOSP_COLUMNS = ["hosp", "loginc", "distance", "dropout", "college", "mother"]
HOSP_FORMULA = "hosp ~ loginc + distance + dropout + college + (1 | mother)"
MELOGIT = "melogit hosp loginc distance dropout college || mother:, intpoints(12)"


@pytest.fixture(scope="module")
def hospital() -> pd.DataFrame:
    return pd.read_csv(HOSPITAL, sep=r"\s+", header=None, names=HOSP_COLUMNS)


# ---- the spec (no R) ------------------------------------------------------------------
def test_stata_commands_carry_family_and_integration():
    s = parse_any(MELOGIT)
    assert (s.family, s.link, s.intmethod, s.intpoints, s.method) == ("binomial", "logit", "mvaghermite", 12, "ml")
    s = parse_any("melogit hosp loginc || mother:")
    assert (s.intmethod, s.intpoints) == ("mvaghermite", 7)  # Stata's default
    s = parse_any("xtlogit hosp loginc distance, i(mother) re nolog")
    assert (s.family, s.intmethod, s.intpoints, s.levels[0].group) == ("binomial", "mvaghermite", 12, "mother")
    s = parse_any("mepoisson y x, irr || g: x, intmethod(laplace)")
    assert (s.family, s.link, s.intmethod, s.intpoints, s.eform) == ("poisson", "log", "laplace", 1, "irr")
    assert s.levels[0].slopes == ("x",)
    assert parse_any("melogit y x, noconstant || g:, intmethod(mcaghermite) intpoints(3)").constant is False
    assert parse_any("xtlogit y x, i(g) re intmethod(aghermite)").intmethod == "mcaghermite"
    # the spec round-trips through Stata's syntax and the serialized form
    from hlmbridge.spec.serialize import spec_from_dict, spec_to_dict

    for text in (MELOGIT, "mepoisson y x || g: x, intmethod(laplace) irr", "melogit y x || g:, or"):
        spec = parse_any(text)
        assert parse_any(spec.to_stata()) == spec
        assert spec_from_dict(spec_to_dict(spec)) == spec


def test_gaussian_stays_the_default():
    spec = parse_any("mixed y x || g:")
    assert (spec.family, spec.link, spec.intmethod, spec.intpoints, spec.is_glmm) == (
        "gaussian", "identity", None, None, False)
    assert "family" not in __import__("hlmbridge.spec.serialize", fromlist=["x"]).spec_to_dict(spec)


@pytest.mark.parametrize("command, words", [
    ("melogit y x || g:, reml", "'reml' is an option of mixed"),
    ("melogit y x || g:, dfmethod(residual)", "'dfmethod' is an option of mixed"),
    ("xtlogit y x, i(g) fe", "only the random-effects model"),
    ("xtlogit y x, re", "add i(panelvar)"),
    ("melogit y x || g:, irr", "melogit takes 'or'"),
    ("melogit y x || g:, intpoints(0)", "intpoints() needs a positive whole number"),
    ("melogit y x || g:, intmethod(laplace) intpoints(7)", "intmethod(laplace) uses one point"),
    ("melogit y x || g:, intmethod(mcaghermite_x)", "intmethod("),
    ("melogit y x || g:, exposure(t)", "melogit has no exposure() option"),
    ("mepoisson y x || g:, binomial(n)", "mepoisson has no binomial() option"),
    ("meprobit y x || g:, or", "'or' does not apply to meprobit"),
    ("meglm y x || g:", "meglm without family() is Stata's gaussian model"),
    ("meglm y x || g:, family(poisson) link(probit)", "the poisson family with link(probit) is not supported"),
    ("meglm y x || g:, family(gamma)", "hlmbridge reads family(bernoulli)"),
    ("xtpoisson y x, i(g) re", "gamma-distributed random effect"),
    ("xtprobit y x, re", "add i(panelvar)"),
    ("melogit y x || g:, binomial(0)", "needs the number of trials"),
])
def test_stata_glmm_options_refused(command, words):
    with pytest.raises(SpecError) as err:
        parse_any(command)
    assert words in str(err.value)


def test_spec_validation():
    with pytest.raises(SpecError, match="REML is not defined"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", method="reml")
    with pytest.raises(SpecError, match="not supported"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="poisson", link="probit")
    with pytest.raises(SpecError, match="unknown family"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="gamma")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="linear mixed model's likelihood is exact"):
        ModelSpec("y", levels=(RandomLevel("g"),), intpoints=7)


def test_statsmodels_refuses_glmms(hospital):
    with pytest.raises(UnsupportedSpecError, match="statsmodels cannot fit a binomial GLMM: it has no maximum-"):
        hlmbridge.fit(HOSP_FORMULA, hospital, engine="statsmodels", family="binomial")
    with pytest.raises(UnsupportedSpecError, match="statsmodels cannot fit a binomial GLMM"):
        hlmbridge.fit(MELOGIT, hospital, engine="statsmodels")


# ---- fit()'s arguments ------------------------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("kwargs, words", [
    ({"family": "binomial", "reml": True}, GLMM_NO_REML),
    ({"family": "binomial", "REML": True}, GLMM_NO_REML),
    ({"nagq": 12}, "nagq= applies to a GLMM"),
    ({"family": "binomial", "nagq": 0}, "nagq=0 is not supported"),
    ({"family": "binomial", "nagq": 2.5}, "whole number"),
    ({"family": "binomial", "nagq": 3, "nAGQ": 4}, "both nagq= and nAGQ="),
    ({"family": "gamma"}, "family='gamma' is not supported"),
    ({"family": "binomial", "df_method": "satterthwaite"}, "df_method= applies to linear mixed models"),
])
def test_fit_usage_errors(hospital, kwargs, words):
    with pytest.raises(UsageError) as err:
        hlmbridge.fit(HOSP_FORMULA, hospital, **kwargs)
    assert words in str(err.value)


@pytest.mark.requires_r
def test_fit_usage_errors_for_stata_commands(hospital):
    with pytest.raises(UsageError, match=re.escape(GLMM_NO_REML)):
        hlmbridge.fit(MELOGIT, hospital, reml=True)
    with pytest.raises(UsageError, match="nagq= for a model that states its integration"):
        hlmbridge.fit(MELOGIT, hospital, nagq=7)
    with pytest.raises(UsageError, match="family='poisson' but the model is a binomial GLMM"):
        hlmbridge.fit(MELOGIT, hospital, family="poisson")
    with pytest.raises(UsageError, match="for a Stata command write melogit"):
        hlmbridge.fit("mixed hosp loginc || mother:", hospital, family="binomial")


# ---- the lme4 engine's refusals and bad input --------------------------------------------
@pytest.mark.requires_r
def test_lme4_refuses_quadrature_glmer_cannot_compute(hospital):
    slope = "melogit hosp loginc distance || mother: distance"
    with pytest.raises(UnsupportedSpecError) as err:
        hlmbridge.fit(slope, hospital)
    assert str(err.value) == (
        "The lme4 engine cannot fit mvaghermite quadrature with 7 points on this random part: glmer's nAGQ > 1 "
        "needs a single scalar random effect, and Laplace would be a different estimate (engine='quadrature' fits it "
        "on one grouping level; or ask for intmethod(laplace) / nagq=1 to fit Laplace's approximation).")
    with pytest.raises(UnsupportedSpecError, match="needs a single scalar random effect"):
        hlmbridge.fit("hosp ~ loginc + (distance | mother)", hospital, family="binomial", nAGQ=5)
    with pytest.raises(UnsupportedSpecError, match="glmer has no non-adaptive Gauss-Hermite quadrature"):
        hlmbridge.fit("melogit hosp loginc || mother:, intmethod(ghermite)", hospital)
    res = hlmbridge.fit(slope + ", intmethod(laplace)", hospital)  # Laplace fits
    assert res.spec.intmethod == "laplace" and res.integration.startswith("Laplace")
    assert list(res.random["stata_term"]) == ["var(distance)", "var(_cons)"]


@pytest.mark.requires_r
def test_bad_responses(hospital):
    bad = hospital.assign(hosp=hospital["hosp"] * 2)
    with pytest.raises(DataError, match=re.escape("a binomial GLMM needs a response in [0, 1] (0/1, or a proportion with its trials as weights); 'hosp' has the value 2")):
        hlmbridge.fit(HOSP_FORMULA, bad, family="binomial")
    for value in (1.5, -1.0):
        counts = hospital.assign(hosp=hospital["hosp"].astype(float))
        counts.loc[3, "hosp"] = value
        with pytest.raises(DataError, match=f"a Poisson GLMM needs a non-negative whole-number response; 'hosp' "
                                            f"has the value {value:g}"):
            hlmbridge.fit(HOSP_FORMULA, counts, family="poisson")



@pytest.mark.requires_r
def test_linear_model_only_methods_refused(hospital):
    res = hlmbridge.fit(MELOGIT, hospital)
    for call in (res.recov, res.random_sd, res.tidy, res.coef):  # icc: test_glmm_icc.py; fitted/predict: test_glmm_postfit.py
        with pytest.raises(UnsupportedSpecError, match="linear mixed models only"):
            call()
    with pytest.raises(UnsupportedSpecError, match="linear mixed models only"):
        res.with_df("residual")
    lmm = hlmbridge.fit("mixed hosp loginc || mother:", hospital)
    with pytest.raises(UnsupportedSpecError, match="belongs to a GLMM"):
        lmm.eform()


# ---- numbers ----------------------------------------------------------------------------
@pytest.mark.requires_r
def test_hospital_result_numbers(hospital):
    """What Stata prints, computed from the fit's own numbers (the Stata values themselves are
    checked by validate against fixtures/glmm)."""
    res = hlmbridge.fit(MELOGIT, hospital)
    assert res.family == "binomial" and res.nobs == 1060 and res.groups[0].n_groups == 501
    fx = res.fixed.set_index("stata_term")
    assert list(fx.index) == ["loginc", "distance", "dropout", "college", "_cons"]
    v = res.random.iloc[0]
    assert v["stata_term"] == "var(_cons)"
    # CI of a variance on the log scale (Stata: log SD by the delta method, the same interval)
    z = 1.959963984540054
    half = z * v["std_error"] / v["estimate"]
    assert np.isclose(v["conf_low"], v["estimate"] * np.exp(-half)) and np.isclose(v["conf_high"], v["estimate"] * np.exp(half))
    assert res.lr_kind == "chibar2" and res.lr_df == 1
    assert np.isclose(res.lr_chi2, 2 * (res.loglik - res.loglik_linear))
    assert np.isclose(res.aic, -2 * res.loglik + 12) and np.isclose(res.bic, -2 * res.loglik + 6 * np.log(1060))
    xt = res.xt_parameters().set_index("stata_term")
    assert np.isclose(xt.loc["/lnsig2u", "estimate"], np.log(v["estimate"]))
    assert np.isclose(xt.loc["rho", "estimate"], v["estimate"] / (v["estimate"] + np.pi**2 / 3))
    eform = res.eform().set_index("stata_term")
    assert np.allclose(eform["estimate"], np.exp(fx["estimate"]))
    assert np.allclose(eform["std_error"], np.exp(fx["estimate"]) * fx["std_error"])
    text = res.summary()
    assert "Mixed-effects logistic regression" in text and "Integration pts.  =         12" in text
    assert "LR test vs. logistic model: chibar2(01) =" in text
    assert FitResult.from_dict(res.to_dict()) == res


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("glmm_reference")
    proc = subprocess.run(["Rscript", "--vanilla", str(REPO / "r" / "tests" / "glmm_reference.R"), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "glmm_reference.json").read_text(encoding="utf-8"))


CASES = {
    "hospital_laplace": ("hospital.csv", HOSP_FORMULA, "binomial", 1),
    "hospital_agq12": ("hospital.csv", HOSP_FORMULA, "binomial", 12),
    "grouse_laplace": ("grouseticks.csv", "TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)", "poisson", 1),
    "grouse_agq9": ("grouseticks.csv", "TICKS ~ YEAR + H + (1 | BROOD)", "poisson", 9),
    "contraception_slope": ("contraception.csv", "use ~ urban + age + (urban | district)", "binomial", 1),
}


@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_differential_vs_glmer(reference, case):
    out, ref = reference
    csv, formula, family, nagq = CASES[case]
    data = pd.read_csv(out / csv, dtype={"YEAR": str, "BROOD": str, "LOCATION": str, "district": str})
    res = hlmbridge.fit(formula, data, family=family, nAGQ=nagq)
    r = ref[case]
    # glmer's nAGQ > 1 log likelihood of a Poisson model leaves out the saturated log likelihood;
    # hlmbridge adds it back, so the comparison is with R's integrate() (k-point quadrature is
    # within 1e-3 of the exact integral here; Laplace's approximation is not, by 1.7 on hospital).
    if nagq > 1:
        assert abs(res.loglik - r["loglik_direct"]) < 1e-3
    if nagq == 1 or family == "binomial":
        assert abs(res.loglik - r["loglik"]) <= 1e-6 * abs(r["loglik"])
    assert abs(res.engine_loglik - r["loglik"]) <= 1e-6 * abs(r["loglik"])
    fx = res.fixed.set_index("term")
    for term, b in r["fixef"].items():
        assert abs(fx.loc[term, "estimate"] - b) <= 1e-5 * max(abs(b), fx.loc[term, "std_error"]), term
        # SEs from the full observed information: numDeriv's extrapolated Hessian of glmer's exact
        # deviance (PIRLS restarted at each point; r/tests/glmm_reference.R), 1e-5. glmer's own
        # vcov(use.hessian = TRUE) (r["se"]) differentiates its deviance with PIRLS started from
        # its first stage's linear predictor, which moves it (1.1e-4 relative on hospital Laplace,
        # 1.6e-3 on Contraception's slope): kept in the reference, not held.
        se = r["se_numderiv"][term]
        assert abs(fx.loc[term, "std_error"] - se) <= 1e-5 * se, term
    rnd = res.random
    for group, mat in r["varcorr"].items():
        mat = np.atleast_2d(np.asarray(mat, dtype=float))
        rows = rnd[rnd["lme4_group"] == group]
        for row in rows.itertuples():
            terms = [t for t in (row.term1, row.term2) if isinstance(t, str) and t]
            names = ["(Intercept)"] + [t for t in sorted(set(rnd["term1"])) if t != "(Intercept)"]
            i = names.index(terms[0])
            j = names.index(terms[-1])
            assert abs(row.estimate - mat[i, j]) <= 1e-5 * np.sqrt(abs(mat[i, i] * mat[j, j])), (group, terms)
    assert res.converged


# ---- the hospital log: import and validate ------------------------------------------------
GLMM_CASES = REPO / "fixtures" / "glmm" / "cases"
HOSPITAL_LOG = REPO / "fixtures" / "glmm" / "hospital_stata18.log"


def test_hospital_log_tables_are_read():
    from hlmbridge.reference.stata_log import parse_log

    parsed = parse_log(HOSPITAL_LOG, lenient=True)
    kinds = {b.kind: b for b in parsed.blocks}
    xt, me = kinds["xtlogit"], kinds["melogit"]
    assert xt.meta["options"] == me.meta["options"] == "intmethod(mvaghermite) intpoints(12)"
    cells = {c.path: c.printed for c in me.cells}
    assert cells[("random", "mother:var(_cons)", "std_error")] == ".4894986"
    assert cells[("header", "loglik")] == "-522.65042" and cells[("lr", "chi2")] == "29.61"
    cells = {c.path: c.printed for c in xt.cells}
    assert cells[("random", "rho", "conf_high")] == ".4665343" and cells[("random", "/lnsig2u", "estimate")] == ".4372018"
    assert len(me.cells) == 46 and len(xt.cells) == 54
    # the estimates table with Stata's abbreviated label is refused by name, never half read
    assert len(parsed.problems) == 1 and "_cons[mot~r])" in str(parsed.problems[0])


def test_hospital_fixtures_are_the_import_of_the_committed_log(tmp_path):
    from hlmbridge.reference.fixtures import import_stata

    paths, _ = import_stata(HOSPITAL_LOG, tmp_path, lenient=True)
    assert sorted(p.name for p in paths) == sorted(p.name for p in GLMM_CASES.glob("L*.toml"))
    for p in paths:
        assert p.read_bytes() == (GLMM_CASES / p.name).read_bytes(), p.name
    assert 'engines = ["lme4", "quadrature"]' in (GLMM_CASES / "L0061_melogit.toml").read_text(encoding="utf-8")


def test_hospital_csv_is_the_dat_file():
    proc = subprocess.run([str(Path(__import__("sys").executable)), str(REPO / "scripts" / "make_hospital_csv.py"),
                           "--check"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.requires_r
def test_hospital_fixtures_validate_on_lme4():
    from hlmbridge.check.validate import validate

    report = validate(GLMM_CASES, data=REPO / "fixtures" / "glmm" / "hospital.csv", engines=["lme4"], compare=False)
    bad = [r for r in report.rows if r.status not in ("match", "within", "explained")]
    assert not bad, bad[:5]
    checked = [r for r in report.rows if r.status in ("match", "within")]
    assert len(checked) == 100


@pytest.mark.requires_r
def test_lrtest_between_glmms(hospital):
    small = hlmbridge.fit("melogit hosp loginc distance || mother:, intpoints(12)", hospital)
    big = hlmbridge.fit(MELOGIT, hospital)
    t = hlmbridge.lrtest(small, big)
    assert t.df == 2 and np.isclose(t.chi2, 2 * (big.loglik - small.loglik))
    with pytest.raises(UsageError, match="integrate the random effects differently"):
        hlmbridge.lrtest(hlmbridge.fit("melogit hosp loginc distance || mother:, intmethod(laplace)", hospital), big)
    with pytest.raises(UsageError, match="different families"):
        hlmbridge.lrtest(hlmbridge.fit("mixed hosp loginc || mother:", hospital), big)


@pytest.mark.requires_r
def test_ranef_is_glmers_own(reference):
    """A GLMM's ranef() is glmer's ranef(condVar = TRUE), flagged as the engine's; checked against
    the reference glmer (another optimizer) on a random-slope model."""
    out, ref = reference
    data = pd.read_csv(out / "contraception.csv", dtype={"district": str})
    res = hlmbridge.fit("use ~ urban + age + (urban | district)", data, family="binomial")
    re_ = res.ranef()
    assert "glmer's ranef(condVar = TRUE)" in re_.attrs["source"]
    assert list(re_.columns) == ["group", "level", "term", "stata_term", "estimate", "std_error", "conf_low",
                                 "conf_high"]
    assert list(re_["term"][:4]) == ["(Intercept)", "urban", "(Intercept)", "urban"]
    r = pd.DataFrame(ref["contraception_slope"]["ranef"])
    got = re_.set_index(["level", "term"])
    want = r.set_index(["grp", "term"])
    assert len(got) == len(want) == 2 * data["district"].nunique()
    for key, row in want.iterrows():
        assert abs(got.loc[key, "estimate"] - row["condval"]) <= 1e-4 * row["condsd"], key
        assert abs(got.loc[key, "std_error"] - row["condsd"]) <= 1e-4 * row["condsd"], key
    assert FitResult.from_dict(res.to_dict()) == res


@pytest.mark.requires_r
def test_stata_random_slope(reference):
    # a Stata command with a random slope and intmethod(laplace) is the same model as the formula
    out, _ = reference
    data = pd.read_csv(out / "contraception.csv", dtype={"district": str})
    a = hlmbridge.fit("use ~ urban + age + (urban | district)", data, family="binomial")
    b = hlmbridge.fit("melogit use urban age || district: urban, cov(unstructured) intmethod(laplace)", data)
    assert abs(a.loglik - b.loglik) < 1e-9
    ra, rb = a.random.set_index("stata_term"), b.random.set_index("stata_term")
    assert sorted(ra.index) == sorted(rb.index) == ["cov(urban,_cons)", "var(_cons)", "var(urban)"]
    for col in ("estimate", "std_error"):
        assert np.allclose(ra.loc[rb.index, col], rb[col], rtol=1e-6)
    assert "Unstructured" in b.summary() and "chi2(3)" in b.summary()


@pytest.mark.requires_r
def test_glmer_warnings_reach_the_result(reference):
    """glmer's convergence checks reach the result (here: HEIGHT in metres above sea level, 400-533,
    beside the year indicators; glmer with its defaults warns the same, see the reference run)."""
    out, _ = reference
    data = pd.read_csv(out / "grouseticks.csv", dtype={"YEAR": str, "BROOD": str, "LOCATION": str})
    res = hlmbridge.fit("TICKS ~ YEAR + HEIGHT + (1 | BROOD)", data, family="poisson")
    assert any(w.startswith("Model is nearly unidentifiable: very large eigenvalue") for w in res.warnings), \
        res.warnings
    assert "Warning: Model is nearly unidentifiable" in res.summary()
    clean = hlmbridge.fit("TICKS ~ YEAR + H + (1 | BROOD)", data, family="poisson")
    assert not any("Model" in w for w in clean.warnings), clean.warnings
