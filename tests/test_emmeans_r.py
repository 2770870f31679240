"""Estimated marginal means and contrasts, checked against R's emmeans (1.8.4).

R's numbers come from ``r/tests/emmeans_reference.R`` (with ``df_reference.R`` and
``anova_reference.R`` for the data and the fit), sourced into a private rpy2 environment:
emmeans' ``emmeans()`` and ``contrast()`` on an lmer fit evaluated (``optimizer = NULL``) at the
variance components each hlmbridge engine estimated, so both sides work at the same point.
hlmbridge's numbers come from its own design and estimates (:mod:`hlmbridge.results.emmeans`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from tests.r_reference import RScripts
from hlmbridge.results.emmeans import emmeans

REPO = Path(__file__).resolve().parents[1]
R_FILES = tuple(REPO / "r" / "tests" / f for f in ("df_reference.R", "anova_reference.R", "emmeans_reference.R"))
RTOL = 1e-6
P_ATOL = 1e-9


class _R(RScripts):
    def __init__(self) -> None:
        super().__init__(R_FILES)

    def model(self, rdata, formula: str, reml: bool, at: hlmbridge.FitResult):
        where = self.variance_rows(at)
        return self.env["anova_reference_model"](rdata, formula, reml, where, self.ro.NULL)

    def emmeans(self, fit, query: dict) -> dict:
        ro = self.ro
        kw = {}
        for key in ("by", "weights", "df", "adjust", "counterfactuals", "type"):
            if query.get(key) is not None:
                kw[key] = query[key]
        if query.get("at"):
            kw["at"] = ro.ListVector({k: ro.FloatVector(np.atleast_1d(v)) for k, v in query["at"].items()})
        method = query.get("method")
        if isinstance(method, dict):
            kw["method"] = ro.ListVector({k: ro.FloatVector(v) for k, v in method.items()})
        elif method is not None:
            kw["method"] = method
        if query.get("level") is not None:
            kw["level"] = query["level"]
        return self.arrays(self.env["emmeans_reference"](fit, ro.StrVector(query["specs"]), **kw))


@pytest.fixture(scope="module")
def rref() -> _R:
    try:
        return _R()
    except Exception as exc:  # a package missing: say what to install
        pytest.fail(f"R reference unavailable ({exc}); install r-cran-emmeans r-cran-lmertest r-cran-pbkrtest")


# (id, package, data set, formula, REML, needs data=, queries)
# A query: specs (grid variables), by, at, weights, df (None: emmeans' default), method, adjust.
MODELS = [
    ("cake", "lme4", "cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", True, False, [
        dict(specs=["recipe"], by="temperature", method="pairwise"),
        dict(specs=["temperature"], method="trt.vs.ctrl"),
        dict(specs=["recipe", "temperature"], method="revpairwise", adjust="holm", df="satterthwaite"),
    ]),
    ("cake_temp", "lme4", "cake", "angle ~ recipe * temp + (1 | recipe:replicate)", True, False, [
        dict(specs=["recipe"], method="pairwise", adjust="bonferroni"),
        dict(specs=["recipe"], by="temp", at={"temp": [175.0, 225.0]}, method="revpairwise", adjust="sidak"),
    ]),
    ("orthodont_ml", "nlme", "Orthodont", "distance ~ age * Sex + (age | Subject)", False, False, [
        dict(specs=["Sex"], by="age", at={"age": [8.0, 14.0]}, method="pairwise", df="satterthwaite"),
        dict(specs=["Sex"], method={"F minus M": [-1.0, 1.0], "twice M": [2.0, 0.0]}, df="satterthwaite",
             level=0.9),
    ]),
    ("orthodont_poly", "nlme", "Orthodont", "distance ~ poly(age, 2) * Sex + (1 | Subject)", True, True, [
        dict(specs=["Sex"], method="pairwise"),
        dict(specs=["age", "Sex"], at={"age": [9.0, 11.0, 13.0]}, method="pairwise", adjust="tukey"),
    ]),
    ("oats", "nlme", "Oats", "yield ~ Variety * factor(nitro) + (1 | Block/Variety)", True, False, [
        dict(specs=["nitro"], method="trt.vs.ctrl"),
        dict(specs=["nitro"], by="Variety", method="pairwise", adjust="none"),
        dict(specs=["Variety"], method="pairwise", weights="proportional", df="satterthwaite"),
    ]),
    ("bodyweight", "nlme", "BodyWeight", "weight ~ Time * Diet + (Time | Rat)", True, False, [
        dict(specs=["Diet"], method="pairwise"),
        dict(specs=["Diet"], by="Time", at={"Time": [1.0, 64.0]}, method="trt.vs.ctrl", adjust="bonferroni"),
        dict(specs=["Diet"], method={"2 vs 3": [0.0, 1.0, -1.0], "1 vs rest": [1.0, -0.5, -0.5]}, adjust="holm"),
    ]),
    # 4,059 rows: emmeans' df are asymptotic (z) by default; unbalanced, so the weights matter
    ("exam", "mlmRev", "Exam", "normexam ~ standLRT * sex + schgend + (1 | school)", True, False, [
        dict(specs=["sex"], method="pairwise"),
        dict(specs=["schgend"], weights="proportional", method="pairwise"),
        dict(specs=["schgend"], weights="outer", method="pairwise", adjust="holm"),
        dict(specs=["sex"], by="schgend", method="pairwise", df="satterthwaite"),
    ]),
]
ENGINES = ("lme4", "statsmodels")
CASES = [(m[0], e) for m in MODELS for e in ENGINES]
_BY_ID = {m[0]: m for m in MODELS}


@pytest.fixture(scope="module")
def fits(rref: _R) -> dict:
    return {}


def _fit(fits: dict, rref: _R, mid: str, engine: str):
    if (mid, engine) not in fits:
        _, pkg, name, formula, reml, _, _ = _BY_ID[mid]
        rd, df = rref.data(pkg, name)
        res = hlmbridge.fit(formula, df, engine=engine, reml=reml)
        fits[(mid, engine)] = (res, df, rref.model(rd, formula, reml, res))
    return fits[(mid, engine)]


def _close(actual, expected, what: str, rtol: float = RTOL, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol,
                               err_msg=what)


def _compare(got: pd.DataFrame, want: np.ndarray, first: str, what: str, dunnettx: bool = False) -> None:
    # estimate, SE, df, lower, upper, t or z, p
    _close(got[[first, "std_error", "statistic"]].to_numpy(), want[:, [0, 1, 5]], f"{what}: estimate, SE, t",
           RTOL, 1e-10)
    _close(got["df"], want[:, 2], f"{what}: df")
    if dunnettx:
        # emmeans solves the Dunnett-x quantile by uniroot(tol = 5e-4): compare the quantiles
        # (CI half-width over SE) to that tolerance; hlmbridge's is the exact root
        q = (got["conf_high"].to_numpy() - got[first].to_numpy()) / got["std_error"].to_numpy()
        _close(q, (want[:, 4] - want[:, 0]) / want[:, 1], f"{what}: Dunnett-x quantile", 0.0, 5e-4)
    else:
        _close(got[["conf_low", "conf_high"]].to_numpy(), want[:, [3, 4]], f"{what}: CI", RTOL, 1e-10)
    _close(got["p_value"], want[:, 6], f"{what}: p", RTOL, P_ATOL)


@pytest.mark.requires_r
@pytest.mark.parametrize("mid,engine", CASES)
def test_emmeans_and_contrasts_match_emmeans(rref, fits, mid: str, engine: str) -> None:
    res, df, rfit = _fit(fits, rref, mid, engine)
    needs_data = _BY_ID[mid][5]
    for q in _BY_ID[mid][6]:
        what = f"{mid}/{engine}: {q}"
        ref = rref.emmeans(rfit, q)
        method = q.get("method")
        em = emmeans(res, list(q["specs"]), by=q.get("by"), data=df if needs_data else None, at=q.get("at"),
                     weights=q.get("weights", "equal"), df_method=q.get("df"), level=q.get("level", 0.95))
        labels = [" ".join(em.emmeans[n].map(lambda v: str(v) if not isinstance(v, (bool, np.bool_)) else
                                             ("TRUE" if v else "FALSE")).astype(str).iloc[i]
                           for n in list(q["specs"]) + ([q["by"]] if q.get("by") else []))
                  for i in range(len(em.emmeans))]
        assert len(labels) == len(ref["emm_labels"]), what
        _compare(em.emmeans, ref["emm"], "emmean", f"{what}: means")
        if method is None:
            continue
        con = em.contrast(method, q.get("adjust"))
        assert con["contrast"].tolist() == [str(s) for s in ref["con_labels"]], what
        adjust = set(con["adjust"])
        mesg = " ".join(str(s) for s in ref["con_adjust"])
        assert len(adjust) == 1, what
        adj = adjust.pop()
        if adj == "none":
            assert "P value adjustment" not in mesg, (what, mesg)
        else:
            assert f"P value adjustment: {adj} method" in mesg, (what, mesg)
        _compare(con, ref["con"], "estimate", f"{what}: contrasts", dunnettx=adj == "dunnettx")


@pytest.mark.requires_r
def test_default_df_follows_emmeans_limits(rref, fits) -> None:
    """Kenward-Roger below 3,000 observations, asymptotic (z) above, unless the fit has a df method."""
    small, _, _ = _fit(fits, rref, "cake", "lme4")
    big, _, _ = _fit(fits, rref, "exam", "lme4")
    assert emmeans(small, "~ recipe").df_method == "kenward-roger"
    em = emmeans(big, "~ sex")
    assert em.df_method == "asymptotic" and np.isinf(em.emmeans["df"]).all()
    assert any("3000" in n for n in em.notes)
    assert emmeans(big.with_df("satterthwaite"), "~ sex").df_method == "satterthwaite"


# ---- GLMMs: emmeans' grid at hlmbridge's estimates (qdrg), link and response scales ----------
def _hospital() -> pd.DataFrame:
    h = pd.read_csv(REPO / "fixtures" / "glmm" / "hospital.dat", sep=r"\s+", header=None,
                    names=["hosp", "loginc", "distance", "dropout", "college", "mother"])
    return h.assign(coll=np.where(h["college"] == 1, "yes", "no"), drop=np.where(h["dropout"] == 1, "yes", "no"))


GLMMS = [
    ("hospital", "binomial", "hosp ~ loginc * coll + drop + distance + (1 | mother)", "logit", [
        dict(specs=["coll"], method="pairwise"),
        dict(specs=["coll"], by="drop", method="pairwise", type="response"),
        dict(specs=["coll", "drop"], method="revpairwise", type="response", adjust="holm"),
        dict(specs=["coll"], by="drop", method={"yes vs no": [-1.0, 1.0], "yes": [0.0, 1.0]}, type="response"),
    ]),
    ("grouseticks", "poisson", "TICKS ~ YEAR * cHEIGHT + (1 | BROOD)", "log", [
        dict(specs=["YEAR"], method="pairwise", type="response"),
        dict(specs=["YEAR"], method="trt.vs.ctrl", weights="proportional"),
    ]),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("mid", [g[0] for g in GLMMS])
def test_glmm_emmeans_match_emmeans(rref, mid: str) -> None:
    _, fam, formula, link, queries = next(g for g in GLMMS if g[0] == mid)
    df = _hospital() if mid == "hospital" else rref.data("lme4", "grouseticks")[1]
    res = hlmbridge.fit(formula, df, family=fam)
    fixed = formula.split("~", 1)[1].rsplit("+ (", 1)[0]
    ro = rref.ro
    V = np.asarray(res.fixed_vcov, dtype=float)
    rg = rref.env["emmeans_reference_qdrg"](
        "~ " + fixed, rref.conv(df, True), ro.FloatVector([r[2] for r in res.fixed_rows]),
        ro.r["matrix"](ro.FloatVector(V.ravel(order="F")), nrow=V.shape[0]), link)
    for q in queries:
        what = f"{mid}: {q}"
        ref = rref.emmeans(rg, q)
        em = emmeans(res, list(q["specs"]), by=q.get("by"), at=q.get("at"), weights=q.get("weights", "equal"),
                     type=q.get("type", "link"))
        assert em.df_method == "asymptotic"
        _compare(em.emmeans, ref["emm"], "emmean", f"{what}: means")
        con = em.contrast(q["method"], q.get("adjust"))
        assert con["contrast"].tolist() == [str(s) for s in ref["con_labels"]], what
        _compare(con, ref["con"], "estimate", f"{what}: contrasts", dunnettx=set(con["adjust"]) == {"dunnettx"})


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_stata_command_emmeans_match_emmeans(rref, engine: str) -> None:
    """A Stata command's factor variables (i.sector##c.ses i.himinty) are the grid's factors."""
    hsb = hlmbridge.datasets.hsb()
    res = hlmbridge.fit("mixed mathach i.sector##c.ses i.himinty || id:", hsb, engine=engine)
    formula = "mathach ~ factor(sector) * ses + factor(himinty) + (1 | id)"
    rfit = rref.model(rref.conv(hsb[["mathach", "sector", "ses", "himinty", "id"]], True), formula, False, res)
    for q in (dict(specs=["sector"], by="himinty", method="pairwise"),
              dict(specs=["sector"], weights="proportional", method="revpairwise"),
              dict(specs=["himinty"], at={"ses": [-1.0, 1.0]}, by="ses", method="pairwise")):
        what = f"{engine}: {q}"
        ref = rref.emmeans(rfit, q)  # 7,185 rows: emmeans' df are asymptotic
        em = emmeans(res, list(q["specs"]), by=q.get("by"), at=q.get("at"), weights=q.get("weights", "equal"))
        assert em.df_method == "asymptotic"
        _compare(em.emmeans, ref["emm"], "emmean", f"{what}: means")
        con = em.contrast(q["method"])
        assert con["contrast"].tolist() == [str(s) for s in ref["con_labels"]], what
        _compare(con, ref["con"], "estimate", f"{what}: contrasts")
