"""Predictions with a subset of the random effects (``re_form``) and population-level standard
errors, checked against lme4 in R (issue 27, item 4).

R's numbers come from ``r/tests/predict_reference.R`` (with ``df_reference.R``), sourced into a
private rpy2 environment: lme4's ``predict(fit, re.form = ...)`` on the fit's rows and on new rows
(``allow.new.levels = TRUE``), on an lmer fit evaluated (``optimizer = NULL``) at the variance
components each hlmbridge engine estimated, so both sides predict at the same point. lme4 has no
``se.fit``; the reference standard error is R's ``sqrt(diag(X vcov(fit) X'))`` from lme4's own
``vcov`` and model matrix. Nested (Pastes, Oats) and crossed (Penicillin) models, random slopes
(sleepstudy, Orthodont, HSB), lme4 formulas and Stata commands, both engines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from tests.r_reference import RScripts
from hlmbridge.errors import UsageError

pytestmark = pytest.mark.requires_r

REPO = Path(__file__).resolve().parents[1]
R_FILES = (REPO / "r" / "tests" / "df_reference.R", REPO / "r" / "tests" / "predict_reference.R")
RTOL = 1e-10  # both sides at the same variance components (measured: 3e-13 relative, both engines)
ENGINES = ("lme4", "statsmodels")

# (id, package, data set, formula, REML, re_forms as lme4 writes them, the pure grouping columns);
# a Stata command's id says which lme4 formula R fits ("stata" cases, ML as Stata's default).
MODELS = [
    ("sleep", "lme4", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True,
     ("NA", "NULL", "~ (1 | Subject)", "~ (0 + Days | Subject)"), ("Subject",)),
    ("orthodont", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", False,
     ("~ (1 | Subject)", "~ (age | Subject)", "~ (0 + age | Subject)"), ("Subject",)),
    ("pastes_nested", "lme4", "Pastes", "strength ~ 1 + (1 | batch/cask)", True,
     ("~ (1 | batch)", "~ (1 | cask:batch)", "NULL"), ("batch", "cask")),
    ("oats_nested", "nlme", "Oats", "yield ~ nitro + Variety + (1 | Block/Variety)", True,
     ("~ (1 | Block)", "~ (1 | Variety:Block)", "NA"), ("Block",)),
    ("penicillin_crossed", "lme4", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True,
     ("~ (1 | plate)", "~ (1 | sample)", "~ (1 | sample) + (1 | plate)"), ("plate", "sample")),
    ("pastes_stata_nested", "lme4", "Pastes", "mixed strength || batch: || cask:", False,
     ("~ (1 | batch)", "~ (1 | batch:cask)"), ("batch", "cask")),
    ("hsb_stata_slope", "hlmbridge", "hsb", "mixed mathach ses || id: ses, cov(unstructured)", False,
     ("~ (1 | id)", "~ (0 + ses | id)", "NULL"), ("id",)),
]
#: The lme4 formula R fits for a Stata command (the lme4 engine's own translation).
R_FORMULA = {
    "pastes_stata_nested": "strength ~ 1 + (1 | batch) + (1 | batch:cask)",
    "hsb_stata_slope": "mathach ~ ses + (ses | id)",
}


def _engines(mid: str) -> tuple[str, ...]:
    """statsmodels' MixedLM cannot fit crossed grouping factors (hlmbridge refuses them there)."""
    return ("lme4",) if mid.endswith("crossed") else ENGINES


class _R(RScripts):
    def __init__(self) -> None:
        super().__init__(R_FILES)

    def data(self, package: str, name: str) -> tuple:
        """(R data frame, the same as pandas); ``hlmbridge`` data sets go from pandas to R."""
        if package == "hlmbridge":
            df = getattr(hlmbridge.datasets, name)()
            return self.conv(df, True), df
        rd = self.env["predict_reference_data"](package, name)
        return rd, self.conv(rd, False)

    def model(self, rdata, formula: str, reml: bool, at: hlmbridge.FitResult | None, weights: str | None = None):
        """lmer's fit at ``at``'s variance components (None: lmer's own optimum), with the
        precision weights in column ``weights`` of the data."""
        w = self.ro.NULL if weights is None else weights
        if at is None:
            return self.env["predict_reference_model"](rdata, formula, reml, self.ro.NULL, w)
        where = self.variance_rows(at)
        return self.env["predict_reference_model"](rdata, formula, reml, where, w)

    def predict(self, fit, newdata: pd.DataFrame, re_forms: tuple[str, ...]) -> dict:
        out = self.env["predict_reference"](fit, self.conv(newdata, True), self.ro.StrVector(list(re_forms)))
        return {k: np.array(v, dtype=float) for k, v in zip(out.names, out)}  # a copy: R may free its own


@pytest.fixture(scope="module")
def rref() -> _R:
    return _R()


