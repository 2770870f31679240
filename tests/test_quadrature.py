"""The quadrature engine (issue 24): hlmbridge's own GLMM fit, checked against glmer and Stata.

- against glmer run by ``Rscript r/tests/quadrature_reference.R`` (bobyqa, tolPwrss 1e-14, see
  there why): Laplace = glmer ``nAGQ = 1``, mode-curvature quadrature = glmer ``nAGQ = k``, on
  hospital (fixtures/glmm), grouseticks (Poisson; one and two grouping levels), mlmRev's
  Contraception (a correlated random slope, Laplace), Mmmec (Poisson with an offset), lme4's
  VerbAgg (crossed id and item, 316 + 24 effects) and a simulated crossed case of 2,540 effects
  (sparse Laplace), and lme4's cbpp (binomial trials; logit and probit, Laplace and 9 points;
  cloglog, Laplace): log
  likelihood 1e-6 relative, estimates 1e-5 of their SE (numDeriv's Hessian of glmer's
  deviance), SEs 1e-4 relative, conditional modes and SDs (ranef) 1e-4 of a conditional SD;
- against Stata's printed hospital ``xtlogit``/``melogit`` tables (fixtures/glmm/cases, 12-point
  mvaghermite) by ``validate``, with the same tolerances as the lme4 engine;
- the integrals themselves against scipy's adaptive quadrature (no R), and convergence in the
  number of points for a vector random effect (Contraception, urban slope, mvaghermite);
- binomial trials three ways (cbind, weights=, Stata's binomial()) and against the same data
  with one 0/1 row per trial; the engine's posterior means against ``FitResult.ebmeans()``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import hlmbridge
from hlmbridge.errors import DataError, UnsupportedSpecError, UsageError

REPO = Path(__file__).resolve().parent.parent
HOSPITAL_CSV = REPO / "fixtures" / "glmm" / "hospital.csv"
GLMM_CASES = REPO / "fixtures" / "glmm" / "cases"
HOSP_FORMULA = "hosp ~ loginc + distance + dropout + college + (1 | mother)"


@pytest.fixture(scope="module")
def hospital() -> pd.DataFrame:
    return pd.read_csv(HOSPITAL_CSV)


def _slope_data(groups: int = 60, rows: int = 2000, seed: int = 24) -> pd.DataFrame:
    """A binary response with a correlated random intercept and slope (60 groups, 2,000 rows)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, rows)
    x = rng.normal(size=rows)
    b = rng.multivariate_normal([0, 0], [[0.5, -0.2], [-0.2, 0.3]], size=groups)
    eta = -0.3 + 0.8 * x + b[g, 0] + b[g, 1] * x
    return pd.DataFrame({"y": (rng.random(rows) < special.expit(eta)).astype(int), "x": x, "g": g + 1})


# ---- the integrals (no R) -------------------------------------------------------------------
def test_product_rule_is_gauss_hermite_for_the_normal():
    from hlmbridge.inference.glmm_quadrature import product_rule

    nodes, logw = product_rule(5, 2)
    w = np.exp(logw)
    assert nodes.shape == (25, 2) and np.isclose(w.sum(), 1.0, rtol=1e-14)
    # exact for the normal moments up to degree 9 in each coordinate
    assert np.isclose(w @ (nodes[:, 0] ** 4), 3.0) and np.isclose(w @ (nodes[:, 0] ** 2 * nodes[:, 1] ** 2), 1.0)
    assert np.isclose(w @ (nodes[:, 0] ** 8), 105.0) and abs(w @ (nodes[:, 0] ** 3 * nodes[:, 1])) < 1e-13


def _exact_loglik(data, beta: np.ndarray, var: float) -> float:
    """Each group's integral by scipy's adaptive quadrature (QUADPACK), for one scalar random effect."""
    total = 0.0
    eta0 = data.X @ beta
    for j, start in enumerate(data.starts):
        stop = data.starts[j + 1] if j + 1 < len(data.starts) else len(data.y)
        y, e = data.y[start:stop], eta0[start:stop]

        def logf(b: float) -> float:
            return (float(np.sum(stats.bernoulli.logpmf(y, special.expit(e + b))))
                    + stats.norm.logpdf(b, 0, np.sqrt(var)))

        top = max(logf(b) for b in np.linspace(-6, 6, 121))
        val, _ = integrate.quad(lambda b: np.exp(logf(b) - top), -12 * np.sqrt(var), 12 * np.sqrt(var),
                                epsabs=0, epsrel=1e-12, limit=200)
        total += np.log(val) + top
    return total


