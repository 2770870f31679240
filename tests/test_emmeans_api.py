"""emmeans() and margins() without R: bad input is an error naming it, the delegates, the
notes emmeans prints, and the marginsplot smoke test. The numbers are checked against R in
tests/test_emmeans_r.py and tests/test_margins_r.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.results.emmeans import adjust_family, emmeans, reference_grid
from hlmbridge.results.margins import margins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sleep():
    df = hlmbridge.datasets.sleepstudy()
    df["phase"] = pd.cut(df["Days"], [-1, 2, 5, 9], labels=["early", "mid", "late"])
    df["shift"] = np.where(df.index % 2 == 0, "day", "night")
    res = hlmbridge.fit("Reaction ~ Days * phase + shift + (1 | Subject)", df, engine="statsmodels")
    return df, res


def test_reference_grid_is_emmeans_grid(sleep):
    df, res = sleep
    g = reference_grid(res)
    assert list(g.frame.columns) == ["Days", "phase", "shift"]
    assert g.levels["phase"] == ["early", "mid", "late"] and g.levels["shift"] == ["day", "night"]
    assert g.levels["Days"] == [pytest.approx(df["Days"].mean())]
    # expand.grid order: the first factor varies fastest
    assert g.frame["phase"].tolist()[:4] == ["early", "mid", "late", "early"]
    assert g.counts.sum() == len(df)
    g2 = reference_grid(res, at={"Days": [0, 9], "phase": ["late"]})
    assert g2.levels["Days"] == [0.0, 9.0] and g2.levels["phase"] == ["late"] and len(g2.frame) == 4


def test_delegates_and_exports(sleep):
    _, res = sleep
    a = res.emmeans("pairwise ~ phase | shift", df_method="satterthwaite")
    b = hlmbridge.emmeans(res, "~ phase", by="shift", df_method="satterthwaite")
    pd.testing.assert_frame_equal(a.emmeans, b.emmeans)
    pd.testing.assert_frame_equal(a.contrasts, b.contrast("pairwise"))
    assert a.contrasts["shift"].tolist() == ["day"] * 3 + ["night"] * 3
    m1, m2 = res.margins("phase"), hlmbridge.margins(res, "phase")
    pd.testing.assert_frame_equal(m1.table, m2.table)


def test_bad_input_is_named(sleep):
    df, res = sleep
    with pytest.raises(UsageError, match="'Dayz' is not a variable of the reference grid"):
        emmeans(res, "~ Dayz")
    with pytest.raises(UsageError, match="at= names 'nope'"):
        emmeans(res, "~ phase", at={"nope": 1})
    with pytest.raises(UsageError, match="not among the factor's levels"):
        emmeans(res, "~ phase", at={"phase": ["never"]})
    with pytest.raises(UsageError, match="weights must be"):
        emmeans(res, "~ phase", weights="cells")
    with pytest.raises(UsageError, match="'mvt' needs mvtnorm"):
        emmeans(res, "~ phase", df_method="satterthwaite").contrast("pairwise", adjust="mvt")
    with pytest.raises(UsageError, match="unknown contrast method 'consec'"):
        emmeans(res, "~ phase", df_method="satterthwaite").contrast("consec")
    with pytest.raises(UsageError, match="needs 3 finite weights"):
        emmeans(res, "~ phase", df_method="satterthwaite").contrast({"c": [1, -1]})
    with pytest.raises(UsageError, match="by variables are given twice"):
        emmeans(res, "~ phase | shift", by="shift")
    with pytest.raises(UsageError, match="unknown df method"):
        emmeans(res, "~ phase", df_method="containment")
    with pytest.raises(UsageError, match="data must be the data frame"):
        emmeans(res, "~ phase", data=df.iloc[:10])
    with pytest.raises(UsageError, match="design"):
        emmeans(hlmbridge.FitResult.from_dict(res.to_dict()), "~ phase")
    with pytest.raises(UsageError, match="is a covariate, not a factor"):
        margins(res, "Days")
    with pytest.raises(UsageError, match="either variables"):
        margins(res, "phase", dydx="Days")
    with pytest.raises(UsageError, match="both in at"):
        margins(res, "phase", at={"phase": "mid"})


def test_ml_fit_needs_a_df_method_where_emmeans_would_use_kenward_roger(sleep):
    df, _ = sleep
    ml = hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", df, engine="statsmodels", reml=False)
    with pytest.raises(UsageError, match="hlmbridge defines Kenward-Roger for REML fits only"):
        emmeans(ml, "~ phase")
    assert emmeans(ml, "~ phase", df_method="asymptotic").df_method == "asymptotic"


def test_tukey_outside_pairwise_becomes_sidak_as_in_emmeans(sleep):
    _, res = sleep
    em = emmeans(res, "~ phase", df_method="satterthwaite")
    con = em.contrast({"a": [1, -1, 0], "b": [1, 0, -1]}, adjust="tukey")
    assert set(con["adjust"]) == {"sidak"}
    assert any("changed to 'sidak'" in n for n in con.attrs["notes"])
    sidak = em.contrast({"a": [1, -1, 0], "b": [1, 0, -1]}, adjust="sidak")
    np.testing.assert_allclose(con["p_value"], sidak["p_value"])


def test_adjustments_basic_identities():
    t = np.array([2.5, -1.0, 0.3])
    df = np.full(3, 20.0)
    raw, _ = adjust_family(t, df, "none", 3, 0.95)
    bonf, _ = adjust_family(t, df, "bonferroni", 3, 0.95)
    holm, _ = adjust_family(t, df, "holm", 3, 0.95)
    np.testing.assert_allclose(bonf, np.minimum(1, 3 * raw))
    assert np.all(holm <= bonf + 1e-15) and np.all(holm >= raw - 1e-15)
    # Tukey with two means is the unadjusted t test (the range of two is |difference|)
    p2, q2 = adjust_family(np.array([2.0]), np.array([15.0]), "tukey", 2, 0.95)
    r2, s2 = adjust_family(np.array([2.0]), np.array([15.0]), "none", 2, 0.95)
    np.testing.assert_allclose(p2, r2, rtol=1e-6)
    np.testing.assert_allclose(q2, s2, rtol=1e-6)


@pytest.mark.requires_r
def test_glmm_emmeans_df_refused_and_laplace_margins_need_points():
    hospital = pd.read_csv(REPO / "fixtures" / "glmm" / "hospital.dat", sep=r"\s+", header=None,
                           names=["hosp", "loginc", "distance", "dropout", "college", "mother"])
    glmm = hlmbridge.fit("hosp ~ loginc + distance + (1 | mother)", hospital, family="binomial")
    assert glmm.spec.is_glmm
    with pytest.raises(UsageError, match="asymptotic .z. inference only"):
        glmm.emmeans("~ loginc", df_method="satterthwaite")
    # margins after a GLMM (tests/test_margins_glmm.py): the marginal mean of a Laplace fit needs points=
    with pytest.raises(UsageError, match="give points="):
        glmm.margins()
    assert glmm.margins(predict="mu_fixedonly").predict == "mu_fixedonly"


def test_marginsplot_writes_png(tmp_path, sleep):
    pytest.importorskip("matplotlib")
    _, res = sleep
    for m in (res.margins("phase", at={"Days": [0.0, 4.0, 9.0]}), res.margins("shift", over="phase"),
              res.margins(dydx=["Days", "phase"]), res.margins()):
        fig = hlmbridge.marginsplot(m)
        path = tmp_path / "m.png"
        fig.savefig(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        drawn = [ln for ln in fig.axes[0].lines if ln.get_gid() == "margins"]
        assert sum(len(ln.get_xdata()) for ln in drawn) == len(m.table)
    with pytest.raises(UsageError, match="takes the result of margins"):
        hlmbridge.marginsplot(res)


def test_weighted_fits_refused_where_weights_would_change_the_answer(sleep):
    df, _ = sleep
    res = hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", df, engine="statsmodels",
                        weights="1 / (Days + 1)")
    with pytest.raises(UnsupportedSpecError, match="margins: the fit has lmer's precision weights"):
        margins(res, "phase")
    with pytest.raises(UnsupportedSpecError, match="weights='proportional' with a weighted fit"):
        emmeans(res, "~ phase", weights="proportional")
