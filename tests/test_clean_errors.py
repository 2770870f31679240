"""One clear line and a non-zero exit instead of a traceback, and import-stata's gaps closed
(issue 12 item 7 and the import-stata list): non-UTF-8 fixtures, Windows (CP1252/Latin-1)
Stata logs, an empty CSV, an infinite estimate in summary(), overrides naming no case,
control characters, an empty log, wrapped rows and abbreviated labels."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest

import hlmbridge
from hlmbridge.cli import main
from hlmbridge.errors import DataError, FixtureError
from hlmbridge.reference.fixtures import FIXTURE_ROOT, _toml_str, import_stata, load_reference, load_references
from hlmbridge.reference.stata_log import parse_log

SEED_LOG = FIXTURE_ROOT / "logs" / "000_b67aa17e87dadab7.txt"
SEED_DIR = FIXTURE_ROOT / "seed"


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_clean_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- non-UTF-8 fixtures -----------------------------------------------------------------
def test_non_utf8_fixture_is_one_line_with_its_line_number(tmp_path, capsys):
    text = (SEED_DIR / "L0174_mixed.toml").read_text(encoding="utf-8")
    raw = text.replace('kind = "mixed"', 'kind = "mixed"\nnotes = ["caf\u00e9"]').encode("cp1252")
    (tmp_path / "L0174_mixed.toml").write_bytes(raw)
    code, _, err = _cli(capsys, "validate", "--fixtures", str(tmp_path), "--engine", "statsmodels", "--quiet")
    line = _one_clean_line(err)
    assert code == 2 and "not UTF-8" in line and "L0174_mixed.toml:8:" in line
    with pytest.raises(FixtureError, match="not UTF-8"):
        load_reference(tmp_path / "L0174_mixed.toml")


def test_non_utf8_overrides_file(tmp_path, capsys):
    ov = tmp_path / "ov.toml"
    ov.write_bytes('format = "overrides"\n# r\u00e9sum\u00e9\n'.encode("latin-1"))
    code, _, err = _cli(capsys, "import-stata", str(SEED_LOG), "--out", str(tmp_path / "o"), "--overrides", str(ov))
    assert code == 2 and "not UTF-8" in _one_clean_line(err) and "ov.toml:2:" in err


# --- Windows Stata logs are read ------------------------------------------------------------
_LOG = """\
. * Caf\u00e9 \u2013 a Stata log written on Windows \u201cquoted\u201d
. use hsb1.dta, clear

