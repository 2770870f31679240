"""Every number the seed prints, through both engines, judged against fixtures/stata.

The reference numbers and tolerances come only from the fixtures (made by
``hlmbridge import-stata`` from the seed); nothing is typed in here.
"""

from __future__ import annotations

import numpy as np
import pytest

import hlmbridge
from hlmbridge import datasets
from hlmbridge.design.build import build_design
from hlmbridge.reference.fixtures import load_reference, load_references
from hlmbridge.inference.stata_parity import evaluate
from hlmbridge.check.validate import validate

ENGINES = [pytest.param("lme4", marks=pytest.mark.requires_r), "statsmodels"]
SEED_DIR = "fixtures/stata"


@pytest.fixture(scope="module")
def full_report():
    """One validate run over every seed case with every available engine (fits shared)."""
    return validate()


@pytest.mark.parametrize("engine", ENGINES)
def test_every_seed_number_matches_or_is_explained(engine: str, full_report) -> None:
    frame = full_report.to_frame()
    frame = frame[frame["engine"] == engine]
    assert len(frame), f"no rows for {engine}"
    bad = frame[~frame["status"].isin(["match", "within", "explained"])]
    assert bad.empty, full_report.render()
    # Every case with engine quantities was checked for this engine.
    engine_cases = {r.case for r in load_references() if any(v.engine for v in r.checked)}
    assert engine_cases <= set(frame["case"])
    # The only explained numbers are variance-component SEs/CIs of boundary fits.
    explained = frame[frame["status"] == "explained"]
    assert set(explained["case"]) == {"L0815_mixed", "L0879_mixed"}
    assert explained["key"].str.startswith("random.").all()
    assert not explained["key"].str.endswith(".estimate").any()
    assert explained["reason"].str.contains("boundary").all()


@pytest.mark.requires_r
def test_engines_agree_with_each_other_on_every_seed_number(full_report) -> None:
    frame = full_report.to_frame()
    pair = frame[frame["engine"] == "statsmodels vs lme4"]
    assert len(pair) > 400
    assert pair["status"].isin(["match", "within", "explained"]).all(), full_report.render()
    assert full_report.ok


def _printed_point(case: str, res: hlmbridge.FitResult) -> tuple[np.ndarray, np.ndarray]:
    ref = load_reference(f"{SEED_DIR}/seed/{case}.toml")
    beta = np.array([ref.get(f'fixed."{t}".estimate').value for t in res.fixed["stata_term"]])
    theta = np.array([ref.get(f'random."{t}".estimate').value for t in res.random["stata_term"]])
    return beta, theta


@pytest.mark.requires_r
@pytest.mark.parametrize("case", ["L0510_mixed", "L0815_mixed", "L0879_mixed"])
def test_stata_stopped_short_of_the_optimum(case: str) -> None:
    """Where Stata's variance estimates differ from both engines, its point has a lower likelihood.

    The engines' estimates rounded to Stata's 7 printed digits still have a higher log
    likelihood than Stata's printed estimates, by more than ten times what rounding itself
    moves the log likelihood: the gap is not rounding, Stata stopped
    before the optimum (on the boundary-fit ridge for model 5 and its ib1 rerun). This is
    the reason written beside the per-row tolerances in fixtures/stata/seed_overrides.toml.
    """
    ref = load_reference(f"{SEED_DIR}/seed/{case}.toml")
    data = datasets.hsb("combined")
    res = hlmbridge.fit(ref.source.command, data, engine="lme4")
    design = build_design(res.spec, data)
    stata_beta, stata_theta = _printed_point(case, res)
    rounded = np.vectorize(lambda x: float(f"{x:.7g}"))
    ll_engine_rounded = evaluate(design, rounded(res.fixed["estimate"].to_numpy()),
                                 rounded(res.random["estimate"].to_numpy())).loglik
    ll_stata = evaluate(design, stata_beta, stata_theta).loglik
    rounding_effect = abs(res.loglik - ll_engine_rounded)
    assert ll_engine_rounded > ll_stata
    assert ll_engine_rounded - ll_stata > 10 * rounding_effect
    if case != "L0510_mixed":
        assert res.singular  # the boundary fit is detected and reported
        sm = hlmbridge.fit(ref.source.command, data, engine="statsmodels")
        assert sm.singular