def test_adaptive_quadrature_converges_to_the_integral(hospital):
    """Both adaptations at 20 points equal QUADPACK's integral (1e-12 relative a group, 121 groups) to
    1e-8; Laplace does not."""
    from hlmbridge.families import family
    from hlmbridge.inference.glmm_pirls import grouped_data
    from hlmbridge.inference.glmm_quadrature import marginal_loglik

    sub = hospital[hospital["mother"] <= hospital["mother"].unique()[120]]
    X = np.column_stack([sub["loginc"], sub["distance"], sub["dropout"], sub["college"], np.ones(len(sub))])
    codes = pd.factorize(sub["mother"], sort=True)[0]
    data = grouped_data(sub["hosp"].to_numpy(float), X, np.ones((len(sub), 1)), codes, int(codes.max()) + 1,
                        family("binomial"))
    beta, G = np.array([0.56, -0.077, -2.0, 1.03, -3.37]), np.array([[1.55]])
    exact = _exact_loglik(data, beta, 1.55)
    for method in ("mvaghermite", "mcaghermite"):
        assert abs(marginal_loglik(data, beta, G, method, 20).loglik - exact) < 1e-8, method
    laplace = marginal_loglik(data, beta, G, "laplace", 1).loglik
    assert abs(marginal_loglik(data, beta, G, "mcaghermite", 1).loglik - laplace) < 1e-10  # one point = Laplace
    assert abs(laplace - exact) > 0.1


# ---- the engine (no R) ----------------------------------------------------------------------
def test_registry_and_availability():
    from hlmbridge.engines import DEFAULT_ENGINES, ENGINES, get_engine

    assert "quadrature" in ENGINES and "quadrature" not in DEFAULT_ENGINES
    assert get_engine("quadrature").available() == (True, "")


def test_refusals(hospital):
    with pytest.raises(UnsupportedSpecError, match="The quadrature engine fits GLMMs"):
        hlmbridge.fit("mixed hosp loginc || mother:", hospital, engine="quadrature")
    two = hospital.assign(town=hospital["mother"] % 40)
    with pytest.raises(UnsupportedSpecError, match="integrates one grouping level by quadrature: with two or more, "
                                                   "Stata integrates nested levels one inside the other"):
        hlmbridge.fit("melogit hosp loginc || town: || mother:", two, engine="quadrature")
    with pytest.raises(UnsupportedSpecError, match="it fits Laplace's approximation on several levels"):
        hlmbridge.fit("hosp ~ loginc + (1 | mother) + (1 | town)", two, engine="quadrature", family="binomial",
                      nagq=3)
    small = two[two["mother"] <= 150]
    laplace = hlmbridge.fit("melogit hosp loginc || town: || mother:, intmethod(laplace)", small, engine="quadrature")
    assert [g.group for g in laplace.groups] == ["town", "mother"] and "2 grouping levels" in laplace.integration
    with pytest.raises(UnsupportedSpecError, match="a Poisson GLMM's prior weights are not fitted"):
        hlmbridge.fit("hosp ~ loginc + (1 | mother)", hospital, engine="quadrature", family="poisson",
                      weights=np.ones(len(hospital)))
    with pytest.raises(DataError, match="whole numbers of trials and successes"):
        hlmbridge.fit(HOSP_FORMULA, hospital.assign(hosp=hospital["hosp"] * 0.5), engine="quadrature",
                      family="binomial", weights=np.full(len(hospital), 3.0))
    with pytest.raises(UnsupportedSpecError, match=r"does not fit cov\(exchangeable\)"):
        hlmbridge.fit("melogit hosp loginc || mother: distance, cov(exchangeable)", hospital, engine="quadrature")
    with pytest.raises(DataError, match="a binomial GLMM needs a 0/1 response; 'hosp' has the value 2"):
        hlmbridge.fit(HOSP_FORMULA, hospital.assign(hosp=hospital["hosp"] * 2), engine="quadrature",
                      family="binomial")
    with pytest.raises(UsageError, match="max_iterations must be a positive whole number"):
        hlmbridge.fit(HOSP_FORMULA, hospital, engine="quadrature", family="binomial", max_iterations=0)
    with pytest.raises(UsageError, match="rhoend"):  # another engine's option is not this one's
        hlmbridge.fit(HOSP_FORMULA, hospital, engine="quadrature", family="binomial", rhoend=1e-8)


