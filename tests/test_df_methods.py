"""Satterthwaite and Kenward-Roger df computed by hlmbridge, checked against lmerTest and pbkrtest.

R's numbers come from ``r/tests/df_reference.R`` (sourced into a private rpy2 environment):
lmerTest and pbkrtest on an lmer fit evaluated (``optimizer = NULL``) at the variance
components hlmbridge's lme4 engine estimated, so both sides work at the same point. hlmbridge's
numbers come from its own design and the lme4 engine's estimates
(:mod:`hlmbridge.inference.df_methods`); nothing is copied from R into hlmbridge.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import SpecError, UsageError

#: R evaluates lmerTest and pbkrtest at hlmbridge's estimates, the engine's polished optimum.
#: (At lmer's own bobyqa optimum, 1e-12, the deviance gradient is still up to ~1e-4 in theta on
#: HSB's slope models; lmerTest's numerical Hessian in (theta, sigma) and hlmbridge's exact
#: information in the variance metric then differ by that gradient times the curvature of the
#: reparametrization: 1e-6 to 5e-6 relative in the Satterthwaite df. At a stationary point
#: both metrics give the same df; lmerTest's own numerical error there, measured by changing
#: numDeriv's step from 0.1 to 0.08 and 0.125, is ~1e-8.)

REPO = Path(__file__).resolve().parents[1]
R_FILE = REPO / "r" / "tests" / "df_reference.R"
RTOL = 1e-6


# ---- R side ---------------------------------------------------------------------------------
class _R:
    """``df_reference.R`` in a private environment; R data frames <-> pandas."""

    def __init__(self) -> None:
        import rpy2.robjects as ro

        self.ro = ro
        self.env = ro.Environment()
        ro.r["sys.source"](str(R_FILE), envir=self.env)

    def to_r(self, df: pd.DataFrame):  # -> R data.frame
        from rpy2.robjects import pandas2ri
        from rpy2.robjects.conversion import localconverter

        with localconverter(self.ro.default_converter + pandas2ri.converter):
            return self.ro.conversion.get_conversion().py2rpy(df)

    def lme4_data(self, name: str) -> pd.DataFrame:
        from rpy2.robjects import pandas2ri
        from rpy2.robjects.conversion import localconverter

        rdf = self.env["df_reference_data"](name)
        with localconverter(self.ro.default_converter + pandas2ri.converter):
            return self.ro.conversion.get_conversion().rpy2py(rdf)

    def fit(self, data: pd.DataFrame, formula: str, reml: bool, Ls: list[np.ndarray],
            at: hlmbridge.FitResult | None = None) -> dict:
        """lmerTest/pbkrtest on lmer's fit of ``formula``, evaluated at ``at``'s variance
        components (lmer's own optimum when None)."""
        ro = self.ro
        rLs = ro.ListVector.from_length(len(Ls))
        for i, L in enumerate(Ls):
            rLs[i] = ro.r["matrix"](ro.FloatVector(np.asarray(L, float).ravel(order="F")), nrow=L.shape[0])
        where = ro.NULL
        if at is not None:
            rows = at.random.rename(columns={"group": "stata_group", "lme4_group": "group"})
            where = self.to_r(rows[["group", "kind", "term1", "term2", "estimate"]].fillna({"term2": ""}))
        out = self.env["df_reference_fit"](self.to_r(data), formula, reml, rLs, where)
        res = {}
        for name, val in zip(out.names, out):
            if val is ro.NULL:
                continue
            arr = np.array(val)
            dim = ro.r["dim"](val)
            if dim is not ro.NULL and len(dim) == 2:
                arr = np.array(val).reshape(tuple(dim), order="F") if arr.ndim == 1 else arr
            res[name] = arr
        return res


@pytest.fixture(scope="module")
def rref() -> _R:
    try:
        return _R()
    except Exception as exc:  # lmerTest/pbkrtest missing: say what to install
        pytest.fail(f"R reference unavailable ({exc}); install r-cran-lmertest r-cran-pbkrtest (scripts/install.sh)")


# ---- the models -----------------------------------------------------------------------------
def _unbalanced() -> pd.DataFrame:
    """A small unbalanced design with few groups, where the df methods differ visibly."""
    rng = np.random.default_rng(6)  # a seed whose REML fit is not at the boundary
    sizes = [3, 4, 6, 9, 5, 4, 7]
    g = np.repeat(np.arange(len(sizes)), sizes)
    n = g.size
    x = rng.normal(size=n)
    trt = (g % 2).astype(float)  # a group-level covariate
    z = rng.normal(size=n) + 0.5 * g
    u0 = rng.normal(scale=1.5, size=len(sizes))
    u1 = rng.normal(scale=1.0, size=len(sizes))
    y = 1.0 + 0.5 * x + 0.8 * trt - 0.3 * z + u0[g] + u1[g] * x + rng.normal(scale=0.7, size=n)
    return pd.DataFrame({"y": y, "x": x, "trt": trt, "z": z, "g": [f"G{k}" for k in g]})


# (name, data loader, formula, type-III anova comparable)
MODELS = [
    ("hsb_m1", "hsb", "mathach ~ ses + (1 | id)"),
    ("hsb_m2", "hsb", "mathach ~ ses + (ses | id)"),
    ("hsb_m4", "hsb", "mathach ~ ses + sector + meanses + ses:sector + (ses | id)"),
    ("sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("penicillin", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("unbalanced", "unbalanced", "y ~ x + trt + z + (x | g)"),
]


@pytest.fixture(scope="module")
def datasets(rref: _R, hsb_combined: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "hsb": hsb_combined[["mathach", "ses", "sector", "meanses", "id"]].astype({"id": "int64"}),
        "sleepstudy": rref.lme4_data("sleepstudy"),
        "Penicillin": rref.lme4_data("Penicillin"),
        "unbalanced": _unbalanced(),
    }


def _contrasts(p: int) -> list[np.ndarray]:
    """Contrast matrices to test: every coefficient but the intercept jointly, and a mixed one."""
    Ls = []
    if p >= 2:
        Ls.append(np.eye(p)[1:])
    if p >= 3:
        L = np.zeros((2, p))
        L[0, 1], L[0, 2] = 1.0, -1.0
        L[1, 0], L[1, p - 1] = 1.0, 0.5
        Ls.append(L)
    if p == 1:
        Ls.append(np.ones((1, 1)))
    return Ls


def _close(actual, expected, what: str, rtol: float = RTOL, atol: float = 0.0) -> None:
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# A p-value's relative error is its t's times about t^2 (1e-113 for HSB's ses): p-values are
# compared to 1e-6 relative or 1e-12 absolute.
P_ATOL = 1e-12


@pytest.fixture(scope="module")
def fits(rref: _R, datasets: dict[str, pd.DataFrame]) -> dict[str, tuple]:
    """hlmbridge (lme4 engine, REML) and R's reference, per model."""
    out = {}
    for name, data, formula in MODELS:
        df = datasets[data]
        res = hlmbridge.fit(formula, df, engine="lme4")
        p = len(res.fixed_rows)
        Ls = _contrasts(p)
        out[name] = (res, rref.fit(df, formula, True, Ls, at=res), Ls)
    return out




# ---- tests ------------------------------------------------------------------------------------
@pytest.mark.requires_r
@pytest.mark.parametrize("name", [m[0] for m in MODELS])
def test_satterthwaite_matches_lmertest(fits, name: str) -> None:
    res, ref, Ls = fits[name]
    assert not ref["singular"][0], "the test models must not be boundary fits"
    _close([r[2] for r in res.fixed_rows], ref["beta"], f"{name}: beta (same optimum)", 1e-7)
    sat = res.with_df("satterthwaite")
    tab = sat.fixed
    rtol = RTOL
    _close(tab["df"], ref["satt_df"], f"{name}: Satterthwaite df", rtol)
    _close(tab["statistic"], ref["satt_t"], f"{name}: t")
    _close(tab["p_value"], ref["satt_p"], f"{name}: p", atol=P_ATOL)
    for L, row in zip(Ls, np.atleast_2d(ref["satt_L"])):
        got = sat.test(L).iloc[0]
        _close([got.f_value, got.num_df, got.den_df], row[:3], f"{name}: contest F, ndf, ddf", rtol)
        _close(got.p_value, row[3], f"{name}: contest p", rtol, P_ATOL)


@pytest.mark.requires_r
@pytest.mark.parametrize("name", [m[0] for m in MODELS])
def test_kenward_roger_matches_pbkrtest(fits, name: str) -> None:
    res, ref, Ls = fits[name]
    kr = res.with_df("kenward-roger")
    _close(np.array(kr.fixed_vcov_adjusted), ref["kr_vcov"], f"{name}: adjusted vcov")
    tab = kr.fixed
    _close(tab["df"], ref["kr_df"], f"{name}: KR df")
    _close(tab["statistic"], ref["kr_t"], f"{name}: KR t")
    _close(tab["p_value"], ref["kr_p"], f"{name}: KR p", atol=P_ATOL)
    for L, row in zip(Ls, np.atleast_2d(ref["kr_L"])):
        got = kr.test(L).iloc[0]
        _close([got.f_value, got.num_df, got.den_df, got.f_scaling], row[[0, 1, 2, 4]],
               f"{name}: KRmodcomp F, ndf, ddf, scaling")
        _close(got.p_value, row[3], f"{name}: KRmodcomp p", RTOL, P_ATOL)


@pytest.mark.requires_r
@pytest.mark.parametrize("name", ["hsb_m4", "unbalanced"])
def test_type3_anova_matches_lmertest(fits, name: str) -> None:
    res, ref, _ = fits[name]
    for method, key in (("satterthwaite", "satt_anova"), ("kenward-roger", "kr_anova")):
        got = res.anova(method)
        assert got["term"].tolist() == list(ref["satt_anova_terms"])
        tol = RTOL
        _close(got[["f_value", "num_df", "den_df"]].to_numpy(), ref[key][:, :3], f"{name}: type III {method}", tol)
        _close(got["p_value"], ref[key][:, 3], f"{name}: type III {method} p", tol, P_ATOL)


@pytest.mark.requires_r
def test_satterthwaite_ml_and_statsmodels(rref: _R, datasets) -> None:
    """ML fits (lmerTest allows them) and the statsmodels engine's estimates give the same df."""
    df = datasets["unbalanced"]
    formula = "y ~ x + trt + z + (x | g)"
    res = hlmbridge.fit(formula, df, engine="lme4", reml=False, df_method="satterthwaite")
    ref = rref.fit(df, formula, False, [], at=res)
    _close(res.fixed["df"], ref["satt_df"], "ML Satterthwaite df")
    sm = hlmbridge.fit(formula, datasets["unbalanced"], engine="statsmodels", df_method="satterthwaite")
    lm = hlmbridge.fit(formula, datasets["unbalanced"], engine="lme4", df_method="satterthwaite")
    _close(sm.fixed["df"], lm.fixed["df"], "statsmodels vs lme4 estimates", 1e-3)


# ---- API and errors (no R needed beyond the engine-free statsmodels fits) ---------------------
@pytest.fixture(scope="module")
def small() -> hlmbridge.FitResult:
    return hlmbridge.fit("y ~ x + trt + z + (1 | g)", _unbalanced(), engine="statsmodels")


def test_methods_differ_and_residual_df(small) -> None:
    res = small.with_df("residual")
    assert set(res.fixed["df"]) == {small.nobs - 4}
    sat, kr = small.with_df("satterthwaite"), small.with_df("KR")
    assert kr.df_method == "kenward-roger" and sat.df_method == "satterthwaite"
    # few groups: the group-level covariate trt has far fewer df than the residual ones
    j = sat.fixed["term"].tolist().index("trt")
    assert sat.fixed["df"][j] < 10 < res.fixed["df"][j]
    assert not np.allclose(sat.fixed["df"], kr.fixed["df"])
    # the adjusted KR SEs are larger; the z table is unchanged by with_df
    assert np.all(kr.fixed["std_error"] >= sat.fixed["std_error"])
    assert "df" not in small.fixed.columns


def test_with_df_is_not_serialized_design_and_roundtrip(small) -> None:
    sat = small.with_df("satterthwaite")
    back = hlmbridge.FitResult.from_dict(json.loads(json.dumps(sat.to_dict())))
    assert back == sat and back.fixed["df"].tolist() == sat.fixed["df"].tolist()
    assert back.design is None
    with pytest.raises(UsageError, match="design"):
        back.with_df("kenward-roger")


def test_bad_methods_are_clear_errors(small) -> None:
    with pytest.raises(UsageError, match="unknown df method"):
        small.with_df("containment")
    with pytest.raises(UsageError, match="REML"):
        hlmbridge.fit("y ~ x + (1 | g)", _unbalanced(), engine="statsmodels", reml=False, df_method="kenward-roger")
    with pytest.raises(UsageError, match="unknown df method"):
        hlmbridge.fit("y ~ x + (1 | g)", _unbalanced(), engine="statsmodels", df_method="bogus")
    ml = hlmbridge.fit("y ~ x + (1 | g)", _unbalanced(), engine="statsmodels", reml=False)
    with pytest.raises(UsageError, match="REML"):
        ml.with_df("kroger")
    with pytest.raises(UsageError, match="rank"):
        small.test([[0, 1, 0, 0], [0, 2, 0, 0]], df_method="satterthwaite")
    # A fit without a df method: anova() takes lmerTest's default, Satterthwaite (it was an error).
    pd.testing.assert_frame_equal(small.anova(), small.anova("Satterthwaite"))


def test_stata_dfmethod(hsb_combined) -> None:
    cmd = "mixed mathach ses || id:, reml dfmethod(kroger)"
    res = hlmbridge.fit(cmd, hsb_combined, engine="statsmodels")
    assert res.df_method == "kenward-roger" and "df" in res.fixed.columns
    text = res.summary()
    header = next(line for line in text.splitlines() if "P>|t|" in line)
    assert "df      t    P>|t|" in header and "DF method: Kenward-Roger" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("ses |"))
    assert f"{res.fixed['df'][0]:9.2f}" in row
    sat = hlmbridge.fit("mixed mathach ses || id:, reml dfm(sat)", hsb_combined, engine="statsmodels")
    assert sat.df_method == "satterthwaite (expected information)"
    with pytest.raises(SpecError, match="needs REML"):
        hlmbridge.fit("mixed mathach ses || id:, dfmethod(satterthwaite)", hsb_combined, engine="statsmodels")
    with pytest.raises(SpecError, match="unknown dfmethod"):
        hlmbridge.fit("mixed mathach ses || id:, reml dfmethod(bogus)", hsb_combined, engine="statsmodels")
    with pytest.raises(SpecError, match="not supported"):
        hlmbridge.fit("mixed mathach ses || id:, reml dfmethod(anova)", hsb_combined, engine="statsmodels")
    with pytest.raises(UsageError, match="says dfmethod"):
        hlmbridge.fit(cmd, hsb_combined, engine="statsmodels", df_method="satterthwaite")


# ---- boundary (singular) fits ---------------------------------------------------------------
# lmerTest differentiates the deviance in lme4's (theta, sigma), where a boundary fit (a variance
# at 0, a correlation at +/-1) is still a stationary point; in the variance metric it is not, and
# the df there were wrong: Dyestuff2 1.04 (REML) and 0.25 (ML) against lmerTest's 29 and 30,
# HSB model 5's ses 141 against 1,401. Kenward-Roger (pbkrtest) works in the variance metric
# with the expected information and gives 5 on Dyestuff2.
BOUNDARY = [
    # (id, data, hlmbridge spec, R formula, REML)
    ("dyestuff2-reml", "Dyestuff2", "Yield ~ 1 + (1 | Batch)", "Yield ~ 1 + (1 | Batch)", True),
    ("dyestuff2-ml", "Dyestuff2", "Yield ~ 1 + (1 | Batch)", "Yield ~ 1 + (1 | Batch)", False),
    ("hsb-model5-ml", "hsb", "mixed mathach c.ses##i.sector || id: ses, cov(unstr)",
     "mathach ~ ses + sector + ses:sector + (ses | id)", False),
]
# hlmbridge's names of the Stata command's coefficients -> lme4's for the R formula above
_R_NAMES = {"sector1": "sector", "ses:sector1": "ses:sector"}


@pytest.mark.requires_r
@pytest.mark.parametrize("case", BOUNDARY, ids=[c[0] for c in BOUNDARY])
def test_satterthwaite_at_boundary_fits_matches_lmertest(rref: _R, datasets, case) -> None:
    _, data, spec, formula, reml = case
    df = rref.lme4_data(data) if data != "hsb" else datasets["hsb"]
    res = hlmbridge.fit(spec, df, engine="lme4", reml=reml) if data != "hsb" else hlmbridge.fit(spec, df, engine="lme4")
    assert res.spec.reml == reml and res.singular
    p = len(res.fixed_rows)
    Ls = [np.eye(p)[:2]] if p >= 2 else []
    ref = rref.fit(df, formula, reml, [], at=res)
    assert ref["singular"][0], f"{case[0]}: R must see the same boundary fit"
    order = [list(ref["names"]).index(_R_NAMES.get(t, t)) for t in res.fixed["term"]]
    _close([r[2] for r in res.fixed_rows], ref["beta"][order], f"{case[0]}: beta (same optimum)", 1e-7)
    sat = res.with_df("satterthwaite")
    _close(sat.fixed["df"], ref["satt_df"][order], f"{case[0]}: Satterthwaite df")
    _close(sat.fixed["p_value"], ref["satt_p"][order], f"{case[0]}: Satterthwaite p", atol=P_ATOL)
    for L in Ls:  # an F test on two coefficients (lmerTest's contestMD)
        R = np.zeros_like(L)
        R[:, order] = L
        want = rref.fit(df, formula, reml, [R], at=res)["satt_L"]
        got = sat.test(L).iloc[0]
        _close([got.f_value, got.num_df, got.den_df], np.atleast_2d(want)[0, :3], f"{case[0]}: contest F")
    if reml:  # Kenward-Roger was right at the boundary already: keep it so
        _close(res.with_df("kenward-roger").fixed["df"], ref["kr_df"][order], f"{case[0]}: KR df")
    # The statsmodels engine stops a hair inside the boundary (var ~1e-9, |corr| 1 - 1e-9): the
    # df are continuous there in lme4's metric, within 1e-4 of the boundary's.
    sm = hlmbridge.fit(spec, df, engine="statsmodels", reml=reml) if data != "hsb" else \
        hlmbridge.fit(spec, df, engine="statsmodels")
    _close(sm.with_df("satterthwaite").fixed["df"], ref["satt_df"][order], f"{case[0]}: statsmodels df", 1e-4)


def test_satterthwaite_notes_at_a_boundary_fit() -> None:
    """A boundary fit's Satterthwaite table says what its df are (lmerTest's at the boundary),
    and the note does not stay when the table moves to another df method."""
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(6), 5)
    e = rng.normal(size=30)
    e -= pd.Series(e).groupby(g).transform("mean").to_numpy()  # equal group means: sd(g) at 0
    df = pd.DataFrame({"y": 5.0 + e, "g": g})
    res = hlmbridge.fit("y ~ 1 + (1 | g)", df, engine="statsmodels")
    assert res.singular
    sat = res.with_df("satterthwaite")
    note = [w for w in sat.warnings if w.startswith("Satterthwaite df at a boundary")]
    assert len(note) == 1 and "Warning: " + note[0] in sat.summary()
    assert sat.fixed["df"][0] == pytest.approx(29, rel=1e-6)  # n - p: the residual variance alone
    kr = sat.with_df("kenward-roger")
    assert not [w for w in kr.warnings if w.startswith("Satterthwaite df")]
    assert kr.fixed["df"][0] < 10


