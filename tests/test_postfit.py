"""After the fit (issue 10): random effects, coef, fitted, residuals, predict and plots.

Against R (``requires_r``): the lme4 engine's conditional modes and conditional covariances
equal lme4's ``ranef(fit, condVar = TRUE)`` (attr ``postVar``) to 1e-6 of the conditional
SD; ``fitted``, ``residuals`` and ``predict`` (an unseen group, missing values, transforms
with the fit's learned parameters) equal R's to 1e-8. R computes its numbers in a private
environment from ``r/tests/postfit_reference.R``, fitting its own data (``lme4::sleepstudy``,
``lme4::Penicillin`` (crossed), ``lme4::Pastes`` (nested); HSB is passed from the bundled
.dta) with hlmbridge's control (bobyqa, rhoend 1e-12), so both sit at the same optimum.

Against statsmodels: the statsmodels engine's numbers equal MixedLM's own
``random_effects``, ``fittedvalues`` and ``predict`` from a fit by statsmodels' formula
interface, to the tolerance written beside each test (measured: the two fits stop at
slightly different points of the same optimum).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, UsageError
from hlmbridge.results.fit_result import FitResult

#: R's reference fits use bobyqa to rhoend 1e-12 (lmer, no polish): hlmbridge's lme4 engine is
#: asked for the same optimizer, so both sides sit at the same point to ~1e-10 and the post-fit
#: numbers can be compared at 1e-8. (By default the engine polishes lmer's optimum with Newton
#: steps and lands up to a few 1e-6 away, closer to the optimum than bobyqa on flat likelihoods;
#: tests/test_differential_r.py compares that optimum with lmer's.)
SAME_OPTIMIZER = {"rhoend": 1e-12}

REPO = Path(__file__).resolve().parents[1]
R_SCRIPT = REPO / "r" / "tests" / "postfit_reference.R"


# ---------------------------------------------------------------------------- R side
class _R:
    """R's reference numbers, from a private environment (never R's global one)."""

    def __init__(self) -> None:
        import rpy2.robjects as ro

        self.ro = ro
        self.env = ro.r("new.env()")
        ro.r["sys.source"](str(R_SCRIPT), envir=self.env)

    def dataset(self, name: str) -> tuple[object, pd.DataFrame]:
        """An lme4 data set: the R data frame and the same data in pandas (factors as
        Categoricals with R's levels)."""
        rdf = self.env["postfit_dataset"](name)
        return rdf, self.to_pandas(rdf)

    def to_pandas(self, rdf: object) -> pd.DataFrame:
        ro = self.ro
        out = {}
        for name in rdf.names:
            col = rdf.rx2(name)
            if ro.r["is.factor"](col)[0]:
                levels = [str(s) for s in ro.r["levels"](col)]
                codes = np.array(ro.r["as.integer"](col)) - 1
                out[name] = pd.Categorical.from_codes(codes, categories=levels)
            else:
                out[name] = np.array(ro.r["as.numeric"](col), dtype=float)
        return pd.DataFrame(out)

    def from_pandas(self, df: pd.DataFrame) -> object:
        """An R data frame from pandas: numbers (NaN -> NA) and text (None -> NA)."""
        ro = self.ro
        cols = {}
        for name in df.columns:
            s = df[name]
            if pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
                v = s.to_numpy(dtype=float, na_value=np.nan)
                cols[name] = ro.FloatVector([ro.NA_Real if np.isnan(x) else float(x) for x in v])
            else:
                cols[name] = ro.StrVector([ro.NA_Character if pd.isna(x) else str(x) for x in s.astype(object)])
        return ro.DataFrame(cols)

    def lmer(self, rdf: object, formula: str, reml: bool, weights: str | None = None) -> object:
        return self.env["postfit_lmer"](rdf, formula, reml, self.ro.NULL if weights is None else weights)

    def ranef(self, fit: object) -> tuple[pd.DataFrame, pd.DataFrame]:
        out = self.env["postfit_ranef"](fit)
        get = {n: out.rx2(n) for n in out.names}
        modes = pd.DataFrame({"group": list(get["grpvar"]), "level": list(get["grp"]), "term": list(get["term"]),
                              "condval": np.array(get["condval"]), "condsd": np.array(get["condsd"])})
        pv = pd.DataFrame({"group": list(get["pv_grpvar"]), "level": list(get["pv_grp"]),
                           "term_i": list(get["pv_term_i"]), "term_j": list(get["pv_term_j"]),
                           "value": np.array(get["pv_value"])})
        return modes, pv

    def coef(self, fit: object) -> dict[str, pd.DataFrame]:
        out = self.env["postfit_coef"](fit)
        frames = {}
        for g in out.names:
            item = out.rx2(g)
            groups = [str(s) for s in item.rx2("groups")]
            terms = [str(s) for s in item.rx2("terms")]
            values = np.array(item.rx2("values")).reshape((len(groups), len(terms)), order="F")
            frames[g] = pd.DataFrame(values, index=groups, columns=terms)
        return frames

    def vectors(self, fun: str, *args: object) -> dict[str, np.ndarray]:
        out = self.env[fun](*args)
        return {n: np.array(out.rx2(n), dtype=float) for n in out.names}


@pytest.fixture(scope="module")
def R() -> _R:
    return _R()


def _hsb_for_r(hsb: pd.DataFrame) -> pd.DataFrame:
    return hsb[["mathach", "ses", "sector", "meanses", "id"]]


# ---------------------------------------------------------------------------- comparisons
def _check_ranef(res: FitResult, R: _R, rfit: object) -> int:
    """hlmbridge's ranef and conditional covariances vs lme4's; the number of rows compared."""
    modes, pv = R.ranef(rfit)
    ours = res.ranef()
    assert len(ours) == len(modes)
    merged = ours.merge(modes, on=["group", "level", "term"], how="inner", validate="one_to_one")
    assert len(merged) == len(modes), "every (factor, group, term) of lme4 is in hlmbridge's ranef"
    sd = merged["condsd"].to_numpy()
    assert np.all(sd > 0)
    # 1e-6 relative to the conditional SD (the scale on which a difference could matter).
    np.testing.assert_array_less(np.abs(merged["estimate"] - merged["condval"]) / sd, 1e-6)
    np.testing.assert_array_less(np.abs(merged["std_error"] - sd) / sd, 1e-6)
    # The whole conditional covariance of each group (off-diagonal terms too).
    from hlmbridge.results.random_effects import level_effects

    cov = {}
    for le in level_effects(res):
        for g, lab in enumerate(le.group_labels):
            for i, ti in enumerate(le.terms_lme4):
                for j, tj in enumerate(le.terms_lme4):
                    cov[(le.key, lab, ti, tj)] = (le.cond_cov[g, i, j], np.sqrt(le.cond_cov[g, i, i] * le.cond_cov[g, j, j]))
    for row in pv.itertuples(index=False):
        value, scale = cov[(row.group, row.level, row.term_i, row.term_j)]
        assert abs(value - row.value) <= 1e-6 * scale, (row, value)
    return len(merged)


def _close(ours: np.ndarray, theirs: np.ndarray, scale: float | None = None) -> None:
    """Equal to 1e-8 relative, or 1e-8 of the response's scale for values near zero."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    scale = float(np.nanmax(np.abs(theirs))) if scale is None else scale
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-8 * scale, equal_nan=True)


def _check_fitted(res: FitResult, R: _R, rfit: object) -> None:
    ref = R.vectors("postfit_fitted", rfit)
    scale = float(np.max(np.abs(ref["fitted"])))
    _close(res.fitted().to_numpy(), ref["fitted"])
    _close(res.fitted(level=0).to_numpy(), ref["marginal"])
    _close(res.residuals().to_numpy(), ref["response"], scale)
    _close(res.residuals(kind="pearson").to_numpy(), ref["pearson"], float(np.max(np.abs(ref["pearson"]))))
    _close(res.predict().to_numpy(), ref["fitted"])


def _check_predict(res: FitResult, R: _R, rfit: object, newdata: pd.DataFrame, n_new: int) -> None:
    before = newdata.copy(deep=True)
    ref = R.vectors("postfit_predict", rfit, R.from_pandas(newdata))
    cond = res.predict(newdata)
    marg = res.predict(newdata, re_form="~0")
    pd.testing.assert_frame_equal(newdata, before)  # the caller's frame is never modified
    assert cond.values.index.equals(newdata.index) and marg.values.index.equals(newdata.index)
    _close(cond.to_numpy(), ref["conditional"])
    _close(marg.to_numpy(), ref["marginal"])
    assert cond.n_new_levels == n_new and marg.n_new_levels == 0
    assert cond.n_missing == int(np.isnan(ref["conditional"]).sum())


# ---------------------------------------------------------------------------- tests vs R
R_CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", True),
    "Penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", True),
    "Pastes": ("strength ~ 1 + (1 | batch/cask)", True),
}


@pytest.mark.requires_r
@pytest.mark.parametrize("name", list(R_CASES))
def test_lme4_datasets_equal_lme4(R: _R, name: str) -> None:
    formula, reml = R_CASES[name]
    rdf, df = R.dataset(name)
    rfit = R.lmer(rdf, formula, reml)
    res = hlmbridge.fit(formula, df, engine="lme4", **SAME_OPTIMIZER, reml=reml)
    n = _check_ranef(res, R, rfit)
    assert n == sum(g.n_groups * len(g.terms) for g in res.groups)
    _check_fitted(res, R, rfit)
    for g, frame in R.coef(rfit).items():
        ours = res.coef()[g]
        assert list(ours.columns) == list(frame.columns)
        np.testing.assert_allclose(ours.loc[frame.index].to_numpy(), frame.to_numpy(), rtol=1e-8,
                                   atol=1e-8 * float(np.max(np.abs(frame.to_numpy()))))
    # New data: known and unseen groups, and a missing value.
    if name == "sleepstudy":
        new = pd.DataFrame({"Days": [0.0, 4.5, np.nan, 9.0], "Subject": ["308", "999", "309", "372"]},
                           index=[7, 3, 5, 1])
        n_new = 1
    elif name == "Penicillin":
        new = pd.DataFrame({"plate": ["a", "zz", "b", None], "sample": ["A", "B", "Q", "F"]}, index=list("wxyz"))
        n_new = 3  # a missing group is an unseen one (lme4 gives it the population level too)
    else:
        new = pd.DataFrame({"batch": ["A", "B", "Z", None], "cask": ["a", "q", "b", "a"]})
        n_new = 3
    _check_predict(res, R, rfit, new, n_new)


HSB_SEED = [
    ("mixed mathach ses || id:", "mathach ~ ses + (1 | id)"),
    ("mixed mathach ses || id: ses, cov(unstructured)", "mathach ~ ses + (ses | id)"),
    ("mixed mathach ses sector || id: ses, cov(unstr)", "mathach ~ ses + sector + (ses | id)"),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("command,formula", HSB_SEED)
def test_hsb_seed_models_equal_lme4(R: _R, hsb_combined: pd.DataFrame, command: str, formula: str) -> None:
    rdf = R.from_pandas(_hsb_for_r(hsb_combined))
    rfit = R.lmer(rdf, formula, False)  # a Stata command means ML
    res = hlmbridge.fit(command, hsb_combined, engine="lme4", **SAME_OPTIMIZER)
    assert _check_ranef(res, R, rfit) == 160 * len(res.groups[0].terms)
    _check_fitted(res, R, rfit)
    new = hsb_combined.iloc[[0, 1, 2000, 5000]].copy()
    new.loc[new.index[1], "ses"] = np.nan
    new.loc[new.index[2], "id"] = "unseen"
    new = new.drop(columns=["mathach"])  # predict needs no response
    _check_predict(res, R, rfit, new, 1)


@pytest.mark.requires_r
def test_predict_transforms_use_the_fit_parameters(R: _R, hsb_combined: pd.DataFrame) -> None:
    """poly(), scale() and factor() on new data as R's predict does them: the fit's poly
    coefficients, centre and scale, and factor levels (new data with one sector only)."""
    formula = "mathach ~ poly(ses, 2) + scale(meanses) + factor(sector) + (ses | id)"
    rfit = R.lmer(R.from_pandas(_hsb_for_r(hsb_combined)), formula, True)
    res = hlmbridge.fit(formula, hsb_combined, engine="lme4", **SAME_OPTIMIZER)
    _check_ranef(res, R, rfit)
    _check_fitted(res, R, rfit)
    rows = hsb_combined[hsb_combined["sector"] == 1].iloc[[0, 10, 300, 900, 1500]]
    new = rows[["ses", "meanses", "sector", "id"]].copy()
    new.loc[new.index[0], "meanses"] = np.nan
    new.loc[new.index[3], "id"] = "new school"
    new.index = ["a", "b", "c", "d", "e"]
    _check_predict(res, R, rfit, new, 1)


@pytest.mark.requires_r
def test_weights_and_offset_equal_lme4(R: _R) -> None:
    """Precision weights and an offset in the formula: modes, fitted, Pearson residuals
    (sqrt(w) (y - mu) / sigma) and predict (the offset evaluated on new data) as lme4's."""
    rdf, df = R.dataset("sleepstudy")
    df = df.assign(w=1.0 + df["Days"] / 10)
    rdf = R.from_pandas(df)
    formula = "Reaction ~ Days + offset(Days / 2) + (Days | Subject)"
    rfit = R.lmer(rdf, formula, True, weights="w")
    res = hlmbridge.fit(formula, df, engine="lme4", **SAME_OPTIMIZER, weights="w")
    _check_ranef(res, R, rfit)
    _check_fitted(res, R, rfit)
    new = pd.DataFrame({"Days": [1.0, np.nan, 8.0], "Subject": ["333", "333", "new"]})
    _check_predict(res, R, rfit, new, 1)


# ---------------------------------------------------------------------------- vs statsmodels
def _sm_fit(formula: str, df: pd.DataFrame, groups: str, re_formula: str | None, reml: bool) -> object:
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM.from_formula(formula, df, groups=df[groups], re_formula=re_formula)
        first = model.fit(reml=reml, method=["powell"], maxiter=50_000, ftol=1e-12)
        return model.fit(reml=reml, method=["bfgs"], start_params=first.params_object, maxiter=2_000)


# Measured 2026-11-26 (statsmodels 0.15.0):
# sleepstudy: identical to rounding (ranef 1e-14 of the conditional SD, fitted 2e-15
# relative: the same optimizer path); HSB model 2: ranef 4.2e-6 of the conditional SD,
# fitted (conditional) 9.1e-7 relative, population-level 5.8e-8, log likelihoods equal to
# 7e-12 (a flat optimum reached at slightly different points). Tolerances ~10x those.
SM_RANEF_TOL = 5e-5
SM_FIT_TOL = 1e-5


@pytest.mark.parametrize("case", ["sleepstudy", "hsb"])
def test_statsmodels_engine_equals_statsmodels(case: str, hsb_combined: pd.DataFrame) -> None:
    if case == "sleepstudy":
        df = hlmbridge.datasets.sleepstudy()
        res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", df, engine="statsmodels")
        sm = _sm_fit("Reaction ~ Days", df, "Subject", "~Days", True)
        new = pd.DataFrame({"Days": [0.0, 4.5, 9.0]}, index=[4, 5, 6])
    else:
        df = hsb_combined
        res = hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", df, engine="statsmodels")
        sm = _sm_fit("mathach ~ ses", df, "id", "~ses", False)
        new = df.iloc[[3, 30, 3000]][["ses"]]
    group = res.groups[0].group if case == "hsb" else "Subject"
    ours = res.ranef()
    worst = 0.0
    for label, effects in sm.random_effects.items():
        rows = ours[(ours["level"] == str(label))]
        assert len(rows) == len(effects)
        diff = np.abs(rows["estimate"].to_numpy() - np.asarray(effects)) / rows["std_error"].to_numpy()
        worst = max(worst, float(diff.max()))
    assert worst < SM_RANEF_TOL, worst
    assert len(sm.random_effects) == res.groups[0].n_groups and group
    np.testing.assert_allclose(res.fitted().to_numpy(), np.asarray(sm.fittedvalues), rtol=SM_FIT_TOL)
    np.testing.assert_allclose(res.fitted(level=0).to_numpy(), np.asarray(sm.predict()), rtol=SM_FIT_TOL)
    np.testing.assert_allclose(res.predict(new, re_form="~0").to_numpy(), np.asarray(sm.predict(new)),
                               rtol=SM_FIT_TOL)


@pytest.mark.requires_r
def test_engines_agree_on_random_effects(hsb_combined: pd.DataFrame) -> None:
    """Engine against engine, judged on the conditional SD scale (measured: 4e-6)."""
    a = hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", hsb_combined, engine="statsmodels")
    b = hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", hsb_combined, engine="lme4")
    ra, rb = a.ranef(), b.ranef()
    assert (ra["level"] == rb["level"]).all() and (ra["term"] == rb["term"]).all()
    assert float((np.abs(ra["estimate"] - rb["estimate"]) / rb["std_error"]).max()) < 1e-4


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def sleep_fit() -> FitResult:
    return hlmbridge.fit("Reaction ~ Days + (Days | Subject)", hlmbridge.datasets.sleepstudy(),
                         engine="statsmodels")


def test_predict_bad_input(sleep_fit: FitResult) -> None:
    good = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "309"]})
    before = good.copy()
    assert np.isfinite(sleep_fit.predict(good).to_numpy()).all()  # no response column: fine
    with pytest.raises(DataError, match="lacks the column.*Days"):
        sleep_fit.predict(good.drop(columns=["Days"]))
    with pytest.raises(DataError, match="lacks the column.*Subject"):
        sleep_fit.predict(good.drop(columns=["Subject"]))
    sleep_fit.predict(good.drop(columns=["Subject"]), re_form="~0")  # no groups needed without them
    with pytest.raises(DataError, match="numeric in the fit"):
        sleep_fit.predict(good.assign(Days=["one", "two"]))
    with pytest.raises(DataError, match="no rows"):
        sleep_fit.predict(good.iloc[:0])
    with pytest.raises(DataError, match="DataFrame"):
        sleep_fit.predict({"Days": [1.0]})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="re_form"):
        sleep_fit.predict(good, re_form="~(1|Nope)")
    with pytest.raises(UsageError, match="level"):
        sleep_fit.fitted(level=3)
    with pytest.raises(UsageError, match="kind"):
        sleep_fit.residuals(kind="partial")
    pd.testing.assert_frame_equal(good, before)


