"""After-fit quantities of residual-structure fits (issue 25 follow-up) against nlme run directly in R.

R fits each model itself with ``nlme::lme`` (``r/tests/nlme_postfit_reference.R``, on the data
sets of ``r/tests/nlme_reference.R``) and returns nlme's ``ranef()``, ``fitted(level =)``,
``resid(type =)``, ``predict(newdata, level =)``, ``getVarCov(type = "marginal")`` and the
conditional SDs of the random effects computed in R from nlme's ``G``, ``V_i`` and ``Z_i``.
hlmbridge's numbers come from its fit with ``polish=False`` (nlme's own estimates, so both sides
are evaluated at one point; the R calls use the engine's pd classes, pdSymm rather than lme's
default pdLogChol for a random slope, since another parameterization stops nlme's optimizer at
another point of the same optimum, about 1e-6 of an SE away). Compared: the random effects and predictions within 1e-6 of the
random effects' conditional SD, residuals (pearson, normalized: unit scale) within 1e-6,
correlation matrices within 1e-8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UnsupportedSpecError, UsageError

pytestmark = pytest.mark.requires_r

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = (REPO / "r" / "tests" / "nlme_reference.R", REPO / "r" / "tests" / "nlme_postfit_reference.R")


class _R:
    """The two reference scripts sourced into a private R environment (never R's global one)."""

    def __init__(self) -> None:
        from hlmbridge.engines.r_session import session

        self.s = session()
        with self.s.lock, self.s.converting():
            ro = self.s.ro
            self.env = ro.r("new.env(parent = globalenv())")
            for script in SCRIPTS:
                ro.r["sys.source"](str(script), envir=self.env)

    def export(self, outdir: Path) -> None:
        with self.s.lock, self.s.converting():
            self.env["hb_nlme_export"](str(outdir))

    def postfit(self, data: str, call: str, newcode: str, group: str) -> dict:
        with self.s.lock, self.s.converting():
            d = self.env["hb_nlme_data"]().rx2(data)
            out = self.env["hb_postfit"](d, call, newcode, group)
            got: dict = {}
            for name in out.names:
                x = out.rx2(name)
                if name == "new":
                    got[name] = pd.DataFrame({str(k): np.array([float(v) for v in x.rx2(k)]) for k in x.names})
                elif name in ("ranef_groups", "ranef_terms", "var_levels", "sd_re_terms", "coef_terms"):
                    got[name] = [str(v) for v in x]
                else:
                    got[name] = np.array([float(v) for v in x])
            return got


@pytest.fixture(scope="module")
def r() -> _R:
    return _R()


@pytest.fixture(scope="module")
def frames(r: _R, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("nlme_postfit_data")
    r.export(out)
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("orth", "bw", "ovary")}


# name: (data, Stata command, nlme's call, new data (R code over d), outermost group)
CASES = {
    "ar1_ml": ("orth", "mixed distance age || id:, residuals(ar 1, t(occ))",
               "nlme::lme(distance ~ age, random = ~ 1 | id, correlation = nlme::corAR1(form = ~ occ | id), "
               "method = 'ML', data = d, control = ctl)", "transform(d[d$id %in% c(1, 2, 3), ], age = age + 1)", "id"),
    "independent_by_ml": ("orth", "mixed distance age || id:, residuals(independent, by(male))",
                          "nlme::lme(distance ~ age, random = ~ 1 | id, weights = nlme::varIdent(form = ~ 1 | male), "
                          "method = 'ML', data = d, control = ctl)",
                          "transform(d[d$id %in% c(1, 20), ], age = age - 1)", "id"),
    "exchangeable_ml": ("orth", "mixed distance age || id: age, noconstant residuals(exchangeable)",
                        "nlme::lme(distance ~ age, random = list(id = nlme::pdIdent(~ age - 1)), correlation = "
                        "nlme::corCompSymm(form = ~ 1 | id), method = 'ML', data = d, control = ctl)",
                        "transform(d[d$id %in% c(5, 6), ], age = age + 0.5)", "id"),
    "exponential_slope_reml": ("bw", "mixed weight Time || rat: Time, cov(un) residuals(exponential, t(Time)) reml",
                               "nlme::lme(weight ~ Time, random = list(rat = nlme::pdSymm(~ Time)), correlation = nlme::corCAR1(form = "
                               "~ Time | rat), method = 'REML', data = d, control = ctl)",
                               "transform(d[d$rat %in% c(1, 2, 16), ], Time = Time + 3)", "rat"),
    "ar2_reml": ("ovary", "mixed follicles s c || mare:, residuals(ar 2, t(idx)) reml",
                 "nlme::lme(follicles ~ s + c, random = ~ 1 | mare, correlation = nlme::corARMA(form = ~ idx | "
                 "mare, p = 2), method = 'REML', data = d, control = ctl)",
                 "transform(d[d$mare %in% c(1, 11), ], s = s / 2)", "mare"),
    "ma1_ml": ("ovary", "mixed follicles s c || mare:, residuals(ma 1, t(idx))",
               "nlme::lme(follicles ~ s + c, random = ~ 1 | mare, correlation = nlme::corARMA(form = ~ idx | mare, "
               "q = 1), method = 'ML', data = d, control = ctl)", "transform(d[d$mare %in% c(2, 3), ], c = 0)", "mare"),
    # Only the likelihood is identified here (var(_cons) trades against the covariances), but both
    # sides are evaluated at nlme's one point.
    "unstructured_reml": ("orth", "mixed distance age || id:, residuals(unstructured, t(occ)) reml",
                          "nlme::lme(distance ~ age, random = ~ 1 | id, correlation = nlme::corSymm(form = ~ occ | "
                          "id), weights = nlme::varIdent(form = ~ 1 | occ), method = 'REML', data = d, "
                          "control = ctl)", "transform(d[d$id %in% c(4, 9), ], age = age + 1)", "id"),
    "nested_ar1_ml": ("orth", "mixed distance age || male: || id:, residuals(ar 1, t(occ))",
                      "nlme::lme(distance ~ age, random = list(male = ~ 1, id = ~ 1), correlation = "
                      "nlme::corAR1(form = ~ occ | male/id), method = 'ML', data = d, control = ctl)",
                      "transform(d[d$id %in% c(1, 20), ], age = age + 1)", "male"),
}


@pytest.fixture(scope="module")
def fitted_pairs(r: _R, frames: dict) -> dict:
    cache: dict = {}

    def get(name: str) -> tuple:
        if name not in cache:
            data, command, call, newcode, group = CASES[name]
            ref = r.postfit(data, call, newcode, group)
            res = hlmbridge.fit(command, frames[data], engine="nlme", polish=False)
            assert abs(res.loglik - ref["loglik"]) < 1e-8  # one point: nlme's estimates
            cache[name] = (res, ref)
        return cache[name]

    return get


def _scale(res: hlmbridge.FitResult) -> float:
    """The smallest conditional SD of the random effects: the statistical scale of a BLUP."""
    return float(res.ranef()["std_error"].min())


@pytest.mark.parametrize("name", [n for n in CASES if n != "nested_ar1_ml"])
def test_ranef_and_conditional_sd_equal_nlme(name: str, fitted_pairs) -> None:
    res, ref = fitted_pairs(name)
    re = res.ranef()
    groups, terms = ref["ranef_groups"], ref["ranef_terms"]
    want = pd.DataFrame(ref["ranef"].reshape(len(terms), len(groups)).T, index=groups, columns=terms)
    sd = pd.DataFrame(ref["condsd"].reshape(len(terms), len(groups)).T, index=groups, columns=terms)
    assert len(re) == want.size
    for row in re.itertuples(index=False):
        assert abs(row.estimate - want.loc[str(row.level), row.term]) <= 1e-6 * row.std_error, row
        assert abs(row.std_error - sd.loc[str(row.level), row.term]) <= 1e-7 * row.std_error, row


@pytest.mark.parametrize("name", ["ar1_ml", "exponential_slope_reml"])
def test_coef_equals_nlme(name: str, fitted_pairs) -> None:
    res, ref = fitted_pairs(name)
    groups, terms = ref["ranef_groups"], ref["coef_terms"]
    want = pd.DataFrame(ref["coef"].reshape(len(terms), len(groups)).T, index=groups, columns=terms)
    got = next(iter(res.coef().values()))
    got.index = [str(g) for g in got.index]
    tol = 1e-6 * _scale(res)
    assert sorted(got.columns) == sorted(terms)
    assert float(np.max(np.abs(got.loc[groups, terms].to_numpy() - want.to_numpy()))) <= tol


@pytest.mark.parametrize("name", list(CASES))
def test_fitted_residuals_equal_nlme(name: str, fitted_pairs) -> None:
    res, ref = fitted_pairs(name)
    tol = 1e-6 * _scale(res)
    n_levels = len(res.groups)
    by_level = ref["fitted_levels"].reshape(n_levels + 1, -1)
    for k in range(n_levels + 1):
        assert np.max(np.abs(res.fitted(level=k).to_numpy() - by_level[k])) <= tol, k
    assert np.max(np.abs(res.fitted().to_numpy() - ref["fitted"])) <= tol
    assert np.max(np.abs(res.residuals().to_numpy() - ref["resid_response"])) <= tol
    assert np.max(np.abs(res.residuals("pearson").to_numpy() - ref["resid_pearson"])) <= 1e-6
    assert np.max(np.abs(res.residuals("normalized").to_numpy() - ref["resid_normalized"])) <= 1e-6


@pytest.mark.parametrize("name", list(CASES))
def test_predict_newdata_levels_equal_nlme(name: str, fitted_pairs) -> None:
    res, ref = fitted_pairs(name)
    tol = 1e-6 * _scale(res)
    new = ref["new"]
    p0 = res.predict(new, re_form="~0")
    assert np.max(np.abs(p0.to_numpy() - ref["pred0"])) <= tol
    # nlme's level 1: the outermost level's random effects only
    outer = res.design.levels[0]
    form = "~ " + " + ".join(f"({' + '.join(outer.terms_lme4).replace('(Intercept)', '1')} | {outer.key})"
                             for _ in [0])
    p1 = res.predict(new, re_form=None if len(res.groups) == 1 else form)
    assert p1.n_new_levels == 0
    assert np.max(np.abs(p1.to_numpy() - ref["pred1"])) <= tol


@pytest.mark.parametrize("name", [n for n in CASES if n != "nested_ar1_ml"])
def test_wcorrelation_equals_nlme_marginal_getvarcov(name: str, fitted_pairs, frames: dict) -> None:
    res, ref = fitted_pairs(name)
    n = int(ref["wsize"][0])
    cov = res.wcorrelation(covariance=True)
    cor = res.wcorrelation()
    assert cov.shape == (n, n)
    want_cov = ref["wcov"].reshape(n, n, order="F")
    assert np.max(np.abs(cov.to_numpy() - want_cov)) <= 1e-7 * np.max(np.abs(want_cov))
    assert np.max(np.abs(cor.to_numpy() - ref["wcor"].reshape(n, n, order="F"))) <= 1e-8
    # the first row's group (Stata's default), named with at=
    data, group = CASES[name][0], CASES[name][4]
    first = frames[data][group].iloc[0]
    pd.testing.assert_frame_equal(res.wcorrelation(at={group: first}), cor)
    assert list(cor.index) == list(np.flatnonzero(frames[data][group].to_numpy() == first))


def test_wcorrelation_without_structure_is_random_intercept_icc(frames: dict) -> None:
    """Without a residual structure the within-group correlation of a random-intercept model is
    var(_cons) / (var(_cons) + var(e)) off the diagonal (Stata's estat wcorrelation)."""
    res = hlmbridge.fit("mixed distance age || id:", frames["orth"], engine="nlme")
    cor = res.wcorrelation(at={"id": 3}).to_numpy()
    v = res.random["estimate"].to_numpy()
    assert cor.shape == (4, 4)
    assert np.allclose(cor[~np.eye(4, dtype=bool)], v[0] / v.sum(), rtol=0, atol=1e-12)
    assert float(res.icc()["estimate"].iloc[0]) == pytest.approx(v[0] / v.sum(), abs=1e-12)
    with pytest.raises(UsageError, match="no cluster"):
        res.wcorrelation(at={"id": 999})
    with pytest.raises(UsageError, match="from the outermost one"):
        res.wcorrelation(at={"child": 3})


def test_wcorrelation_nested_default_is_the_first_two_level_cluster(fitted_pairs, frames: dict) -> None:
    """Stata's default cluster is "the first two-level cluster encountered in the data": in
    male > id, the first row's child; at={"male": m} gives every child of one sex, uncorrelated
    between children except through var(male)."""
    res, _ = fitted_pairs("nested_ar1_ml")
    d = frames["orth"]
    first = res.wcorrelation()
    assert list(first.index) == list(np.flatnonzero(d["id"].to_numpy() == d["id"].iloc[0]))
    assert first.equals(res.wcorrelation(at={"male": d["male"].iloc[0], "id": d["id"].iloc[0]}))
    cov = res.wcorrelation(at={"male": 1}, covariance=True)
    rows = np.flatnonzero(d["male"].to_numpy() == 1)
    assert list(cov.index) == list(rows)
    v_male = res.random["estimate"].iloc[0]
    other = d["id"].to_numpy()[rows][:, None] != d["id"].to_numpy()[rows][None, :]
    assert np.allclose(cov.to_numpy()[other], v_male, rtol=1e-12, atol=0)
    # the first child (male) is the first cluster: its block of the male=1 matrix is its own matrix
    assert d["male"].iloc[0] == 1
    assert np.array_equal(cov.iloc[:4, :4].to_numpy(), res.wcorrelation(covariance=True).to_numpy())


@pytest.mark.parametrize("name", ["ar1_ml", "independent_by_ml"])
def test_icc_refused_as_stata_refuses_it(name: str, fitted_pairs) -> None:
    res, _ = fitted_pairs(name)
    with pytest.raises(UnsupportedSpecError, match="not available .* residual error structures other than"):
        res.icc()


def test_residual_kind_checked(fitted_pairs) -> None:
    res, _ = fitted_pairs("ar1_ml")
    with pytest.raises(UsageError, match="kind must be one of .*'normalized'"):  # nlme's kinds
        res.residuals("studentized")


# Each structure's tidy() terms and nlme's value of each: (term, R's value from the reference)
def _nlme_terms(name: str, ref: dict) -> dict[str, float]:
    sigma = float(ref["sigma"][0])
    ratio = dict(zip(ref["var_levels"], ref["var_coef"]))
    cor = ref["cor_coef"]
    terms = ref["sd_re_terms"]
    want = {f"sd__{t}": v for t, v in zip(terms, ref["sd_re"])}
    R = ref["cor_re"].reshape(len(terms), len(terms))
    want.update({f"cor__{a}.{b}": R[i, j] for i, a in enumerate(terms) for j, b in enumerate(terms) if i != j})
    if name in ("ar1_ml", "exponential_slope_reml"):
        want.update({"rho": cor[0], "sd__Observation": sigma})
    elif name == "ar2_reml":
        want.update({"phi1": cor[0], "phi2": cor[1], "sd__Observation": sigma})
    elif name == "ma1_ml":
        want.update({"theta1": cor[0], "sd__Observation": sigma})
    elif name == "exchangeable_ml":
        want.update({"cor__Observation": cor[0], "sd__Observation": sigma})
    elif name == "independent_by_ml":
        want.update({f"sd__Observation.{k}": sigma * v for k, v in ratio.items()})
    elif name == "unstructured_reml":
        times = sorted(ratio, key=float)
        want.update({f"sd__Observation.{t}": sigma * ratio[t] for t in times})
        pairs = [(a, b) for i, a in enumerate(times) for b in times[i + 1:]]
        want.update({f"cor__Observation.{a}.{b}": c for (a, b), c in zip(pairs, cor, strict=True)})
    return want


@pytest.mark.parametrize("name", [n for n in CASES if n != "nested_ar1_ml"])
def test_tidy_glance_random_sd_equal_nlme(name: str, fitted_pairs) -> None:
    """tidy()'s ran_pars rows are nlme's SDs, correlation-function coefficients and
    variance-function SDs (sigma times each stratum's ratio); glance() has nlme's sigma (NaN with
    several residual variances), logLik and AIC, and BIC for ML fits (nlme's BIC of a REML fit uses
    log(N - p); hlmbridge's, lme4's log(N)); random_sd() has the same numbers with Stata's names."""
    res, ref = fitted_pairs(name)
    pars = res.tidy("ran_pars")
    want = _nlme_terms(name, ref)
    assert set(pars["term"]) == {t for t in want if not t.startswith("cor__") or "Observation" in t
                                 or t in set(pars["term"])}
    q = len(ref["sd_re_terms"])
    assert sum(t.startswith("cor__") and "Observation" not in t for t in pars["term"]) == q * (q - 1) // 2
    for row in pars.itertuples(index=False):
        assert abs(row.estimate - want[row.term]) <= 1e-8 * max(1.0, abs(want[row.term])), row
    assert np.allclose(res.random_sd()["estimate"].to_numpy(), pars["estimate"].to_numpy(), rtol=1e-12, atol=0)
    g = res.glance().iloc[0]
    several = name in ("independent_by_ml", "unstructured_reml")
    assert np.isnan(g["sigma"]) if several else abs(g["sigma"] - ref["sigma"][0]) < 1e-8
    assert abs(g["logLik"] - ref["loglik"][0]) < 1e-8 and abs(g["AIC"] - ref["aic"][0]) < 1e-7
    if not res.spec.reml:
        assert abs(g["BIC"] - ref["bic"][0]) < 1e-7
    both = res.tidy(("fixed", "ran_pars", "ran_vals"))
    assert list(both["effect"].unique()) == ["fixed", "ran_pars", "ran_vals"]
    assert len(both[both["effect"] == "ran_vals"]) == len(res.ranef())


def test_structure_rows_have_stata_ses_and_cis(fitted_pairs) -> None:
    """random_sd()'s residual rows: an SD's SE and CI from var(e)'s by the delta method and the
    square root of the log-scale CI, a correlation's by the delta method and atanh."""
    res, _ = fitted_pairs("exchangeable_ml")
    rnd, sd = res.random, res.random_sd()
    V = np.asarray(res.random_vcov)
    v, c = rnd["estimate"].iloc[1], rnd["estimate"].iloc[2]
    row = sd.iloc[1]
    assert row["stata_term"] == "sd(e)" and row["estimate"] == pytest.approx(np.sqrt(v), rel=1e-14)
    assert row["std_error"] == pytest.approx(np.sqrt(V[1, 1]) / (2 * np.sqrt(v)), rel=1e-12)
    assert row["conf_low"] == pytest.approx(np.sqrt(rnd["conf_low"].iloc[1]), rel=1e-12)
    r = sd.iloc[2]
    grad = np.array([0.0, -c / v**2, 1 / v])
    se = float(np.sqrt(grad @ V @ grad))
    assert r["stata_term"] == "corr(e)" and r["estimate"] == pytest.approx(c / v, rel=1e-14)
    assert r["std_error"] == pytest.approx(se, rel=1e-10)
    assert r["conf_high"] == pytest.approx(np.tanh(np.arctanh(c / v) + 1.959963984540054 * se / (1 - (c / v) ** 2)),
                                           rel=1e-10)


def test_validate_has_nlme_vs_own_likelihood_rows(tmp_path: Path) -> None:
    """validate judges nlme's logLik of each residual-structure fit against hlmbridge's own
    likelihood (fixtures/nlme: five structures), as engine-vs-engine rows."""
    from hlmbridge.check.nlme_rows import ENGINE_LABEL
    from hlmbridge.check.validate import validate
    from hlmbridge.reference.fixtures import import_stata

    nlme = REPO / "fixtures" / "nlme"
    import_stata(nlme / "logs" / "orthodont_nlme.log", tmp_path)
    report = validate(tmp_path, data=nlme / "orthodont.csv", engines=["nlme"])
    rows = [r for r in report.rows if r.engine == ENGINE_LABEL]
    assert len(rows) == 5 and len({r.case for r in rows}) == 5
    assert all(r.key == "header.loglik" and r.status in ("match", "within") for r in rows), rows
    assert max(r.abs_diff for r in rows) < 1e-6  # only the Newton polish's gain
    assert report.ok


def test_independent_residual_effects_refuse_a_structured_design(fitted_pairs) -> None:
    """conditional_effects() (independent residuals) refuses a structured design rather than read
    its parameters as sigma^2's."""
    from hlmbridge.results.random_effects import conditional_effects, estimates_of

    res, _ = fitted_pairs("ar1_ml")
    with pytest.raises(UnsupportedSpecError, match="assumes independent residuals"):
        conditional_effects(res.design, *estimates_of(res))
