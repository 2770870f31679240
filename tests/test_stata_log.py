"""The Stata log parser on the seed handout and on damaged copies of it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hlmbridge.errors import FixtureError
from hlmbridge.reference.stata_log import parse_log, parse_log_text

# The seed handout, committed beside the fixtures it produces (a copy of shared/seeds/...).
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"


@pytest.fixture(scope="module")
def seed_text() -> str:
    assert SEED.is_file(), f"the committed seed log is missing: {SEED}"
    return SEED.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def log(seed_text):
    return parse_log_text(seed_text, name=SEED.name)


def test_every_block_found_with_its_line(log):
    kinds = Counter(b.kind for b in log.blocks)
    assert kinds == {"mixed": 8, "estat_icc": 2, "estat_ic": 6, "lrtest": 3, "estat_recov": 2, "matlist": 3,
                     "ereturn": 1, "di": 8, "summarize": 4, "tab": 1}
    mixed_lines = [b.line for b in log.blocks if b.kind == "mixed"]
    assert mixed_lines == [174, 373, 510, 646, 702, 815, 879, 1004]
    assert [b.line for b in log.blocks if b.kind == "estat_ic"] == [593, 613, 763, 793, 954, 972]


def test_mixed_block_numbers_keyed_by_label(log):
    m5 = next(b for b in log.blocks if b.line == 815)
    cells = {c.path: c for c in m5.cells}
    assert cells[("fixed", "1.sector#c.ses", "estimate")].printed == "-1.312909"
    assert cells[("fixed", "1.sector#c.ses", "estimate")].line == 847
    assert cells[("random", "cov(ses,_cons)", "std_error")].printed == ".3298837"
    assert cells[("lr", "df")].printed == "3"
    assert m5.meta["lr_kind"] == "chi2" and m5.meta["levels"] == {"id": "Unstructured"}
    ib1 = next(b for b in log.blocks if b.line == 879)
    assert ("fixed", "0.sector#c.ses", "estimate") in {c.path for c in ib1.cells}
    m0 = next(b for b in log.blocks if b.line == 174)
    c0 = {c.path: c.printed for c in m0.cells}
    assert c0[("header", "wald_chi2")] == "." and c0[("header", "wald_p")] == "."
    assert m0.meta["lr_kind"] == "chibar2"


def test_context_tracking_and_the_typo_line(log):
    assert [(i.line, i.command) for i in log.invalid] == [(592, "qui mathach ses || id: ses, cov(unstructured)")]
    ic593 = next(b for b in log.blocks if b.line == 593)
    assert [(m.name, m.line) for m in ic593.models] == [(".", 510)]
    assert any("592" in n for n in ic593.notes)
    lr631 = next(b for b in log.blocks if b.line == 631)
    assert [(m.name, m.line) for m in lr631.models] == [(".", 611), ("slope", 510)]
    assert (lr631.meta["nested"], lr631.meta["within"]) == (".", "slope")
    di695 = next(b for b in log.blocks if b.line == 695)
    assert [(m.name, m.line) for m in di695.models] == [("base", 454), ("e(b)", 646)]
    eret = next(b for b in log.blocks if b.kind == "ereturn")
    assert {c.path[1]: c.printed for c in eret.cells}["e(ll)"] == "-23557.90510815813"
    di945 = next(b for b in log.blocks if b.line == 945)
    assert di945.models == ()


def test_mangled_fixed_row_names_the_line(seed_text):
    lines = seed_text.splitlines()
    assert lines[396].strip().startswith("ses |")
    lines[396] = lines[396].replace("2.391499", "2.39x499")
    with pytest.raises(FixtureError) as e:
        parse_log_text("\n".join(lines), name="damaged.txt")
    assert e.value.line == 397 and e.value.path == "damaged.txt"
    assert "damaged.txt:397" in str(e.value)


def test_lenient_collects_problems(seed_text):
    lines = seed_text.splitlines()
    lines[362] = lines[362].replace(".1793119", "-")
    log = parse_log_text("\n".join(lines), name="damaged.txt", lenient=True)
    assert [p.line for p in log.problems] == [363]
    assert sum(b.kind == "mixed" for b in log.blocks) == 8


def test_parse_log_reads_a_file(tmp_path):
    p = tmp_path / "x.log"
    p.write_text(". di 1/4\n\n.25\n", encoding="utf-8")
    assert parse_log(p).blocks[0].cells[0].value == 0.25
    with pytest.raises(FixtureError):
        parse_log(tmp_path / "missing.log")
