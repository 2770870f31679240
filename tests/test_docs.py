"""Issue 26, item 7: the design and Stata-parity notes live in the repository (docs/), and every
file they name exists (the README cited ../shared/docs/, outside the repository)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["docs/DESIGN.md", "docs/STATA_PARITY.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_a_doc_names_exists(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w./-]+\.(?:py|sh|R|toml|md|txt))`", text))
    named |= set(re.findall(r"\]\(([\w./-]+\.md)\)", text))
    assert named, f"{doc} names no file"
    missing = [n for n in sorted(named)
               if not any((base / n).exists() for base in (REPO, REPO / "hlmbridge", REPO / "docs"))]
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_the_parity_notes_show_what_lrtest_prints() -> None:
    """The lrtest block in STATA_PARITY.md is the one the postestimation doctest checks."""
    from hlmbridge.results import postestimation

    doc = (REPO / "docs" / "STATA_PARITY.md").read_text(encoding="utf-8")
    block = doc.split("```\n", 2)[1]
    shown = [ln[2:] if ln.startswith("  ") else ln for ln in block.splitlines()]
    doctest = postestimation.lrtest.__doc__ or ""
    printed = doctest.split('names=("m2", "m1")))\n', 1)[1].split("    >>>", 1)[0]
    expected = [ln[4:].replace("<BLANKLINE>", "") for ln in printed.splitlines()]
    assert "\n".join(ln.rstrip() for ln in shown).strip() == "\n".join(ln.rstrip() for ln in expected).strip()
