"""validate(): cases chosen, each (spec, engine) fitted once, statuses computed from real fits."""

from __future__ import annotations

import pytest

from hlmbridge.errors import UsageError
from hlmbridge.reference.fixtures import load_references
from hlmbridge.check.validate import select_cases, validate


def test_select_cases_patterns_and_errors():
    refs = load_references()
    assert {r.case for r in select_cases(refs, ["L0*_lrtest"])} == {"L0631_lrtest", "L0781_lrtest", "L0988_lrtest"}
    with pytest.raises(UsageError, match="valid cases"):
        select_cases(refs, ["nope"])


def test_validate_data_cases_need_no_engine():
    from hlmbridge.engines import available_engines

    if not available_engines():
        pytest.skip("no engine available")
    rep = validate(cases=["L0116_tab", "L0130_summarize"], engines=[available_engines()[0]])
    assert rep.ok, rep.render()
    assert {r.case for r in rep.rows} == {"L0116_tab", "L0130_summarize"}


def test_validate_statsmodels_di_and_prose():
    from hlmbridge.engines import available_engines

    if "statsmodels" not in available_engines():
        pytest.skip("statsmodels engine unavailable")
    fits = []
    rep = validate(cases=["L0486_di", "L0489_di", "L0492_di", "seed_prose"], engines=["statsmodels"],
                   progress=lambda d, t, label: fits.append(label))
    assert len(fits) == 2  # base and ses models, each fitted once
    assert rep.ok, rep.render()