def test_unknown_factor_level_is_a_data_error(hsb_combined: pd.DataFrame) -> None:
    res = hlmbridge.fit("mathach ~ factor(sector) + (1 | id)", hsb_combined, engine="statsmodels")
    new = hsb_combined.iloc[:3].copy()
    new["sector"] = [0, 1, 2]
    with pytest.raises(DataError, match="level.*2"):
        res.predict(new)
    stata = hlmbridge.fit("mixed mathach i.sector || id:", hsb_combined, engine="statsmodels")
    with pytest.raises(DataError, match="sector.*2"):
        stata.predict(new)
    ok = stata.predict(new.iloc[:2])
    assert np.isclose(ok.to_numpy()[0], stata.fitted().to_numpy()[0])


def test_result_from_json_has_no_design(sleep_fit: FitResult) -> None:
    d = sleep_fit.to_dict(ranef=True)
    assert len(d["ranef"]) == 36 and set(d["ranef"][0]) >= {"group", "level", "term", "estimate", "std_error"}
    back = FitResult.from_dict(json.loads(json.dumps(d)))
    assert back == sleep_fit and back.design is None
    for call in (back.ranef, back.coef, back.fitted, back.residuals, back.predict):
        with pytest.raises(UsageError, match="refit to get"):
            call()