def test_random_slope_at_statas_default_fits_with_method_in_header():
    """melogit's default on a random slope (mvaghermite, 7 points, 49 per group): fitted, and the
    header says so as Stata prints it; the fit is the maximum (gradient 0) and integrating with
    more points moves the log likelihood by little."""
    data = _slope_data()
    cmd = "melogit y x || g: x, cov(unstructured)"
    res = hlmbridge.fit(cmd, data, engine="quadrature")
    text = res.summary()
    assert "Integration method: mvaghermite" in text and "Integration pts.  =          7" in text
    assert "7 points per random effect, 49 per group (product rule)" in res.integration
    assert res.converged and list(res.random["stata_term"]) == ["var(x)", "var(_cons)", "cov(x,_cons)"]
    assert "LR test vs. logistic model: chi2(3)" in text
    more = hlmbridge.fit(cmd + " intpoints(12)", data, engine="quadrature")
    assert abs(more.loglik - res.loglik) < 1e-3
    se = res.fixed["std_error"].to_numpy()
    assert np.all(np.abs(more.fixed["estimate"].to_numpy() - res.fixed["estimate"].to_numpy()) < 1e-2 * se)


def test_speed_of_the_issue_cases(hospital):
    """Issue 24's speed cases: hospital at 12 points and a 2-D 7-point random slope on 60 groups /
    2,000 rows, each in under 2 s (here with a margin for a loaded machine: 6 s)."""
    data = _slope_data()
    hlmbridge.fit("melogit hosp loginc || mother:, intpoints(3)", hospital, engine="quadrature")  # imports
    timings = {}
    for name, cmd, frame in (("hospital", "melogit hosp loginc distance dropout college || mother:, intpoints(12)",
                              hospital),
                             ("slope", "melogit y x || g: x, cov(unstructured)", data)):
        t0 = time.perf_counter()
        hlmbridge.fit(cmd, frame, engine="quadrature")
        timings[name] = time.perf_counter() - t0
    assert max(timings.values()) < 6.0, timings


def test_hospital_stata_tables_on_the_quadrature_engine():
    """Stata's xtlogit and melogit tables (12-point mvaghermite), every printed number, on this
    engine alone (no R): the committed fixtures name both GLMM engines."""
    from hlmbridge.check.validate import validate

    for p in GLMM_CASES.glob("L*_*logit.toml"):
        assert 'engines = ["lme4", "quadrature"]' in p.read_text(encoding="utf-8"), p.name
    report = validate(GLMM_CASES, data=HOSPITAL_CSV, engines=["quadrature"], compare=False)
    bad = [r for r in report.rows if r.status not in ("match", "within", "explained")]
    assert not bad, bad[:5]
    assert len([r for r in report.rows if r.status in ("match", "within")]) == 100
    res = hlmbridge.fit("xtlogit hosp loginc distance dropout college, i(mother) re", pd.read_csv(HOSPITAL_CSV),
                        engine="quadrature")
    assert "mean-variance adaptive Gauss-Hermite quadrature (Stata's mvaghermite), 12 points" in res.integration


# ---- against glmer (R) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("quadrature_reference")
    proc = subprocess.run(["Rscript", "--vanilla", str(REPO / "r" / "tests" / "quadrature_reference.R"), str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=480)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "quadrature_reference.json").read_text(encoding="utf-8"))


CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CASES = {
    "hospital_laplace": ("hospital.csv", HOSP_FORMULA, "binomial", 1),
    "hospital_agq12": ("hospital.csv", HOSP_FORMULA, "binomial", 12),
    "hospital_agq5": ("hospital.csv", HOSP_FORMULA, "binomial", 5),
    "grouse_laplace": ("grouseticks.csv", "TICKS ~ YEAR + H + (1 | BROOD)", "poisson", 1),
    "grouse_agq9": ("grouseticks.csv", "TICKS ~ YEAR + H + (1 | BROOD)", "poisson", 9),
    "grouse_two_levels": ("grouseticks.csv", "TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)", "poisson", 1),
    "verbagg_crossed": ("verbagg.csv", "r2 ~ (Anger + Gender + btype + situ) + (1 | id) + (1 | item)", "binomial", 1),
    "crossed_large": ("crossed.csv", "y ~ x + (1 | a) + (1 | b)", "poisson", 1),
    "cbpp_laplace": ("cbpp.csv", CBPP_FORMULA, "binomial", 1),
    "cbpp_agq9": ("cbpp.csv", CBPP_FORMULA, "binomial", 9),
    "cbpp_probit_laplace": ("cbpp.csv", CBPP_FORMULA, 'binomial(link = "probit")', 1),
    "cbpp_probit_agq9": ("cbpp.csv", CBPP_FORMULA, 'binomial(link = "probit")', 9),
    "cbpp_cloglog_laplace": ("cbpp.csv", CBPP_FORMULA, 'binomial(link = "cloglog")', 1),
    "contraception_slope": ("contraception.csv", "use ~ urban + age + livch + (urban | district)", "binomial", 1),
    "mmmec_offset": ("mmmec.csv", "deaths ~ uvb + offset(log(expected)) + (1 | region)", "poisson", 9),
}
_DTYPES = {"YEAR": str, "BROOD": str, "LOCATION": str, "district": str, "livch": str, "region": str, "id": str,
           "item": str, "herd": str, "period": str, "a": str, "b": str}


def _glmer_point_loglik(res, r) -> float:
    """This engine's log likelihood at glmer's estimates (same integral, same evaluation)."""
    from hlmbridge.families import family
    from hlmbridge.inference.glmm_pirls import grouped_data
    from hlmbridge.inference.glmm_quadrature import marginal_loglik

    d = res.design
    beta = np.array([r["fixef"][t] for t in d.fixed_lme4])
    if len(d.levels) > 1:  # scalar effects only here: every effect at once, as the engine integrates them
        from hlmbridge.inference.glmm_levels import levels_data, levels_laplace

        assert all(ld.Z.shape[1] == 1 for ld in d.levels)
        var = dict(zip(r["vc_groups"], np.atleast_1d(r["vc_entries"])))
        data = levels_data(d.y, d.X, [(ld.Z, ld.codes, ld.n_groups) for ld in d.levels],
                           family(res.spec.family, res.spec.link), d.offset, d.weights)
        return levels_laplace(data, beta, [np.array([[var[ld.key]]]) for ld in d.levels]).loglik
    ld = d.levels[0]
    data = grouped_data(d.y, d.X, ld.Z, ld.codes, ld.n_groups, family(res.spec.family, res.spec.link), d.offset,
                        d.weights)
    q = ld.Z.shape[1]
    G = np.zeros((q, q))
    G[np.tril_indices(q)[::-1]] = r["vc_entries"]  # vech column by column = upper triangle row by row
    G = G + np.triu(G, 1).T
    method = res.spec.intmethod
    return marginal_loglik(data, beta, G, method, int(res.spec.intpoints)).loglik