@pytest.mark.parametrize("command", [
    "mixed mathach ses sector || id: ses sector, cov(unstructured) reml",
    "mixed mathach ses sector || id: ses sector, cov(independent) reml",
    "mixed mathach ses sector || id: ses sector, cov(identity) reml",
    "mixed mathach ses sector || id: ses sector, cov(exchangeable) reml",
])
def test_lme4_parametrization_derivatives(hsb_combined, command: str) -> None:
    """The map from lme4's (theta, sigma) to the variance parameters: its Jacobian and second
    derivatives against central differences of the map, which is evaluated by inverting the
    function's own phi(theta) (Cholesky factors) by Newton steps."""
    from hlmbridge.design.build import build_design
    from hlmbridge.inference.df_methods import lme4_parametrization
    from hlmbridge.inference.stata_parity import variance_parameters
    from hlmbridge.spec.model import ModelSpec

    design = build_design(ModelSpec.from_stata(command), hsb_combined)
    q = design.levels[0].Z.shape[1]
    A = np.random.default_rng(5).normal(size=(q, q))
    G = A @ A.T + q * np.eye(q)
    theta = np.array([float(np.sum(G * p.pattern) / np.sum(p.pattern * p.pattern)) if p.level is not None else 2.5
                      for p in variance_parameters(design)])
    phi, J, H2 = lme4_parametrization(design, theta)
    K = len(phi)

    def theta_at(target: np.ndarray) -> np.ndarray:
        t = theta.copy()
        for _ in range(30):
            now, Jt, _ = lme4_parametrization(design, t)
            if np.max(np.abs(now - target)) < 1e-14:
                break
            t = t + Jt @ (target - now)
        return t

    h = 1e-4
    e = np.eye(K) * h
    for a in range(K):
        jac = (theta_at(phi + e[a]) - theta_at(phi - e[a])) / (2 * h)
        np.testing.assert_allclose(jac, J[:, a], rtol=1e-6, atol=1e-7, err_msg=f"{command}: J[:, {a}]")
        for b in range(a, K):
            second = (theta_at(phi + e[a] + e[b]) - theta_at(phi + e[a] - e[b]) - theta_at(phi - e[a] + e[b])
                      + theta_at(phi - e[a] - e[b])) / (4 * h * h)
            np.testing.assert_allclose(second, H2[:, a, b], rtol=1e-5, atol=1e-5, err_msg=f"{command}: H2[:, {a}, {b}]")
