"""ranova's deletion of a random intercept against Stata's printed ``LR test vs. linear model:
chibar2(01)`` (the seed handout's fixtures, with their own chi2 tolerance), on both engines:
the reduced model is the linear model, and the chibar2 p-value is half the chi2(1) tail."""

from __future__ import annotations

import pytest

import hlmbridge
from hlmbridge.reference.fixtures import load_references


def _cases() -> list:
    return [r for r in load_references() if r.kind == "mixed" and r.meta.get("lr_kind") == "chibar2"
            and list(r.meta.get("levels", {})) == ["id"]]


CASES = _cases()


@pytest.mark.parametrize("engine", [pytest.param("lme4", marks=pytest.mark.requires_r), "statsmodels"])
@pytest.mark.parametrize("ref", CASES, ids=[r.case for r in CASES])
def test_ranova_of_a_random_intercept_is_statas_lr_test(ref, engine: str) -> None:
    hsb = hlmbridge.datasets.hsb()
    res = hlmbridge.fit(ref.source.command, hsb, engine=engine)
    tab = res.ranova(hsb)
    assert tab["term"].tolist() == ["<none>", "(1 | id)"]
    row = tab.iloc[1]
    assert row["df"] == ref.get("lr.df").value == 1
    assert abs(row["lrt"] - ref.get("lr.chi2").value) <= ref.tolerances["chi2"].atol, (row["lrt"], ref.get("lr.chi2"))
    assert abs(row["p_chibar2"] - ref.get("lr.p_value").value) <= ref.tolerances["p_value"].atol
    assert row["p_chibar2"] == pytest.approx(0.5 * row["p_value"], rel=1e-15)
    assert row["lrt"] == pytest.approx(res.lr_chi2, rel=1e-9)  # the fit's own LR test vs the linear model
    assert tab.attrs["notes"] == ()  # a single variance: chibar2, no conservative-test note


def test_ranova_refuses_a_reduced_model_with_other_fixed_columns() -> None:
    """A Stata command's ``ib2.g3`` (a three-level factor held as integers) is a number in the lme4
    formula the reductions are written in: the reduced model's fixed part would differ, so its
    likelihood is not comparable. An error, never a table of such tests."""
    import pandas as pd

    from hlmbridge.errors import UnsupportedSpecError

    df = hlmbridge.datasets.hsb()[["mathach", "ses", "sector", "meanses", "id"]].copy()
    df["g3"] = pd.qcut(df["meanses"], 3, labels=False).astype("int64")
    m = hlmbridge.fit("mixed mathach ib2.g3##c.ses i.sector || id: ses, reml", df, engine="statsmodels")
    with pytest.raises(UnsupportedSpecError, match="does not have the fit's fixed-effect columns"):
        m.ranova(df)
