"""Stata's header lines of a binomial GLMM with trials (issue 23): ``melogit ..., binomial(n)``
prints ``Binomial variable: n`` under the title, ``binomial(#)`` prints ``Binomial trials = #``
(Stata's header code: ``string(e(binomial), "%3.0f")``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import hlmbridge

HOSPITAL = Path(__file__).resolve().parent.parent / "fixtures" / "glmm" / "hospital.csv"


@pytest.mark.requires_r
@pytest.mark.parametrize("option, line", [("binomial(n)", "Binomial variable: n"),
                                          ("binomial(1)", "Binomial trials =   1")])
def test_binomial_trials_header(option, line):
    pytest.importorskip("rpy2")
    data = pd.read_csv(HOSPITAL).assign(n=1)
    res = hlmbridge.fit(f"melogit hosp loginc distance || mother:, {option} intpoints(12)", data, engine="lme4")
    lines = res.summary().splitlines()
    assert lines[0].startswith("Mixed-effects logistic regression")
    assert lines[1] == line
    assert lines[2].startswith("Group variable: mother")
    plain = hlmbridge.fit("melogit hosp loginc distance || mother:, intpoints(12)", data, engine="lme4")
    assert not any(t.startswith("Binomial") for t in plain.summary().splitlines())
