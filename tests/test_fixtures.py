"""Fixture files: the seed import is reproducible; the loader rejects bad files with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hlmbridge.errors import FixtureError
from hlmbridge.reference.fixtures import FIXTURE_ROOT, format_key, import_stata, load_reference, load_references, parse_key

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"
SEED_DIR = FIXTURE_ROOT / "seed"
OVERRIDES = FIXTURE_ROOT / "seed_overrides.toml"


def test_reimport_reproduces_committed_fixtures(tmp_path):
    assert SEED.is_file(), f"the committed seed log is missing: {SEED}"
    paths, _ = import_stata(SEED, tmp_path, overrides=OVERRIDES)
    committed = sorted(p.name for p in SEED_DIR.glob("*.toml"))
    assert sorted(p.name for p in paths) == committed
    for p in paths:
        assert p.read_bytes() == (SEED_DIR / p.name).read_bytes(), p.name


def test_all_seed_fixtures_load():
    refs = load_references()
    names = [r.case for r in refs]
    assert "seed_prose" in names and "L0174_mixed" in names
    assert sum(r.kind == "mixed" for r in refs) == 8
    m2 = next(r for r in refs if r.case == "L0510_mixed")
    v = m2.get('random."var(ses)".conf_low')
    assert v.override is None and m2.tolerance(v).rtol == 1e-4  # the default holds: no override
    m5 = next(r for r in refs if r.case == "L0815_mixed")
    cov = m5.get('random."cov(ses,_cons)".estimate')
    assert m5.tolerance(cov).rtol == 1e-3 and "boundary fit" in m5.tolerance(cov).reason
    se = m5.get('random."var(ses)".std_error')
    assert se.explain_when == "singular" and "boundary" in se.explain_reason
    assert m5.get('fixed."ses".std_error').explain_when is None
    di = next(r for r in refs if r.case == "L0945_di")
    assert not di.values[0].engine and "not an engine quantity" in di.values[0].reason


def test_key_round_trip():
    for path in [("fixed", "1.sector#c.ses", "estimate"), ("eb", "lns1_1_1:_cons"), ("ic", "aic")]:
        assert parse_key(format_key(path)) == path


def _copy(tmp_path, name="L0373_mixed.toml"):
    text = (SEED_DIR / name).read_text(encoding="utf-8")
    return text, tmp_path / name


def _line_of(text: str, needle: str) -> int:
    return next(i for i, t in enumerate(text.splitlines(), start=1) if needle in t)


def test_syntax_error_names_line(tmp_path):
    text, p = _copy(tmp_path)
    n = _line_of(text, "[fixed.\"ses\"]")
    lines = text.splitlines()
    lines[n] = lines[n].replace("{ printed", "{ printed printed")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(FixtureError) as e:
        load_reference(p)
    assert e.value.path == str(p) and e.value.line == n + 1


def test_missing_field_names_line(tmp_path):
    text, p = _copy(tmp_path)
    n = _line_of(text, 'std_error = { printed = ".1056926"')
    p.write_text(text.replace('std_error = { printed = ".1056926", ', "std_error = { "))
    with pytest.raises(FixtureError, match="missing field") as e:
        load_reference(p)
    assert e.value.line == n


def test_non_numeric_value_names_line(tmp_path):
    text, p = _copy(tmp_path)
    n = _line_of(text, 'value = 4.728519')
    p.write_text(text.replace("value = 4.728519", 'value = "4.728519"'))
    with pytest.raises(FixtureError, match="not numeric") as e:
        load_reference(p)
    assert e.value.line == n


def test_unknown_label_names_line(tmp_path):
    text, p = _copy(tmp_path)
    p.write_text(text.replace('[fixed."ses"]', '[fixed."female"]'))
    n = _line_of(p.read_text(), '[fixed."female"]')
    with pytest.raises(FixtureError, match="female") as e:
        load_reference(p)
    assert e.value.line == n + 1 and str(p) in str(e.value)


def test_unknown_random_label_and_quantity(tmp_path):
    text, p = _copy(tmp_path)
    p.write_text(text.replace('[random."var(_cons)"]', '[random."var(ses)"]'))
    with pytest.raises(FixtureError, match=r"var\(ses\)"):
        load_reference(p)
    p.write_text(text.replace("[lr]\ndf =", "[lr]\ndof ="))
    with pytest.raises(FixtureError, match="unknown quantity"):
        load_reference(p)


def test_override_needs_reason(tmp_path):
    text, p = _copy(tmp_path)
    p.write_text(text.replace('value = 2.391499, line = 397 }', 'value = 2.391499, line = 397, rtol = 0.1 }'))
    with pytest.raises(FixtureError, match="without a reason"):
        load_reference(p)
