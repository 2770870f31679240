"""ANOVA tables, lincom, glance and augment: arguments, errors and internal consistency (no R;
the numbers themselves are checked against lmerTest and lme4 in tests/test_anova_r.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError


@pytest.fixture(scope="module")
def hsb(hsb_combined: pd.DataFrame) -> pd.DataFrame:
    return hsb_combined


@pytest.fixture(scope="module")
def fit(hsb) -> hlmbridge.FitResult:
    return hlmbridge.fit("mathach ~ ses * factor(sector) + meanses + (1 | id)", hsb, engine="statsmodels")


def test_anova_arguments(fit) -> None:
    with pytest.raises(UsageError, match="unknown ANOVA type"):
        fit.anova("satterthwaite", type=4)
    with pytest.raises(UsageError, match="unknown ANOVA type"):
        fit.anova("satterthwaite", type=True)
    with pytest.raises(UsageError, match="lme4"):
        fit.anova("lme4")
    with pytest.raises(UsageError, match="unknown df method"):
        fit.anova("containment")
    with pytest.raises(UsageError, match="show_tests"):
        fit.anova("satterthwaite", show_tests="yes")
    back = hlmbridge.FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))
    with pytest.raises(UsageError, match="design"):
        back.anova("satterthwaite")
    # "III", "3" and 3 are one type; the table's terms are R's term labels
    a, b = fit.anova("sat", type="III"), fit.anova("sat", type=3)
    assert a.equals(b) and a["term"].tolist() == ["ses", "factor(sector)", "meanses", "ses:factor(sector)"]


def test_anova_tests_are_term_columns_where_nothing_contains_them(fit) -> None:
    """A term no other term contains is tested by its own columns in types II and III."""
    for type_ in (2, 3):
        _, tests = fit.anova("satterthwaite", type=type_, show_tests=True)
        L = tests["meanses"].to_numpy()
        assert L.shape == (1, 5) and np.allclose(L, np.eye(5)[[3]]), type_


def test_lincom_z_equals_the_fixed_table(fit) -> None:
    tab = fit.fixed
    for j, (term, stata) in enumerate(zip(tab["term"], tab["stata_term"])):
        for spec in (term, f"_b[{stata}]", np.eye(len(tab))[j]):
            got = fit.lincom(spec).iloc[0]
            assert np.isnan(got["df"]) and got["df_method"] == ""
            np.testing.assert_allclose(got[["estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]]
                                       .to_numpy(float),
                                       tab.iloc[j][["estimate", "std_error", "statistic", "p_value", "conf_low",
                                                    "conf_high"]].to_numpy(float), rtol=1e-12, atol=1e-300)


def test_lincom_expressions_and_errors(fit) -> None:
    names = fit.fixed["term"].tolist()
    w = np.zeros(len(names))
    w[names.index("ses")], w[names.index("ses:factor(sector)1")] = 1.0, 0.5
    a = fit.lincom("ses + ses:factor(sector)1/2", df_method="kenward-roger")
    b = fit.lincom(w, df_method="KR")
    assert a["estimate"][0] == pytest.approx(b["estimate"][0], rel=1e-14)
    assert a["df"][0] == pytest.approx(b["df"][0], rel=1e-14) and a["df_method"][0] == "kenward-roger"
    assert a["contrast"][0] == "ses + ses:factor(sector)1/2"
    with pytest.raises(UsageError, match="unknown coefficient"):
        fit.lincom("ses + bogus")
    with pytest.raises(UsageError, match="constant term"):
        fit.lincom("ses + 2")
    with pytest.raises(UsageError, match="one weight per fixed effect"):
        fit.lincom([1.0, 2.0])
    with pytest.raises(UsageError, match="non-empty"):
        fit.lincom("  ")
    with pytest.raises(UsageError, match="level"):
        fit.lincom("ses", level=95)


def test_glance_columns_follow_the_method(hsb) -> None:
    reml = hlmbridge.fit("mathach ~ ses + (1 | id)", hsb, engine="statsmodels")
    ml = hlmbridge.fit("mathach ~ ses + (1 | id)", hsb, engine="statsmodels", reml=False)
    g, h = reml.glance(), ml.glance()
    assert "REMLcrit" in g.columns and "deviance" not in g.columns
    assert "deviance" in h.columns and "REMLcrit" not in h.columns
    assert h["logLik"][0] == ml.loglik and h["deviance"][0] == pytest.approx(-2 * ml.loglik, rel=1e-15)
    assert h["AIC"][0] == pytest.approx(ml.aic, abs=1e-8) and h["BIC"][0] == pytest.approx(ml.bic, abs=1e-8)
    assert h["df.residual"][0] == ml.nobs - 4


def test_augment_with_data(hsb) -> None:
    res = hlmbridge.fit("mathach ~ ses + (1 | id)", hsb, engine="statsmodels")
    a = res.augment(hsb)
    assert list(a.columns[: hsb.shape[1]]) == list(hsb.columns) and len(a) == res.nobs
    np.testing.assert_allclose(a[".fitted"] + a[".resid"], a["mathach"], rtol=1e-12)
    np.testing.assert_allclose(a[".fixed"], res.predict(re_form="~0").values, rtol=1e-12)
    with pytest.raises(UsageError, match="data must be the data frame"):
        res.augment(hsb.head(10))
