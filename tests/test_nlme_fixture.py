"""Issue 25: the log reader and validate on Stata's residual-structure rows (fixtures/nlme/, a log
of our own making in Stata's layout; see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hlmbridge.errors import FixtureError
from hlmbridge.reference.stata_log import parse_log_text

NLME = Path(__file__).resolve().parents[1] / "fixtures" / "nlme"


def _mixed_block(text: str):
    return next(b for b in parse_log_text(text).blocks if b.kind == "mixed")


def test_residual_block_is_read() -> None:
    text = (NLME / "logs" / "orthodont_nlme.log").read_text(encoding="utf-8")
    blocks = [b for b in parse_log_text(text).blocks if b.kind == "mixed"]
    assert [b.meta.get("residuals") for b in blocks] == ["AR(1)", "Independent", "Exponential", "MA(1)",
                                                         "Exchangeable"]
    assert blocks[1].meta["residuals_by"] == "male"
    labels = [{c.path[1] for c in b.cells if c.path[0] == "random"} for b in blocks]
    assert labels[0] == {"var(_cons)", "rho", "var(e)"}
    assert labels[1] == {"var(_cons)", "0: var(e)", "1: var(e)"}
    assert labels[3] == {"var(_cons)", "theta1", "var(e)"}
    assert labels[4] == {"var(age)", "var(e)", "cov(e)"}


def test_residual_rows_need_a_residual_title() -> None:
    text = (NLME / "logs" / "orthodont_nlme.log").read_text(encoding="utf-8")
    block = text.split("\n\n. mixed")[1]  # the AR(1) model
    broken = ". mixed" + block.replace("Residual: AR(1)              |\n", "")
    with pytest.raises(FixtureError, match="unrecognized random-effects row 'rho'"):
        parse_log_text(broken)


@pytest.mark.requires_r
def test_round_trip_validates_on_nlme(tmp_path: Path) -> None:
    from hlmbridge.check.validate import validate
    from hlmbridge.reference.fixtures import import_stata, load_references

    import_stata(NLME / "logs" / "orthodont_nlme.log", tmp_path)
    refs = load_references(tmp_path)
    assert [r.kind for r in refs] == ["mixed"] * 5
    report = validate(tmp_path, data=NLME / "orthodont.csv", engines=["nlme"], compare=False)
    bad = [r for r in report.rows if r.status not in ("match", "within", "explained")]
    assert not bad, bad[:5]
    assert len(report.rows) == 180
    keys = {(r.case, r.key) for r in report.rows}
    assert any(k.startswith('random."rho"') for _, k in keys)
    assert any(k.startswith('random."1: var(e)"') for _, k in keys)
