"""crosscheck statuses and report formats on hand-built values (pure: no engine, no R)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hlmbridge.check.crosscheck import compare_engines, crosscheck, printed_half_unit
from hlmbridge.reference.fixtures import FIXTURE_ROOT, load_reference
from hlmbridge.reference.quantities import Actual
from hlmbridge.check.report import render

SEED = FIXTURE_ROOT / "seed"


@pytest.fixture(scope="module")
def m5():
    return load_reference(SEED / "L0815_mixed.toml")


def _exact(ref, singular=False, scale=None):
    """Actual values equal to the reference (taken from the fixture being tested, not hard-coded)."""
    out = {}
    for v in ref.checked:
        out[v.key] = Actual(v.value, None, singular)
    return out


def test_all_exact_is_match(m5):
    rep = crosscheck(m5, {"demo": _exact(m5)})
    assert rep.ok and {r.status for r in rep.rows} == {"match"}
    assert len(rep.rows) == len(m5.checked)


def test_nudged_beyond_tolerance_is_mismatch(m5):
    act = _exact(m5)
    key = 'fixed."ses".estimate'
    act[key] = Actual(act[key].value * (1 + 1e-3), 1.0)
    rep = crosscheck(m5, {"demo": act})
    row = next(r for r in rep.rows if r.key == key)
    assert row.status == "mismatch" and not rep.ok
    assert "1 mismatch" in rep.summary_line()


def test_within_by_rtol_and_by_se(m5):
    act = _exact(m5)
    key = 'fixed."ses".estimate'
    act[key] = Actual(act[key].value * (1 + 5e-5), None)
    assert next(r for r in crosscheck(m5, {"d": act}).rows if r.key == key).rule == "rtol=0.0001"
    act[key] = Actual(m5.get(key).value + 4e-4, 1.0)  # 4e-4 SEs although rel diff > 1e-4
    row = next(r for r in crosscheck(m5, {"d": act}).rows if r.key == key)
    assert (row.status, row.rule) == ("within", "se=0.001")


def test_missing_row_is_missing(m5):
    act = _exact(m5)
    del act['random."var(ses)".estimate']
    rep = crosscheck(m5, {"demo": act})
    assert not rep.ok
    assert [r.status for r in rep.rows if r.key == 'random."var(ses)".estimate'] == ["missing"]


def test_unexpected_row_does_not_fail(m5):
    act = _exact(m5)
    act["fixed.\"female\".estimate"] = Actual(1.0)
    rep = crosscheck(m5, {"demo": act})
    assert rep.ok and any(r.status == "unexpected" for r in rep.rows)


def test_explained_only_under_singular(m5):
    key = 'random."var(ses)".std_error'
    for singular, want in ((True, "explained"), (False, "mismatch")):
        act = _exact(m5, singular=singular)
        act[key] = Actual(m5.get(key).value * 0.75, None, singular)
        row = next(r for r in crosscheck(m5, {"d": act}).rows if r.key == key)
        assert row.status == want
        if want == "explained":
            assert "boundary" in row.reason


def test_printed_half_unit():
    assert printed_half_unit("0.0000") == pytest.approx(5e-5)
    assert printed_half_unit("2.8059555978e-216") == pytest.approx(5e-227)


def test_compare_engines_flags_disagreement():
    a = {"header.loglik": Actual(-100.0), 'fixed."x".estimate': Actual(1.0, 0.1)}
    b = {"header.loglik": Actual(-100.5), 'fixed."x".estimate': Actual(1.00001, 0.1)}
    rep = compare_engines({"a": a, "b": b})
    st = {r.key: r.status for r in rep.rows}
    assert st == {"header.loglik": "mismatch", 'fixed."x".estimate': "within"}


def test_report_formats(m5):
    act = _exact(m5)
    act['fixed."ses".estimate'] = Actual(0.0)
    del act["header.loglik"]
    rep = crosscheck(m5, {"demo": act})
    doc = json.loads(render(rep, "json"))
    assert doc["ok"] is False and len(doc["rows"]) == len(rep.rows)
    root = ET.fromstring(render(rep, "junit").split("?>", 1)[1])
    fails = [f.get("message") for f in root.iter("failure")]
    assert any('fixed."ses".estimate' in m for m in fails) and any("header.loglik" in m for m in fails)
    text = render(rep, "text")
    assert text.splitlines()[1].startswith("mismatch") or text.splitlines()[1].startswith("missing")
    assert text.splitlines()[-1].startswith("FAIL:")
    md = render(rep, "markdown")
    assert md.startswith("**FAIL**") and "| status |" in md
    assert rep.to_frame().shape[0] == len(rep.rows)
