"""Both engines on the same specs: agreement, REML, the result schema, bad input and faults.

Agreement with Stata's printed numbers is judged from the fixtures in
tests/test_engines_seed.py and by ``hlmbridge validate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge import datasets
from hlmbridge.errors import ConvergenceError, DataError, FitError, HlmbridgeError, UnsupportedSpecError

ENGINES = [pytest.param("lme4", marks=pytest.mark.requires_r), "statsmodels"]
MODEL2 = "mixed mathach ses || id: ses, cov(unstructured)"


@pytest.fixture(scope="module")
def hsb() -> pd.DataFrame:
    return datasets.hsb("combined")


@pytest.fixture(scope="module")
def model2_fits(hsb: pd.DataFrame) -> dict[str, hlmbridge.FitResult]:
    out = {"statsmodels": hlmbridge.fit(MODEL2, hsb, engine="statsmodels")}
    try:
        out["lme4"] = hlmbridge.fit(MODEL2, hsb, engine="lme4")
    except hlmbridge.EngineUnavailableError:
        pass
    return out


def _numbers(res: hlmbridge.FitResult) -> dict[str, float]:
    out = {"loglik": res.loglik, "wald_chi2": res.wald_chi2, "lr_chi2": res.lr_chi2}
    for r in res.fixed.itertuples(index=False):
        out[f"b {r.stata_term}"] = r.estimate
        out[f"se {r.stata_term}"] = r.std_error
    for r in res.random.itertuples(index=False):
        out[f"{r.stata_term}"] = r.estimate
        out[f"se {r.stata_term}"] = r.std_error
    return out


@pytest.mark.requires_r
def test_engines_agree_on_the_same_spec(model2_fits: dict[str, hlmbridge.FitResult]) -> None:
    a, b = _numbers(model2_fits["lme4"]), _numbers(model2_fits["statsmodels"])
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-8), key
    assert model2_fits["lme4"].loglik == pytest.approx(model2_fits["statsmodels"].loglik, abs=1e-5)


@pytest.mark.requires_r
def test_balanced_reml_sleepstudy_engines_agree() -> None:
    sleep = datasets.sleepstudy()
    formula = "Reaction ~ Days + (Days | Subject)"
    r = hlmbridge.fit(formula, sleep, engine="lme4")  # an lme4 formula means REML
    s = hlmbridge.fit(formula, sleep, engine="statsmodels")
    assert r.method == s.method == "reml"
    a, b = _numbers(r), _numbers(s)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=2e-4, abs=1e-6), key
    # REML log likelihood on lme4's scale: hlmbridge's evaluation equals lme4's own number.
    assert r.loglik == pytest.approx(r.engine_loglik, abs=1e-6)
    assert s.loglik == pytest.approx(r.loglik, abs=1e-5)


@pytest.mark.requires_r
def test_lme4_vcov_equals_the_closed_form_fixed_covariance(hsb: pd.DataFrame) -> None:
    from hlmbridge.design.build import build_design
    from hlmbridge.inference.stata_parity import evaluate

    # engine_vcov=True: the fixed-effects covariance is lme4's own vcov(), not hlmbridge's.
    res = hlmbridge.fit(MODEL2, hsb, engine="lme4", engine_vcov=True)
    design = build_design(res.spec, hsb)
    inf = evaluate(design, res.fixed["estimate"].to_numpy(), res.random["estimate"].to_numpy())
    np.testing.assert_allclose(np.asarray(res.fixed_vcov), inf.fixed_vcov, rtol=1e-7)
    # engine_vcov implies bobyqa to rhoend 1e-12 (lme4's matrix must belong to the estimates).
    tight = hlmbridge.fit(MODEL2, hsb, engine="lme4", rhoend=1e-12)
    np.testing.assert_allclose(np.asarray(tight.fixed_vcov), np.asarray(res.fixed_vcov), rtol=1e-7)
    assert "bobyqa" in res.optimizer and "Newton" not in res.optimizer


@pytest.mark.parametrize("engine", ENGINES)
def test_result_round_trips_through_json(engine: str, model2_fits: dict) -> None:
    res = model2_fits.get(engine)
    if res is None:
        pytest.skip(f"{engine} unavailable")
    text = json.dumps(res.to_dict())
    back = hlmbridge.FitResult.from_dict(json.loads(text))
    assert back == res
    assert back.fixed.equals(res.fixed)
    assert res.engine == engine and res.method == "ml"
    assert set(res.versions) >= ({"R", "lme4", "rpy2"} if engine == "lme4" else {"statsmodels"})
    assert res.converged and not res.singular
    with pytest.raises(Exception):
        res.loglik = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("engine", ENGINES)
def test_labels_in_both_vocabularies(engine: str, hsb: pd.DataFrame) -> None:
    res = hlmbridge.fit("mixed mathach c.ses##i.sector || id:", hsb, engine=engine)
    assert res.fixed["stata_term"].tolist() == ["ses", "1.sector", "1.sector#c.ses", "_cons"]
    assert res.fixed["term"].tolist() == ["ses", "sector1", "ses:sector1", "(Intercept)"]
    assert res.random["stata_term"].tolist() == ["var(_cons)", "var(Residual)"]
    base1 = hlmbridge.fit("mixed mathach c.ses##ib1.sector || id:", hsb, engine=engine)
    assert base1.fixed["stata_term"].tolist() == ["ses", "0.sector", "0.sector#c.ses", "_cons"]
    assert base1.loglik == pytest.approx(res.loglik, abs=1e-6)  # same model, other coding


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_values_are_dropped_listwise_and_counted(engine: str, hsb: pd.DataFrame) -> None:
    df = hsb.copy()
    df.loc[[0, 5, 17], "ses"] = np.nan
    before = df.copy()
    res = hlmbridge.fit("mixed mathach ses || id:", df, engine=engine)
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is untouched
    assert res.n_dropped == 3 and res.nobs == len(df) - 3
    assert any("3 observation(s) dropped" in w for w in res.warnings)
    clean = hlmbridge.fit("mixed mathach ses || id:", df.dropna(subset=["ses"]).reset_index(drop=True), engine=engine)
    assert res.loglik == pytest.approx(clean.loglik, abs=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("change", "command", "message"),
    [
        (None, "mixed nosuch ses || id:", "not in the data: nosuch"),
        (None, "mixed mathach nosuch || id:", "not in the data: nosuch"),
        ("string", "mixed mathach ses txt || id:", "'txt' is not numeric"),
        # (a constant or collinear column is omitted, as Stata and lmer do: tests/test_lmer_gaps.py)
        ("onegroup", "mixed mathach ses || g1:", "only one group"),
        ("singletons", "mixed mathach ses || row:", "single observation"),
    ],
)
def test_bad_data_gives_a_clear_error_and_the_next_fit_works(
    engine: str, change: str | None, command: str, message: str, hsb: pd.DataFrame, model2_fits: dict
) -> None:
    df = hsb.copy()
    df["txt"] = "a"
    df["one"] = 1.0
    df["ses2"] = 2 * df["ses"]
    df["g1"] = "only"
    df["row"] = np.arange(len(df))
    with pytest.raises(DataError, match=message):
        hlmbridge.fit(command, df, engine=engine)
    if engine in model2_fits:
        again = hlmbridge.fit(MODEL2, hsb, engine=engine)
        assert again.loglik == pytest.approx(model2_fits[engine].loglik, abs=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_few_single_observation_groups_are_fitted_with_a_warning(engine: str) -> None:
    rng = np.random.default_rng(5)
    g = np.r_[np.repeat(np.arange(30), 6), [30, 31]]
    df = pd.DataFrame({"y": rng.normal(size=g.size) + rng.normal(size=32)[g], "g": g})
    res = hlmbridge.fit("mixed y || g:", df, engine=engine)
    assert res.n_groups == 32 and res.group_min == 1
    assert any("2 group(s) of 'g' have a single observation" in w for w in res.warnings)


@pytest.mark.requires_r
def test_an_error_inside_lme4_is_surfaced_and_r_stays_usable(hsb: pd.DataFrame, model2_fits: dict) -> None:
    # 10 groups of 2 rows with a random intercept and slope: as many random effects as
    # observations, which lme4 itself refuses.
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"y": rng.normal(size=20), "x": rng.normal(size=20), "g": np.repeat(np.arange(10), 2)})
    with pytest.raises(FitError, match=r"lme4 failed: number of observations"):
        hlmbridge.fit("mixed y x || g: x, cov(unstructured)", df, engine="lme4")
    again = hlmbridge.fit(MODEL2, hsb, engine="lme4")
    assert again.loglik == pytest.approx(model2_fits["lme4"].loglik, abs=1e-8)


def test_statsmodels_failure_to_converge_is_reported(hsb: pd.DataFrame, model2_fits: dict) -> None:
    with pytest.raises(ConvergenceError, match="did not converge"):
        hlmbridge.fit(MODEL2, hsb, engine="statsmodels", max_iterations=1)
    again = hlmbridge.fit(MODEL2, hsb, engine="statsmodels")
    assert again.loglik == pytest.approx(model2_fits["statsmodels"].loglik, abs=1e-6)


def test_unsupported_construct_names_construct_and_engine(hsb: pd.DataFrame) -> None:
    with pytest.raises(UnsupportedSpecError, match="lme4") as err:
        hlmbridge.fit("mixed mathach ses || id: ses, cov(exchangeable)", hsb, engine="lme4")
    assert "exchangeable" in str(err.value)
    with pytest.raises(UnsupportedSpecError, match="statsmodels"):
        hlmbridge.fit("mixed mathach ses || id: ses, cov(exchangeable)", hsb, engine="statsmodels")


def test_asking_for_lme4_without_rpy2_says_what_to_install(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["rpy2"] = None  # rpy2 cannot be imported
        import hlmbridge, hlmbridge.datasets
        try:
            hlmbridge.fit("mixed mathach || id:", hlmbridge.datasets.hsb("combined"), engine="lme4")
        except hlmbridge.EngineUnavailableError as exc:
            print("ERR", exc)
        print("OK", hlmbridge.engines.available_engines(), hlmbridge.engines.get_engine("quadrature").available())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR the lme4 engine needs R" in out.stdout
    assert "apt-get install r-base-core r-cran-lme4" in out.stdout
    # the default engines that run here; quadrature (GLMMs, numpy/scipy only) runs too when named
    assert "OK ['statsmodels'] (True, '')" in out.stdout


@pytest.mark.parametrize("engine", ENGINES)
def test_postestimation_shapes(engine: str, model2_fits: dict) -> None:
    res = model2_fits.get(engine)
    if res is None:
        pytest.skip(f"{engine} unavailable")
    rc = res.recov()["id"]
    assert list(rc.index) == ["ses", "_cons"] and rc.loc["ses", "_cons"] == rc.loc["_cons", "ses"]
    corr = res.recov(corr=True)["id"]
    assert corr.loc["ses", "ses"] == pytest.approx(1.0)
    ic = res.ic()
    assert int(ic["df"].iloc[0]) == 6 and ic["aic"].iloc[0] == pytest.approx(-2 * res.loglik + 12)
    sd = res.random_sd()
    assert sd["stata_term"].tolist() == ["sd(ses)", "sd(_cons)", "corr(ses,_cons)", "sd(Residual)"]
    tidy = res.tidy()
    assert tidy["term"].tolist()[-4:] == ["sd__ses", "sd__(Intercept)", "cor__ses.(Intercept)", "sd__Observation"]
    text = res.summary()
    assert "Mixed-effects ML regression" in text and "cov(ses,_cons)" in text
    assert isinstance(res, hlmbridge.FitResult)
    assert issubclass(DataError, HlmbridgeError)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_frame_changed_in_place_is_refitted_not_served_from_cache(engine: str, hsb: pd.DataFrame) -> None:
    df = hsb[["mathach", "ses", "id"]].copy()
    first = hlmbridge.fit("mixed mathach ses || id:", df, engine=engine)
    df.loc[df.index[:500], "mathach"] += 3.0  # same frame object, new content
    second = hlmbridge.fit("mixed mathach ses || id:", df, engine=engine)
    fresh = hlmbridge.fit("mixed mathach ses || id:", df.copy(), engine=engine)
    assert second.loglik != pytest.approx(first.loglik, abs=1e-3)
    assert second.loglik == pytest.approx(fresh.loglik, abs=1e-8)