@pytest.mark.requires_r
@pytest.mark.parametrize("case", list(CASES))
def test_against_glmer(reference, case):
    out, ref = reference
    csv, formula, fam, nagq = CASES[case]
    data = pd.read_csv(out / csv, dtype=_DTYPES)
    res = hlmbridge.fit(formula, data, engine="quadrature", family=fam, nAGQ=nagq)
    r = ref[case]
    assert res.converged
    assert res.spec.intmethod == ("laplace" if nagq == 1 else "mcaghermite")
    assert abs(res.loglik - r["loglik"]) <= 1e-6 * abs(r["loglik"])
    # the same function: at glmer's estimates this engine's log likelihood is glmer's
    assert abs(_glmer_point_loglik(res, r) - r["loglik"]) <= 1e-9 * abs(r["loglik"])
    fx = res.fixed.set_index("term")
    se_r = np.sqrt(np.diag(np.asarray(r["fixed_vcov"], dtype=float)))
    moves = [abs(fx.loc[t, "estimate"] - r["fixef"][t]) / se_r[i] for i, t in enumerate(r["fixed_names"])]
    for i, t in enumerate(r["fixed_names"]):
        assert abs(fx.loc[t, "std_error"] / se_r[i] - 1) <= 1e-4, t
    q_entries = np.atleast_1d(np.asarray(r["vc_entries"], dtype=float))
    se_vc = np.sqrt(np.diag(np.atleast_2d(np.asarray(r["vc_vcov"], dtype=float))))
    blocks = [t if isinstance(t, list) else [t] for t in r["vc_terms"]]
    groups = r["vc_groups"] if isinstance(r["vc_groups"], list) else [r["vc_groups"]]
    k = 0
    for group, terms in zip(groups, blocks):
        rnd = res.random[res.random["lme4_group"] == group]
        for j in range(len(terms)):  # vech, column by column: (i, j) for i >= j
            for i in range(j, len(terms)):
                a, b = terms[i], terms[j]
                if i == j:
                    row = rnd[(rnd["term1"] == a) & (rnd["kind"] == "var")]
                else:
                    row = rnd[(rnd["kind"] == "cov") & (((rnd["term1"] == a) & (rnd["term2"] == b)) |
                                                        ((rnd["term1"] == b) & (rnd["term2"] == a)))]
                assert len(row) == 1, (group, a, b)
                moves.append(abs(float(row["estimate"].iloc[0]) - q_entries[k]) / se_vc[k])
                assert abs(float(row["std_error"].iloc[0]) / se_vc[k] - 1) <= 1e-4, (group, a, b)
                k += 1
    assert k == len(q_entries)
    # estimates within 1e-5 of their SE; where glmer's bobyqa stopped short of that (9 parameters,
    # Contraception), its point must be below this engine's maximum, and within 1e-4 SE
    if max(moves) > 1e-5:
        assert max(moves) <= 1e-4, moves
        assert _glmer_point_loglik(res, r) <= res.loglik + 1e-12 * abs(res.loglik), case


@pytest.mark.requires_r
def test_lme4_refusal_names_this_engine_which_fits_it(hospital):
    slope = "melogit hosp loginc distance || mother: distance"
    with pytest.raises(UnsupportedSpecError, match="engine='quadrature' fits it on one grouping level"):
        hlmbridge.fit(slope, hospital)
    res = hlmbridge.fit(slope, hospital, engine="quadrature")
    assert (res.spec.intmethod, res.spec.intpoints) == ("mvaghermite", 7)
    assert "Integration method: mvaghermite" in res.summary()
    assert list(res.random["stata_term"]) == ["var(distance)", "var(_cons)"]


@pytest.mark.requires_r
def test_validate_judges_quadrature_against_lme4():
    """Both GLMM engines on the hospital fixtures, as ``hlmbridge validate`` runs them by default
    (the engines the fixtures name): Stata's numbers on each, and "quadrature vs lme4" rows
    (glmer nAGQ = 12 adapts at the mode, this engine at the posterior mean and variance: the same
    integral at 12 points to the digits compared)."""
    from hlmbridge.check.validate import validate

    report = validate(GLMM_CASES, data=HOSPITAL_CSV)
    bad = [r for r in report.rows if r.status not in ("match", "within", "explained")]
    assert not bad, bad[:5]
    vs = [r for r in report.rows if r.engine == "quadrature vs lme4"]
    assert len(vs) == 100 and all(r.status in ("match", "within") for r in vs)