. di 1/8
.125
"""


@pytest.mark.parametrize(("encoding", "extra", "recorded"), [
    ("cp1252", "", "cp1252"),
    ("latin-1", "\x81", "latin-1"),  # 0x81 is undefined in CP1252: only Latin-1 reads it
])
def test_windows_logs_are_read_and_the_encoding_recorded(tmp_path, capsys, encoding, extra, recorded):
    text = _LOG if encoding == "cp1252" else _LOG.replace("\u2013", "-").replace("\u201c", '"').replace("\u201d", '"')
    log = tmp_path / "win.log"
    log.write_bytes((text.replace("Caf\u00e9", "Caf\u00e9" + extra)).encode(encoding))
    with pytest.raises(UnicodeDecodeError):
        log.read_bytes().decode("utf-8")  # really not UTF-8
    assert parse_log(log).encoding == recorded
    code, out, err = _cli(capsys, "import-stata", str(log), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert f"read it as {recorded}" in out and "wrote 1 fixture files" in out
    fixture = tmp_path / "o" / "L0004_di.toml"
    assert tomllib.loads(fixture.read_text(encoding="utf-8"))["source"]["encoding"] == recorded
    assert load_reference(fixture).source.encoding == recorded


def test_utf8_log_records_no_encoding():
    first = (SEED_DIR / "L0174_mixed.toml").read_text(encoding="utf-8")
    assert "encoding" not in tomllib.loads(first)["source"] and parse_log(SEED_LOG).encoding == "utf-8"


# --- fit --data with an empty CSV -----------------------------------------------------------
@pytest.mark.parametrize(("content", "message"), [("", "is empty"), ("y,x,g\n", "no data rows"),
                                                   ('y,x\n1,"2\n', "not a well-formed CSV")])
def test_empty_or_broken_csv_is_a_data_error(tmp_path, capsys, content, message):
    data = tmp_path / "d.csv"
    data.write_text(content)
    code, _, err = _cli(capsys, "fit", "mixed y x || g:", "--data", str(data), "--engine", "statsmodels")
    assert code == 2 and message in _one_clean_line(err)
    from hlmbridge.check.validate import load_data

    with pytest.raises(DataError, match=message):
        load_data(data)


# --- summary() with an infinite estimate ------------------------------------------------------
def test_summary_prints_infinite_and_missing_numbers():
    res = hlmbridge.fit("Reaction ~ Days + (1|Subject)", hlmbridge.datasets.sleepstudy(), engine="statsmodels")
    cols = list(res.fixed.columns)
    rows = [list(r) for r in res.fixed_rows]
    for c in ("estimate", "std_error", "conf_low", "conf_high"):
        rows[0][cols.index(c)] = math.inf
    rows[1][cols.index("estimate")] = -1e300
    rows[1][cols.index("std_error")] = math.nan
    bad = dataclasses.replace(res, fixed_rows=tuple(tuple(r) for r in rows), loglik=-math.inf)
    text = bad.summary()  # before: OverflowError: cannot convert float infinity to integer
    label = {r[cols.index("stata_term")]: r for r in rows}
    line = {t.split("|")[0].strip(): t for t in text.splitlines() if "|" in t}
    inf_term = next(k for k, r in label.items() if r[cols.index("estimate")] == math.inf)
    big_term = next(k for k in label if k != inf_term)
    assert line[inf_term].split("|")[1].split()[:2] == ["inf", "inf"]
    assert line[big_term].split("|")[1].split()[:2] == ["-1.000e+300", "."]
    assert "Log likelihood = -inf" in text


# --- import-stata gaps ---------------------------------------------------------------------
def _seed_lines() -> list[str]:
    return SEED_LOG.read_text(encoding="utf-8").split("\n")


def _import_lines(tmp_path: Path, lines: list[str], **kw) -> tuple[list[Path], object]:
    log = tmp_path / "damaged.txt"
    log.write_text("\n".join(lines), encoding="utf-8")
    return import_stata(log, tmp_path / "out", **kw)


def test_override_naming_a_missing_case_fails(tmp_path, capsys):
    ov = tmp_path / "ov.toml"
    ov.write_text('[[override]]\ncase = "L0816_mixed"\nkeys = [\'fixed."ses".estimate\']\nrtol = 1e-3\n'
                  'reason = "typo in the case name"\n')
    code, out, err = _cli(capsys, "import-stata", str(SEED_LOG), "--out", str(tmp_path / "o"), "--overrides", str(ov))
    assert code == 2 and "names case 'L0816_mixed', which this log does not produce" in _one_clean_line(err)
    assert not (tmp_path / "o").exists()  # nothing written


def test_misspelled_override_field_fails(tmp_path):
    ov = tmp_path / "ov.toml"
    ov.write_text('[[override]]\ncase = "L0815_mixed"\nkeys = [\'random."cov(ses,_cons)".estimate\']\n'
                  'rtoll = 1e-3\nreason = "x"\n')
    with pytest.raises(FixtureError, match="unknown fields"):
        import_stata(SEED_LOG, tmp_path / "o", overrides=ov)


def test_control_characters_never_reach_a_fixture(tmp_path, capsys):
    assert tomllib.loads(f"s = {_toml_str('a' + chr(1) + 'b' + chr(0x7f) + 'c' + chr(13))}")["s"] == "a\x01b\x7fc\r"
    lines = _seed_lines()
    k = next(i for i, t in enumerate(lines) if t.startswith(". di exp(base[1,2])^2"))
    lines[k] = lines[k].replace("exp(base", "exp(\x01base")
    log = tmp_path / "ctl.txt"
    log.write_text("\n".join(lines), encoding="utf-8")
    code, _, err = _cli(capsys, "import-stata", str(log), "--out", str(tmp_path / "o"))
    assert code == 2 and "control character U+0001" in _one_clean_line(err) and f"ctl.txt:{k + 1}:" in err


def test_empty_log_fails(tmp_path, capsys):
    for content in ("", "Some prose, no Stata output.\n\n. use hsb1.dta, clear\n"):
        log = tmp_path / "empty.log"
        log.write_text(content)
        code, out, err = _cli(capsys, "import-stata", str(log), "--out", str(tmp_path / "o"))
        assert code == 2 and "0 fixtures" in _one_clean_line(err) and "wrote" not in out


def test_wrapped_row_fails_at_import_with_its_line(tmp_path):
    lines = _seed_lines()
    k = next(i for i, t in enumerate(lines) if t.strip().startswith("ses |") and "2.391499" in t)
    label, _, rest = lines[k].partition("|")
    lines[k:k + 1] = [label + "|", " " * len(label) + "|" + rest]  # the label wrapped onto its own line
    with pytest.raises(FixtureError, match="wrapped row") as e:
        _import_lines(tmp_path, lines)
    assert e.value.line == k + 2 and e.value.path.endswith("damaged.txt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["fixed", "random", "summarize"])
def test_abbreviated_label_fails_at_import_with_its_line(tmp_path, where):
    lines = _seed_lines()
    if where == "fixed":
        k = next(i for i, t in enumerate(lines) if t.strip().startswith("ses |") and "2.391499" in t)
        lines[k] = lines[k].replace("ses |", "s~s |")
    elif where == "random":
        k = next(i for i, t in enumerate(lines) if t.strip().startswith("var(ses) |"))
        lines[k] = lines[k].replace("var(ses) |", "var(s~s) |")
    else:
        k = next(i for i, t in enumerate(lines) if t.strip().startswith("mathach |"))
        lines[k] = lines[k].replace("mathach |", "math~ch |")
    with pytest.raises(FixtureError, match="abbreviated label") as e:
        _import_lines(tmp_path, lines)
    assert e.value.line == k + 1


def test_label_the_model_cannot_have_fails_at_import(tmp_path):
    # Before: written, and refused only when validate loaded it.
    lines = _seed_lines()
    k = next(i for i, t in enumerate(lines) if t.strip().startswith("ses |") and "2.391499" in t)
    lines[k] = lines[k].replace("      ses |", "   female |")
    with pytest.raises(FixtureError, match="would not load: fixed-effect label 'female'") as e:
        _import_lines(tmp_path, lines)
    assert e.value.line == k + 1


def test_reimported_seed_loads_back(tmp_path):
    paths, parsed = import_stata(SEED_LOG, tmp_path, overrides=FIXTURE_ROOT / "seed_overrides.toml")
    assert len(paths) == len(parsed.blocks) == 38
    assert len(load_references(tmp_path)) == 38