def _newdata(df: pd.DataFrame, groups: tuple[str, ...]) -> pd.DataFrame:
    """Eight rows of the data (every other row), the grouping columns as text, the last two
    rows in a group the fit did not see."""
    new = df.iloc[::max(1, len(df) // 8)].iloc[:8].copy()
    new.index = [f"r{i}" for i in range(len(new))]
    for g in groups:
        if pd.api.types.is_numeric_dtype(new[g]):  # a numeric group code (hsb's id): a code not in the data
            new.iloc[-2:, new.columns.get_loc(g)] = df[g].max() + 1
            continue
        new[g] = new[g].astype(str).to_numpy(dtype=object)
        new.iloc[-2:, new.columns.get_loc(g)] = "unseen"
    return new


def _ours(re_form: str) -> str | None:
    return {"NA": "~0", "NULL": None}.get(re_form, re_form)


@pytest.fixture(scope="module")
def cases(rref: _R) -> dict:
    out = {}
    for mid, pkg, name, formula, reml, re_forms, groups in MODELS:
        rdata, df = rref.data(pkg, name)
        new = _newdata(df, groups)
        for engine in _engines(mid):
            stata = formula.startswith("mixed")
            res = hlmbridge.fit(formula, df, engine=engine, reml=None if stata else reml)
            fit = rref.model(rdata, R_FORMULA.get(mid, formula), reml, res)
            out[(mid, engine)] = (res, new, re_forms, rref.predict(fit, new, re_forms))
    return out


CASES = [(m[0], e) for m in MODELS for e in _engines(m[0])]


@pytest.mark.parametrize("mid,engine", CASES)
def test_predict_re_form_matches_lme4(cases, mid: str, engine: str) -> None:
    res, new, re_forms, ref = cases[(mid, engine)]
    for i, rf in enumerate(re_forms, start=1):
        on_fit = res.predict(re_form=_ours(rf))
        np.testing.assert_allclose(on_fit.to_numpy(), ref[f"fit_{i}"], rtol=RTOL,
                                   err_msg=f"{mid}/{engine}: predict(re.form = {rf}) on the fit's rows")
        on_new = res.predict(new, re_form=_ours(rf))
        np.testing.assert_allclose(on_new.to_numpy(), ref[f"new_{i}"], rtol=RTOL,
                                   err_msg=f"{mid}/{engine}: predict(newdata, re.form = {rf})")
        assert list(on_new.values.index) == list(new.index)
        assert on_new.n_new_levels == (0 if rf == "NA" else 2), f"{mid}/{engine}: {rf}"


@pytest.mark.parametrize("mid,engine", CASES)
def test_population_se_is_r_x_vcov_x(cases, mid: str, engine: str) -> None:
    res, new, _, ref = cases[(mid, engine)]
    on_fit = res.predict(re_form="~0", se_fit=True)
    np.testing.assert_allclose(on_fit.se.to_numpy(), ref["se_fit"], rtol=1e-9,
                               err_msg=f"{mid}/{engine}: se_fit on the fit's rows")
    on_new = res.predict(new, re_form="~0", se_fit=True)
    np.testing.assert_allclose(on_new.se.to_numpy(), ref["se_new"], rtol=1e-9,
                               err_msg=f"{mid}/{engine}: se_fit on new rows")
    assert on_new.se.index.equals(on_new.values.index)


def test_partial_re_form_differs_from_all_and_none(cases) -> None:
    """Not a vacuous comparison: the partial prediction is neither of the other two."""
    res, new, _, _ = cases[("penicillin_crossed", "lme4")]
    part = res.predict(new, re_form="~ (1 | plate)").to_numpy()
    for other in (res.predict(new).to_numpy(), res.predict(new, re_form="~0").to_numpy()):
        assert np.max(np.abs(part[:-2] - other[:-2])) > 1e-3


def test_re_form_errors(cases) -> None:
    res, new, _, _ = cases[("sleep", "lme4")]
    with pytest.raises(UsageError, match="grouping factor 'Foo'"):
        res.predict(new, re_form="~ (1 | Foo)")
    with pytest.raises(UsageError, match="not a variable of the model's random effects"):
        res.predict(new, re_form="~ (Reaction | Subject)")
    with pytest.raises(UsageError, match="fixed-effect terms"):
        res.predict(new, re_form="~ Days + (1 | Subject)")
    with pytest.raises(UsageError, match="twice"):
        res.predict(new, re_form="~ (1 | Subject) + (1 | Subject)")
    with pytest.raises(UsageError, match="one-sided"):
        res.predict(new, re_form="(1 | Subject)")
    with pytest.raises(UsageError, match="population-level prediction only"):
        res.predict(new, re_form="~ (1 | Subject)", se_fit=True)
    with pytest.raises(UsageError, match="population-level prediction only"):
        res.predict(new, se_fit=True)
    with pytest.raises(UsageError, match="se_fit"):
        res.predict(new, re_form="~0", se_fit="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_residual_kinds_match_lme4_with_weights(rref: _R, engine: str) -> None:
    """lme4's residuals(type = "response", "working", "deviance", "pearson") of a weighted fit:
    hlmbridge's response, working and deviance kinds, and its (scaled) Pearson residuals."""
    _, df = rref.data("lme4", "sleepstudy")
    df = df.assign(w=np.tile([0.5, 1.0, 2.0, 4.0], 45))
    formula = "Reaction ~ Days + (Days | Subject)"
    res = hlmbridge.fit(formula, df, engine=engine, weights="w")
    out = rref.env["residuals_reference"](rref.model(rref.conv(df, True), formula, True, res, "w"))
    ref = {k: np.array(v, dtype=float) for k, v in zip(out.names, out)}
    for ours, theirs in (("response", "response"), ("working", "working"), ("deviance", "deviance"),
                         ("deviance", "pearson"), ("pearson", "pearson_scaled")):
        np.testing.assert_allclose(res.residuals(ours).to_numpy(), ref[theirs], rtol=1e-7, atol=1e-9,
                                   err_msg=f"{engine}: {ours} vs lme4's {theirs}")
    assert not np.allclose(ref["deviance"], ref["response"])  # the weights matter here