@pytest.mark.requires_r
def test_vector_random_effect_converges_in_the_points(reference):
    """Contraception with a correlated urban slope by district (60 groups): mvaghermite at 7, 9
    and 12 points per effect (49, 81, 144 per district) moves the log likelihood by less than
    1e-3 and the estimates by less than 0.01 SE; Laplace is 0.33 below (glmer's Laplace, the
    reference, 1e-6)."""
    out, ref = reference
    data = pd.read_csv(out / "contraception.csv", dtype=_DTYPES)
    for lv in ("1", "2", "3+"):
        data["child" + lv[0]] = (data["livch"] == lv).astype(int)
    data["district"] = data["district"].astype(int)
    cmd = "melogit use urban age child1 child2 child3 || district: urban, cov(unstructured)"
    fits = {k: hlmbridge.fit(f"{cmd} intpoints({k})", data, engine="quadrature") for k in (7, 9, 12)}
    lap = hlmbridge.fit(cmd + " intmethod(laplace)", data, engine="quadrature")
    assert abs(lap.loglik - ref["contraception_slope"]["loglik"]) <= 1e-6 * abs(lap.loglik)
    assert 0.2 < fits[7].loglik - lap.loglik < 0.5
    for k in (9, 12):
        assert abs(fits[k].loglik - fits[7].loglik) < 1e-3
        for part in ("fixed", "random"):
            a, b = getattr(fits[k], part), getattr(fits[7], part)
            moved = np.abs(a["estimate"].to_numpy() - b["estimate"].to_numpy())
            assert np.all(moved < 1e-2 * b["std_error"].to_numpy()), (k, part)


@pytest.mark.requires_r
@pytest.mark.parametrize("case", ["hospital_laplace", "grouse_agq9", "contraception_slope", "grouse_two_levels",
                                  "verbagg_crossed"])
def test_conditional_modes_are_glmers_ranef(reference, case):
    """ranef() of this engine: the conditional modes and conditional SDs glmer's ranef(condVar =
    TRUE) gives (at glmer's estimates within 1e-5 SE: 1e-4 of a conditional SD)."""
    out, ref = reference
    csv, formula, fam, nagq = CASES[case]
    data = pd.read_csv(out / csv, dtype=_DTYPES)
    res = hlmbridge.fit(formula, data, engine="quadrature", family=fam, nAGQ=nagq)
    got = res.ranef().set_index(["group", "level", "term"])
    want = pd.DataFrame(ref[case]["ranef"]).set_index(["grpvar", "grp", "term"])
    assert len(got) == len(want) > 0
    for key, row in want.iterrows():
        assert abs(got.loc[key, "estimate"] - row["condval"]) <= 1e-4 * row["condsd"], key
        assert abs(got.loc[key, "std_error"] / row["condsd"] - 1) <= 1e-4, key


@pytest.mark.requires_r
def test_binomial_trials_three_ways_and_as_bernoulli_rows(reference):
    """lme4's cbpp on this engine: cbind(s, f), a proportion with weights= and Stata's
    binomial(size) are one model; and with every trial as its own 0/1 row (the same likelihood
    but for the log binomial coefficients, which the trials' log likelihood includes, as glmer's)
    the same estimates and the log likelihood less sum log C(n, s) (Laplace and 7-point mvaghermite)."""
    out, _ = reference
    d = pd.read_csv(out / "cbpp.csv", dtype=_DTYPES)
    cb = hlmbridge.fit(CBPP_FORMULA, d, engine="quadrature", family="binomial")
    prop = hlmbridge.fit("prop ~ period + (1 | herd)", d.assign(prop=d["incidence"] / d["size"]),
                         engine="quadrature", family="binomial", weights=d["size"].to_numpy(float))
    stata = d.assign(per=d["period"].astype(int), h=d["herd"].astype(int))
    st = hlmbridge.fit("melogit incidence i.per || h:, binomial(size) intmethod(laplace)", stata, engine="quadrature")
    assert abs(prop.loglik - cb.loglik) < 1e-9 and abs(st.loglik - cb.loglik) < 1e-9
    # Stata lists the constant last
    assert np.allclose(st.fixed["estimate"].to_numpy(), np.roll(cb.fixed["estimate"].to_numpy(), -1), rtol=0, atol=1e-7)
    rows = []
    for _, r in stata.iterrows():
        s = int(r["incidence"])
        rows += [(r["per"], r["h"], 1)] * s + [(r["per"], r["h"], 0)] * (int(r["size"]) - s)
    bern = pd.DataFrame(rows, columns=["per", "h", "y"])
    log_choose = float(np.sum(special.gammaln(d["size"] + 1) - special.gammaln(d["incidence"] + 1)
                              - special.gammaln(d["size"] - d["incidence"] + 1)))
    for method in ("intmethod(laplace)", "intpoints(7)"):
        a = hlmbridge.fit(f"melogit incidence i.per || h:, binomial(size) {method}", stata, engine="quadrature")
        b = hlmbridge.fit(f"melogit y i.per || h:, {method}", bern, engine="quadrature")
        assert abs(a.loglik - (b.loglik + log_choose)) < 1e-8, method
        se = b.fixed["std_error"].to_numpy()
        assert np.all(np.abs(a.fixed["estimate"].to_numpy() - b.fixed["estimate"].to_numpy()) < 1e-5 * se), method
        assert np.allclose(a.fixed["std_error"].to_numpy(), se, rtol=1e-4), method