def test_tidy_ran_vals(sleep_fit: FitResult) -> None:
    t = sleep_fit.tidy(effects="ran_vals")
    assert list(t.columns[:5]) == ["effect", "group", "level", "term", "estimate"]
    assert (t["effect"] == "ran_vals").all() and len(t) == 36
    full = sleep_fit.tidy(effects=("fixed", "ran_pars", "ran_vals"))
    assert list(full["effect"].unique()) == ["fixed", "ran_pars", "ran_vals"]
    assert list(sleep_fit.tidy().columns) == ["effect", "group", "term", "estimate", "std_error", "statistic",
                                              "p_value", "conf_low", "conf_high"]
    with pytest.raises(UsageError, match="effects"):
        sleep_fit.tidy(effects="ran_coefs")


def test_fitted_levels_nested() -> None:
    """level=k adds the k outermost factors' effects; the effects add up as the design says."""
    rng = np.random.default_rng(7)
    school = np.repeat(np.arange(30), 12)
    cls = np.tile(np.repeat(np.arange(3), 4), 30)
    y = rng.normal(size=30)[school] * 2 + rng.normal(size=90)[school * 3 + cls] + rng.normal(size=360)
    df = pd.DataFrame({"y": y, "x": rng.normal(size=360), "school": school.astype(str), "cls": cls.astype(str)})
    res = hlmbridge.fit("y ~ x + (1 | school/cls)", df, engine="statsmodels")
    f0, f1, f2 = (res.fitted(level=k).to_numpy() for k in (0, 1, 2))
    np.testing.assert_allclose(f2, res.fitted().to_numpy())
    re = res.ranef()
    assert list(re["group"].unique()) == ["school", "cls:school"]
    top = re[re["group"] == "school"].set_index("level")["estimate"]
    inner = re[re["group"] == "cls:school"].set_index("level")["estimate"]
    np.testing.assert_allclose(f1 - f0, top.loc[df["school"]].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(f2 - f1, inner.loc[df["cls"] + ":" + df["school"]].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(res.residuals(level=0).to_numpy(), y - f0)
    # predict() on the fit's own rows gives the fitted values, for an lme4 formula and the
    # same model as a Stata command (nested group labels "school:cls").
    np.testing.assert_allclose(res.predict(df).to_numpy(), f2, rtol=1e-12)
    stata = hlmbridge.fit("mixed y x || school: || cls:, reml", df.assign(cls=cls, school=school),
                          engine="statsmodels")
    assert [g.key for g in stata.design.levels] == ["school", "school:cls"]
    pred = stata.predict(df.assign(cls=cls, school=school))
    np.testing.assert_allclose(pred.to_numpy(), stata.fitted().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(pred.to_numpy(), f2, atol=1e-6 * np.abs(f2).max())  # one model, two fits


# ---------------------------------------------------------------------------- plots
def test_plots_render(sleep_fit: FitResult, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from hlmbridge.results.plots import caterpillar, qq_plot, residual_plot, save_plots

    fig = caterpillar(sleep_fit)
    assert len(fig.axes) == 2
    assert [sum(len(ln.get_xdata()) for ln in ax.lines if ln.get_gid() == "modes") for ax in fig.axes] == [18, 18]
    fig = residual_plot(sleep_fit)
    pts = [c for c in fig.axes[0].collections if c.get_gid() == "residuals"]
    assert len(pts[0].get_offsets()) == 180
    fig = qq_plot(sleep_fit)
    counts = [len(c.get_offsets()) for ax in fig.axes for c in ax.collections if c.get_gid() == "quantiles"]
    assert counts == [18, 18, 180]
    paths = save_plots(sleep_fit, tmp_path / "plots")
    assert [p.name for p in paths] == ["caterpillar.png", "residuals.png", "qq.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_fit_writes_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from hlmbridge.cli import main

    data = REPO / "fixtures" / "data" / "sleepstudy.csv"
    out = tmp_path / "pics"
    assert main(["fit", "Reaction ~ Days + (Days | Subject)", "--data", str(data), "--engine", "statsmodels",
                 "--plot", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["statsmodels_caterpillar.png", "statsmodels_qq.png",
                                                     "statsmodels_residuals.png"]


def test_import_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, hlmbridge, hlmbridge.results.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- issue 26
SEED_LOG = REPO / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"


def _printed_after(line: int) -> list[str]:
    """Stata's non-blank output lines after the command on ``line`` (1-based) of the seed log,
    through the end of lrtest's note."""
    lines = SEED_LOG.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    for text in lines[line:]:
        if text.strip():
            out.append(text.rstrip())
        if text.rstrip().endswith("the reported test is conservative."):
            return out
    raise AssertionError(f"no lrtest output after line {line}")


@pytest.mark.parametrize("case", ["L0631_lrtest", "L0781_lrtest", "L0988_lrtest"])
def test_lrtest_prints_as_stata_does(case: str, hsb_combined: pd.DataFrame) -> None:
    """``print(lrtest(...))`` printed the dataclass's repr; now Stata's lines, the seed's numbers."""
    from hlmbridge.reference.fixtures import load_references

    (ref,) = [r for r in load_references() if r.case == case]
    fits = [hlmbridge.fit(m.command, hsb_combined, engine="statsmodels") for m in ref.models]
    test = hlmbridge.lrtest(*fits, names=tuple(m.name for m in ref.models))
    ours = [ln for ln in str(test).splitlines() if ln.strip()]
    stata = _printed_after(ref.source.line)
    assert ours[:4] == stata[:4]
    assert " ".join(" ".join(ours[4:]).split()) == " ".join(" ".join(stata[4:]).split())
    if case == "L0988_lrtest":  # the one block the log keeps wrapped as Stata printed it
        assert ours == stata
    assert repr(test).startswith("LRTest(chi2=") and test.df == 2  # the data fields stay


def test_lrtest_default_labels_are_the_models_as_written() -> None:
    df = hlmbridge.datasets.sleepstudy()
    small = hlmbridge.fit("Reaction ~ poly(Days, 2) + (1 | Subject)", df, engine="statsmodels", reml=False)
    big = hlmbridge.fit("Reaction ~ poly(Days, 2) + (Days | Subject)", df, engine="statsmodels", reml=False)
    test = hlmbridge.lrtest(big, small)  # poly() has no Stata form: this raised UnsupportedSpecError
    assert str(test).splitlines()[1] == ("Assumption: Reaction ~ poly(Days, 2) + (1 | Subject) nested within "
                                         "Reaction ~ poly(Days, 2) + (Days | Subject)")
    assert test.restricted == "Reaction ~ poly(Days, 2) + (1 | Subject)" and test.restricted_name is None
    with pytest.raises(UsageError, match="names must be two non-empty strings"):
        hlmbridge.lrtest(big, small, names=("only one",))  # type: ignore[arg-type]


def test_coef_puts_the_intercept_first_as_lme4_does(hsb_combined: pd.DataFrame) -> None:
    res = hlmbridge.fit("mixed mathach ses sector || id: ses, cov(unstr)", hsb_combined, engine="statsmodels")
    assert list(res.fixed["term"]) == ["ses", "sector", "(Intercept)"]  # Stata's order, _cons last
    cf = res.coef()["id"]
    assert list(cf.columns) == ["(Intercept)", "ses", "sector"]
    re = res.ranef().pivot(index="level", columns="term", values="estimate").loc[cf.index]
    beta = res.fixed.set_index("term")["estimate"]
    np.testing.assert_allclose(cf["(Intercept)"], beta["(Intercept)"] + re["(Intercept)"], rtol=1e-12)
    np.testing.assert_allclose(cf["ses"], beta["ses"] + re["ses"], rtol=1e-12)
    np.testing.assert_allclose(cf["sector"], beta["sector"], rtol=1e-12)


@pytest.mark.requires_r
def test_coef_of_a_stata_command_equals_lme4s_coef(R: _R, hsb_combined: pd.DataFrame) -> None:
    rfit = R.lmer(R.from_pandas(_hsb_for_r(hsb_combined)), "mathach ~ ses + sector + (ses | id)", False)
    res = hlmbridge.fit("mixed mathach ses sector || id: ses, cov(unstr)", hsb_combined, engine="lme4",
                        **SAME_OPTIMIZER)
    (frame,) = R.coef(rfit).values()
    ours = res.coef()["id"]
    assert list(ours.columns) == list(frame.columns) == ["(Intercept)", "ses", "sector"]
    np.testing.assert_allclose(ours.loc[frame.index].to_numpy(), frame.to_numpy(), rtol=1e-8,
                               atol=1e-8 * float(np.max(np.abs(frame.to_numpy()))))


def test_predict_is_array_like(sleep_fit: FitResult) -> None:
    new = pd.DataFrame({"Days": [0.0, 5.0, np.nan], "Subject": ["308", "999", "309"]}, index=["a", "b", "c"])
    p = sleep_fit.predict(new)
    arr = np.asarray(p)  # was a 0-d object array holding the wrapper
    assert arr.shape == (3,) and arr.dtype == float
    np.testing.assert_array_equal(arr, p.values.to_numpy())
    assert list(p.values.index) == ["a", "b", "c"] and p.n_new_levels == 1 and p.n_missing == 1
    assert p["b"] == p.values["b"] and np.isnan(p["c"]) and len(list(p)) == 3
    assert float(np.nanmean(p)) == pytest.approx(float(p.values.mean()))
