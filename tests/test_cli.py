"""The hlmbridge command line, run as a subprocess (engines are real, never mocked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hlmbridge.reference.manifest import update_manifest

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "fixtures" / "stata" / "seed"
M0 = "L0174_mixed"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hlmbridge.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def _need_engine(name: str) -> None:
    from hlmbridge.engines import available_engines

    if name not in available_engines():
        pytest.skip(f"engine {name} is not available here")


def test_validate_model0_statsmodels():
    _need_engine("statsmodels")
    p = run("validate", "--case", M0, "--engine", "statsmodels", "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("OK:")


@pytest.mark.requires_r
def test_validate_model0_lme4():
    _need_engine("lme4")
    p = run("validate", "--case", M0, "--engine", "lme4", "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr


def test_nudged_fixture_exits_1_and_names_the_number(tmp_path):
    _need_engine("statsmodels")
    text = (SEED_DIR / f"{M0}.toml").read_text()
    nudged = text.replace('printed = "12.63707", value = 12.63707', 'printed = "12.73707", value = 12.73707')
    assert nudged != text
    (tmp_path / f"{M0}.toml").write_text(nudged)
    update_manifest(tmp_path)  # the nudge is accepted into the set's manifest: the numbers must catch it
    p = run("validate", "--fixtures", str(tmp_path), "--engine", "statsmodels", "--quiet")
    assert p.returncode == 1
    assert 'fixed."_cons".estimate' in p.stdout and "mismatch" in p.stdout


def test_unknown_case_and_engine_exit_2():
    p = run("validate", "--case", "no_such_case")
    assert p.returncode == 2 and "L0174_mixed" in p.stderr and "Traceback" not in p.stderr
    p = run("validate", "--engine", "spss")
    assert p.returncode == 2 and "statsmodels" in p.stderr


def test_unwritable_out_exits_2(tmp_path):
    p = run("validate", "--case", M0, "--out", str(tmp_path / "no" / "such" / "dir" / "r.txt"))
    assert p.returncode == 2 and "cannot write" in p.stderr


def test_json_and_junit_parse(tmp_path):
    _need_engine("statsmodels")
    out = tmp_path / "r.xml"
    p = run("validate", "--case", M0, "--engine", "statsmodels", "--format", "junit", "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "testsuite" and root.find("testcase").get("name") == M0
    p = run("validate", "--case", "L0353_estat_icc", "--engine", "statsmodels", "--format", "json", "--quiet")
    doc = json.loads(p.stdout)
    assert doc["ok"] is True and {r["key"] for r in doc["rows"]} >= {'icc."id".estimate'}


def test_import_stata_and_translate(tmp_path):
    seed = Path(__file__).resolve().parents[1] / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"
    p = run("import-stata", str(seed), "--out", str(tmp_path),
            "--overrides", str(ROOT / "fixtures" / "stata" / "seed_overrides.toml"))
    assert p.returncode == 0, p.stderr
    assert "line 592" in p.stdout
    assert (tmp_path / f"{M0}.toml").read_bytes() == (SEED_DIR / f"{M0}.toml").read_bytes()
    p = run("translate", "mixed mathach ses || id: ses, cov(unstr)")
    assert p.returncode == 0 and "|" in p.stdout


def test_bad_log_exits_2(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_text(". estat icc\n\nIntraclass correlation\n\n  Level |  ICC\n    id |   x  y  z  w\n")
    p = run("import-stata", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "bad.log:" in p.stderr


# ---------------------------------------------------------------- issue 26, items 2 and 3

SEED_LOG = ROOT / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"


def test_summarize_prints_stata_s_table_for_a_bundled_name():
    """`hlmbridge summarize` printed pandas' plain table: it imported `format_summary` (the
    function is `format_summarize`) inside `except (ImportError, AttributeError)`."""
    lines = SEED_LOG.read_text(encoding="utf-8").splitlines()
    sum_after_hsb2 = lines.index(". use hsb2.dta, clear") + 2
    assert lines[sum_after_hsb2] == ". sum"
    stata = _stata_block_at(lines, sum_after_hsb2)
    p = run("summarize", str(ROOT / "fixtures" / "data" / "hsb2.dta"))
    assert p.returncode == 0, p.stderr
    assert [ln.rstrip() for ln in p.stdout.splitlines() if ln.strip()] == stata
    by_name = run("summarize", "hsb2")
    assert by_name.returncode == 0 and by_name.stdout == p.stdout, by_name.stderr


def _stata_block_at(lines: list[str], index: int) -> list[str]:
    out = []
    for line in lines[index + 1:]:
        if line.startswith(". "):
            break
        if line.strip():
            out.append(line.rstrip())
    return out


def test_fit_and_validate_reach_the_bundled_data_by_name():
    _need_engine("statsmodels")
    p = run("fit", "mixed mathach ses || id:", "--data", "hsb", "--engine", "statsmodels")
    assert p.returncode == 0, p.stderr
    assert "Number of obs     =      7,185" in p.stdout and "Number of groups  =        160" in p.stdout
    p = run("fit", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy", "--engine", "statsmodels")
    assert p.returncode == 0, p.stderr
    assert "Number of obs     =        180" in p.stdout
    p = run("fit", "mixed size sector || id:", "--data", "hsb2", "--engine", "statsmodels")
    assert p.returncode == 2 and "160 groups" not in p.stdout  # hsb2 has one row per school: a real error, said
    p = run("validate", "--data", "hsb", "--case", M0, "--engine", "statsmodels", "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("OK:")


def test_a_name_that_is_neither_file_nor_bundled_lists_the_names(tmp_path):
    for args in (["fit", "mixed mathach ses || id:", "--data", "hbs"], ["validate", "--data", "hbs", "--case", M0],
                 ["summarize", "hbs"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
        assert "no data file 'hbs' and no bundled data set of that name" in p.stderr, p.stderr
        for name in ("hsb", "hsb1", "hsb2", "sleepstudy"):
            assert f" {name} (" in p.stderr


def test_a_file_wins_over_a_bundled_name(tmp_path):
    _need_engine("statsmodels")
    (tmp_path / "hsb").write_text("y,g\n1,a\n")  # a file named like a data set: read as the file (not .dta/.csv)
    p = subprocess.run([sys.executable, "-m", "hlmbridge.cli", "summarize", "hsb"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert p.returncode == 2 and "unsupported data file type ''" in p.stderr, p.stderr


def test_help_lists_every_bundled_name():
    from hlmbridge.cli import _DATA_NAMES
    from hlmbridge.datasets import NAMES

    assert _DATA_NAMES == ", ".join(NAMES)


# ---------------------------------------------------------------- issue 26, item 6

@pytest.mark.parametrize("model", [
    "mathach ~ poly(ses, 2) + (1 | id)",
    "mathach ~ log(size) + scale(meanses) + factor(sector) + (ses | id)",
    "mixed mathach ses || id: ses, cov(unstructured)",
    "mixed mathach ses || id: ses, cov(exchangeable)",
])
def test_translate_says_what_the_statsmodels_engine_does(model: str, hsb_combined) -> None:
    """translate said statsmodels "cannot fit" poly(); the statsmodels engine fits it (it
    evaluates the transforms itself and passes MixedLM arrays). Each claim is checked against a
    real fit."""
    import hlmbridge
    from hlmbridge.errors import UnsupportedSpecError

    p = run("translate", model)
    assert p.returncode == 0, p.stderr
    said = p.stdout.split("statsmodels:")[1]
    try:
        hlmbridge.fit(model, hsb_combined, engine="statsmodels")
        fits = True
    except UnsupportedSpecError:
        fits = False
    assert ("not expressible" in said or "refuses it" in said) is (not fits), said
    assert "cannot fit" not in said or not fits, said
    if fits and "smf.mixedlm" not in said:
        assert "hlmbridge's statsmodels engine fits it" in said
        assert f"result = hlmbridge.fit({model!r}, df, engine='statsmodels')" in said