def test_posterior_means_are_ebmeans(hospital):
    """The posterior means and SDs this engine's mvaghermite finds on the way equal
    FitResult.ebmeans() (results/eb_means.py, the one implementation surfaced): hospital's scalar
    intercept at 12 points, and a correlated random slope at 7 points (k^2 points) when both
    take the square root of the adapting variance in the same order (the engine's own rule takes
    Stata's order, slopes first: that moves the 7-point means by about 1e-5 of an SD)."""
    from hlmbridge.engines.quadrature import QuadratureEngine
    from hlmbridge.families import family
    from hlmbridge.inference.glmm_pirls import grouped_data
    from hlmbridge.inference.glmm_quadrature import marginal_loglik
    from hlmbridge.inference.stata_parity import level_covariances

    for cmd, frame, k in (("melogit hosp loginc distance dropout college || mother:, intpoints(12)", hospital, 12),
                          ("melogit y x || g: x, cov(unstructured)", _slope_data(), 7)):
        res = hlmbridge.fit(cmd, frame, engine="quadrature")
        d = res.design
        ld = d.levels[0]
        q = ld.Z.shape[1]
        fit = QuadratureEngine().fit_design(d)
        G = level_covariances(d, np.append(fit.theta, 0.0))[0]
        data = grouped_data(d.y, d.X, ld.Z, ld.codes, ld.n_groups, family("binomial"), d.offset)
        m = marginal_loglik(data, fit.beta, G, "mvaghermite", k)
        eb = res.ebmeans()
        assert list(eb["term"][:q]) == list(ld.terms_lme4) and len(eb) == ld.n_groups * q
        sd = eb["ebmean_sd"].to_numpy().reshape(ld.n_groups, q)
        assert np.max(np.abs(m.mean - eb["ebmean"].to_numpy().reshape(ld.n_groups, q)) / sd) < 1e-10, cmd
        assert np.max(np.abs(np.sqrt(np.einsum("jqq->jq", m.var)) / sd - 1)) < 1e-10, cmd


@pytest.mark.requires_r
def test_several_levels_variance_at_zero_reaches_the_boundary():
    """Crossed intercepts where one factor has no effect (simulated): Laplace on several levels
    takes its variance to 0 as glmer does (its log likelihood at least glmer's, within 1e-6
    relative), and says the fit is singular, rather than stopping inside at a variance of 0.6."""
    rng = np.random.default_rng(6)
    a, b = rng.integers(0, 40, 600), rng.integers(0, 6, 600)
    y = (rng.random(600) < special.expit(0.2 + rng.normal(size=40)[a])).astype(int)
    data = pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
    ours = hlmbridge.fit("y ~ 1 + (1 | a) + (1 | b)", data, engine="quadrature", family="binomial")
    glmer = hlmbridge.fit("y ~ 1 + (1 | a) + (1 | b)", data, family="binomial")
    assert ours.loglik >= glmer.loglik - 1e-6 * abs(glmer.loglik)
    var_b = ours.random.set_index("lme4_group").loc["b", "estimate"]
    assert var_b < 1e-4 and any("singular" in w for w in ours.warnings)
