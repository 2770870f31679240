"""``FitResult.simulate`` (lme4's ``simulate``) checked in distribution against lme4 in R
(issue 27, item 4).

R's draws come from ``r/tests/predict_reference.R``: ``simulate(fit, nsim, seed, re.form = ...)``
on an lmer fit evaluated (``optimizer = NULL``) at the variance components each hlmbridge engine
estimated, so both sides simulate the same model. hlmbridge draws with numpy, so the numbers
differ; their distribution must not. With ``NSIM`` draws on each side, every row's mean and
variance, and the variance of each group's total (which carries the random effects' covariance
between rows of a group), must agree within Monte Carlo error: each difference over its
standard error is below ``Z_MAX`` (at most a few hundred such statistics per model, so a correct
implementation fails with probability below about 1e-4; the seeds are fixed, so the test is
deterministic). Per-row checks alone are weak (a residual variance 15% too large passes them
at this NSIM), so pooled statistics of each draw are compared too: the overall mean, and per
grouping factor the covariance across groups of each group's least-squares random-effect
coefficients and the residual sum of squares within groups (measured: the 15% error gives z = 38,
a zero intercept-slope covariance z = 7; the correct draws z < 2.1). Unconditional draws (new random effects), conditional draws (``use_u``), and
draws holding one grouping factor of a nested model (``re_form="~ (1 | batch)"``).

A fit with precision weights (``weights=``) is checked against the moments lme4's fit implies
(``model_moments``: mean X beta or the fitted values, variance sigma^2 (diag(Z Lambda Lambda' Z')
+ 1/w) or sigma^2/w, from lme4's own matrices), not against lme4's ``simulate``: lme4 1.1.31
draws ``sigma * rnorm()`` for a linear mixed model whatever the weights (measured here: its row
variances differ from hlmbridge's by up to 24 Monte Carlo SEs on the rows with w != 1, and agree
on those with w = 1), so its draws are not from the model it fitted. The check does see the
weights: draws that ignore them are 30 Monte Carlo SEs off these moments (measured).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from tests.test_predict_r import _R

pytestmark = pytest.mark.requires_r

NSIM = 2000
Z_MAX = 5.0

# (id, package, data set, formula, REML, engines, re_forms as lme4 writes them, grouping columns)
MODELS = [
    ("sleep", "lme4", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True, ("lme4", "statsmodels"),
     ("NA", "NULL"), ("Subject",)),
    ("pastes_nested", "lme4", "Pastes", "strength ~ 1 + (1 | batch/cask)", False, ("lme4", "statsmodels"),
     ("NA", "NULL", "~ (1 | batch)"), ("batch",)),
    ("penicillin_crossed", "lme4", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True, ("lme4",),
     ("NA", "~ (1 | sample)"), ("plate", "sample")),
]
CASES = [(m[0], e, rf) for m in MODELS for e in m[5] for rf in m[6]]


@pytest.fixture(scope="module")
def rref() -> _R:
    return _R()


@pytest.fixture(scope="module")
def fits(rref: _R) -> dict:
    out = {}
    for mid, pkg, name, formula, reml, engines, _, groups in MODELS:
        rdata, df = rref.data(pkg, name)
        for engine in engines:
            res = hlmbridge.fit(formula, df, engine=engine, reml=reml)
            out[(mid, engine)] = (res, rref.model(rdata, formula, reml, res), df, groups)
    return out


def _ours(re_form: str) -> dict:
    return {"NA": {}, "NULL": {"use_u": True}}.get(re_form, {"re_form": re_form})


def _z(a: np.ndarray, b: np.ndarray, n: int, what: str) -> None:
    ma, mb, va, vb = a.mean(axis=1), b.mean(axis=1), a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
    z_mean = np.abs(ma - mb) / np.sqrt((va + vb) / n)
    z_var = np.abs(va - vb) / np.sqrt(2 * (va ** 2 + vb ** 2) / (n - 1))
    assert z_mean.max() < Z_MAX, f"{what}: means differ by {z_mean.max():.2f} Monte Carlo SEs"
    assert z_var.max() < Z_MAX, f"{what}: variances differ by {z_var.max():.2f} Monte Carlo SEs"


def _pooled(Y: np.ndarray, design) -> np.ndarray:
    """Statistics of each draw (columns of Y): its mean, and per grouping factor the covariance
    across groups of each group's least-squares coefficients on the factor's Z columns and the
    residual sum of squares of those per-group fits."""
    out = [Y.mean(axis=0)]
    for ld in design.levels:
        coefs, rss = [], 0.0
        for g in range(ld.n_groups):
            rows = ld.codes == g
            b = np.linalg.pinv(ld.Z[rows]) @ Y[rows]
            coefs.append(b)
            rss = rss + ((Y[rows] - ld.Z[rows] @ b) ** 2).sum(axis=0)
        B = np.stack(coefs)
        B = B - B.mean(axis=0)
        q = B.shape[1]
        out += [(B[:, i] * B[:, j]).sum(axis=0) / (ld.n_groups - 1) for i in range(q) for j in range(i, q)]
        out.append(rss)
    return np.array(out)


@pytest.mark.parametrize("mid,engine,re_form", CASES)
def test_simulate_matches_lme4_in_distribution(rref: _R, fits, mid: str, engine: str, re_form: str) -> None:
    res, rfit, df, groups = fits[(mid, engine)]
    ours = res.simulate(NSIM, seed=27, **_ours(re_form)).to_numpy()
    theirs = np.array(rref.env["simulate_reference"](rfit, NSIM, 27, re_form), dtype=float)
    assert ours.shape == theirs.shape == (res.nobs, NSIM)
    what = f"{mid}/{engine}/re.form={re_form}"
    _z(ours, theirs, NSIM, f"{what}: rows")
    for g in groups:  # each group's total: the covariance between its rows
        codes = pd.Categorical(df[g].astype(str)).codes
        S = np.zeros((codes.max() + 1, res.nobs))
        S[codes, np.arange(res.nobs)] = 1.0
        _z(S @ ours, S @ theirs, NSIM, f"{what}: totals by {g}")
    a, b = _pooled(ours, res.design), _pooled(theirs, res.design)
    z = np.abs(a.mean(axis=1) - b.mean(axis=1)) / np.sqrt((a.var(axis=1, ddof=1) + b.var(axis=1, ddof=1)) / NSIM)
    assert z.max() < Z_MAX, f"{what}: pooled statistics differ by {np.round(z, 2).tolist()} Monte Carlo SEs"


def test_conditional_and_unconditional_differ(fits) -> None:
    """The check above can tell the two apart: conditional draws centre on the fitted values
    (with the random effects), unconditional ones on the population-level fit."""
    res, _, _, _ = fits[("sleep", "lme4")]
    cond = res.simulate(NSIM, seed=3, use_u=True).to_numpy().mean(axis=1)
    unc = res.simulate(NSIM, seed=3).to_numpy().mean(axis=1)
    sigma = float(np.sqrt(res.random["estimate"].iloc[-1]))
    assert np.max(np.abs(cond - res.fitted().to_numpy())) < Z_MAX * sigma / np.sqrt(NSIM)
    assert np.max(np.abs(cond - unc)) > 20 * sigma / np.sqrt(NSIM)


def test_simulate_structure(fits) -> None:
    res, _, _, _ = fits[("sleep", "statsmodels")]
    sims = res.simulate(4, seed=5)
    assert list(sims.columns) == ["sim_1", "sim_2", "sim_3", "sim_4"]
    assert sims.index.equals(res.fitted().index) and sims.shape == (res.nobs, 4)
    pd.testing.assert_frame_equal(sims, res.simulate(4, seed=5))
    assert not np.allclose(sims.to_numpy(), res.simulate(4, seed=6).to_numpy())
    # simulation i is the bootstrap's replicate i (the same seed sequence)
    from hlmbridge.inference.bootstrap import simulate

    child = np.random.SeedSequence(5).spawn(4)[2]
    np.testing.assert_array_equal(sims["sim_3"].to_numpy(), simulate(res, np.random.default_rng(child)))
    assert res.simulate(seed=1).shape == (res.nobs, 1)


def test_simulate_errors(fits) -> None:
    res, _, _, _ = fits[("sleep", "lme4")]
    with pytest.raises(UsageError, match="nsim"):
        res.simulate(0)
    with pytest.raises(UsageError, match="seed"):
        res.simulate(2, seed=-1)
    with pytest.raises(UsageError, match="not both"):
        res.simulate(2, use_u=True, re_form=None)
    with pytest.raises(UsageError, match="some but not all"):
        res.simulate(2, re_form="~ (1 | Subject)")
    with pytest.raises(UsageError, match="grouping factor 'Foo'"):
        res.simulate(2, re_form="~ (1 | Foo)")


@pytest.mark.parametrize("engine", ["lme4", "statsmodels"])
@pytest.mark.parametrize("use_u", [False, True])
def test_weighted_simulation_has_lme4s_model_moments(rref: _R, engine: str, use_u: bool) -> None:
    rdata, df = rref.data("lme4", "sleepstudy")
    df = df.assign(w=np.tile([0.5, 1.0, 2.0, 4.0], 45))
    formula = "Reaction ~ Days + (Days | Subject)"
    res = hlmbridge.fit(formula, df, engine=engine, weights="w")
    rfit = rref.model(rref.conv(df, True), formula, True, res, "w")
    out = rref.env["model_moments"](rfit, use_u)
    mom = {k: np.array(v, dtype=float) for k, v in zip(out.names, out)}
    sims = res.simulate(NSIM, seed=11, use_u=use_u).to_numpy()
    z_mean = np.abs(sims.mean(axis=1) - mom["mean"]) / np.sqrt(mom["var"] / NSIM)
    z_var = np.abs(sims.var(axis=1, ddof=1) - mom["var"]) / (mom["var"] * np.sqrt(2 / (NSIM - 1)))
    assert z_mean.max() < Z_MAX and z_var.max() < Z_MAX, (z_mean.max(), z_var.max())
