"""validate is a CI gate that cannot pass without checking (issue 12 items 5 and 6).

Every fixture is used or fails; a truncated fixture fails; an engine asked for or named by
the fixtures that cannot run fails (checked in a subprocess where rpy2 cannot be imported,
never by mocking an engine); log likelihoods, chi2, AIC and BIC are judged on absolute
scales, coefficients against their standard errors. Fits are real (statsmodels).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from hlmbridge.check.crosscheck import crosscheck
from hlmbridge.check.validate import _not_judged, validate
from hlmbridge.cli import main
from hlmbridge.errors import FixtureError
from hlmbridge.reference.fixtures import (ABSOLUTE_CLASSES, DEFAULT_TOLERANCES, FIXTURE_ROOT, load_reference,
                                          load_references)
from hlmbridge.reference.quantities import Actual

ROOT = Path(__file__).resolve().parents[1]
SEED = FIXTURE_ROOT / "seed"
M1 = "L0373_mixed"  # mixed mathach ses || id: (one fast statsmodels fit)


def _copy(tmp_path: Path, *names: str) -> dict[str, str]:
    texts = {}
    for n in names:
        texts[n] = (SEED / f"{n}.toml").read_text(encoding="utf-8")
        (tmp_path / f"{n}.toml").write_text(texts[n], encoding="utf-8")
    return texts


def update_manifest(root: Path) -> None:
    """Accept ``root``'s files into its manifest (as `hlmbridge validate --update-manifest` does)."""
    from hlmbridge.reference.manifest import update_manifest as accept

    accept(root)


def _validate_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["validate", "--quiet", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- every fixture used, none truncated ------------------------------------------------
def test_misspelled_case_table_fails_instead_of_being_skipped(tmp_path, capsys):
    # Before: a file whose [case] was misspelled was passed over as "not a case fixture", so a
    # wrong number in it passed (exit 0 on the other fixture alone).
    texts = _copy(tmp_path, "L0174_mixed", M1)
    bad = texts[M1].replace("[case]", "[cases]").replace('value = 2.391499', 'value = 9.391499')
    (tmp_path / f"{M1}.toml").write_text(bad.replace('printed = "2.391499"', 'printed = "9.391499"'))
    code, _, err = _validate_cli(capsys, "--fixtures", str(tmp_path), "--engine", "statsmodels")
    assert code == 2, err
    assert f"{M1}.toml" in err and "misspelled [case]" in err and len(err.strip().splitlines()) == 1


def test_case_name_must_be_the_file_name(tmp_path):
    texts = _copy(tmp_path, M1)
    (tmp_path / f"{M1}.toml").write_text(texts[M1].replace(f'name = "{M1}"', 'name = "L0373_mixd"'))
    with pytest.raises(FixtureError, match="misspelled name") as e:
        load_references(tmp_path)
    assert e.value.line == 6  # the name line


def test_truncated_fixture_fails(tmp_path, capsys):
    # Before: a fixture cut after any complete line still loaded and passed with fewer numbers.
    texts = _copy(tmp_path, M1)
    lines = texts[M1].splitlines()
    cut = next(i for i, t in enumerate(lines) if t.startswith("[lr]")) + 2  # [lr] keeps df only
    (tmp_path / f"{M1}.toml").write_text("\n".join(lines[:cut]) + "\n")
    code, _, err = _validate_cli(capsys, "--fixtures", str(tmp_path), "--engine", "statsmodels")
    assert code == 2 and "truncated" in err and "numbers = 32" in err, err


def test_overrides_file_naming_no_case_fails(tmp_path):
    _copy(tmp_path, M1)
    (tmp_path / "overrides.toml").write_text(textwrap.dedent('''\
        format = "overrides"
        [[override]]
        case = "L0373_mixd"
        keys = ['fixed."ses".estimate']
        rtol = 1e-3
        reason = "test"
    '''))
    with pytest.raises(FixtureError, match="names case 'L0373_mixd'"):
        load_references(tmp_path)


def test_the_seed_directory_accounts_for_every_file():
    files = sorted(p.relative_to(FIXTURE_ROOT) for p in FIXTURE_ROOT.rglob("*.toml"))
    refs = load_references()
    cases = {Path(r.path).resolve().relative_to(FIXTURE_ROOT) for r in refs}
    others = set(files) - cases
    assert others == {Path("data_summaries.toml"), Path("seed_overrides.toml"), Path("MANIFEST.toml")}
    for r in refs:
        assert tomllib.loads(Path(r.path).read_text(encoding="utf-8"))["case"]["numbers"] == len(r.values)
        if r.needs_engine:
            assert r.engines == ("lme4", "statsmodels"), r.case


def test_no_verdict_is_a_missing_row():
    # The guard behind "never fewer numbers than the fixtures hold": a number that got no
    # verdict for an engine becomes a missing row (validate then exits 1).
    ref = load_reference(SEED / "L0353_estat_icc.toml")
    judged = crosscheck(ref, {"statsmodels": {v.key: Actual(v.value) for v in ref.checked[1:]}})
    judged_without_missing = type(judged)(tuple(r for r in judged.rows if r.status != "missing"))
    extra = _not_judged([ref], ["statsmodels"], judged_without_missing)
    assert [r.key for r in extra.rows] == [ref.checked[0].key]
    assert extra.rows[0].status == "missing" and not extra.ok


# --- engines ---------------------------------------------------------------------------
_BLOCK_RPY2 = '''\
import sys
class _Block:
    """Make rpy2 unimportable: this process behaves like a machine without R."""
    def find_spec(self, name, path=None, target=None):
        if name == "rpy2" or name.startswith("rpy2."):
            raise ImportError("rpy2 is blocked in this test process")
        return None
sys.meta_path.insert(0, _Block())
'''


def _run_without_r(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(_BLOCK_RPY2)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_missing_engine_fails_validate(tmp_path):
    # Before: with lme4 unavailable, validate ran statsmodels alone and exited 0.
    probe = _run_without_r(tmp_path, "-c", "from hlmbridge.engines import available_engines as a; print(a())")
    assert probe.stdout.strip() == "['statsmodels']", probe.stderr  # the environment really lacks lme4
    named = _run_without_r(tmp_path, "-m", "hlmbridge.cli", "validate", "--case", "L0174_mixed", "--quiet")
    assert named.returncode == 2, named.stdout + named.stderr
    assert "engine lme4 cannot run here, and the fixtures name it" in named.stderr
    assert "Traceback" not in named.stderr and len(named.stderr.strip().splitlines()) == 1
    asked = _run_without_r(tmp_path, "-m", "hlmbridge.cli", "validate", "--case", "L0174_mixed", "--engine", "lme4",
                           "--engine", "statsmodels", "--quiet")
    assert asked.returncode == 2 and "engine lme4 was asked for but cannot run here" in asked.stderr
    chosen = _run_without_r(tmp_path, "-m", "hlmbridge.cli", "validate", "--case", "L0174_mixed", "--engine",
                            "statsmodels", "--quiet")
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr  # an explicit choice, shown in the summary
    assert "statsmodels" in chosen.stdout.splitlines()[-1] and "lme4" not in chosen.stdout.splitlines()[-1]


def test_case_restricted_to_other_engines_is_not_silently_skipped(tmp_path, capsys):
    texts = _copy(tmp_path, M1)
    text = texts[M1].replace('engines = ["lme4", "statsmodels"]', 'engines = ["lme4"]')
    (tmp_path / f"{M1}.toml").write_text(text)
    update_manifest(tmp_path)
    assert load_reference(tmp_path / f"{M1}.toml").engines == ("lme4",)
    rep = validate(tmp_path, engines=["statsmodels"])
    assert not rep.ok and {r.status for r in rep.rows} == {"missing"}
    assert "none of them was chosen" in rep.rows[0].reason


# --- tolerances: each number on the scale of its conclusions ----------------------------
def _shift_printed(text: str, printed: str, new: str) -> str:
    old = f'printed = "{printed}", value = {float(printed.replace(",", ""))!r}'
    assert old in text, old
    return text.replace(old, f'printed = "{new}", value = {float(new.replace(",", ""))!r}')


def test_loglik_moved_by_2_2_fails(tmp_path, capsys):
    # Before: -23320.502 moved by 2.2 (an LR chi2 shift of 4.4) was "within" at rtol 1e-4.
    texts = _copy(tmp_path, M1)
    (tmp_path / f"{M1}.toml").write_text(_shift_printed(texts[M1], "-23320.502", "-23318.302"))
    update_manifest(tmp_path)
    code, out, _ = _validate_cli(capsys, "--fixtures", str(tmp_path), "--engine", "statsmodels")
    assert code == 1
    row = next(t for t in out.splitlines() if "header.loglik" in t)
    assert row.startswith("mismatch") and "atol=0.01" in row


def test_absolute_scales_in_crosscheck():
    ref = load_reference(SEED / "L0227_ereturn.toml")  # e(ll) -23557.9..., e(chi2_c) 983.92...
    exact = {v.key: Actual(v.value) for v in ref.checked}

    def status(key: str, delta: float) -> str:
        act = dict(exact)
        act[key] = Actual(exact[key].value + delta)
        return next(r.status for r in crosscheck(ref, {"e": act}).rows if r.key == key)

    assert status('ereturn."e(ll)"', 0.009) == "within" and status('ereturn."e(ll)"', 0.011) == "mismatch"
    assert status('ereturn."e(ll)"', 2.2) == "mismatch"  # rtol 1e-4 would have allowed 2.36
    assert status('ereturn."e(chi2_c)"', 0.019) == "within" and status('ereturn."e(chi2_c)"', 0.021) == "mismatch"
    ic = load_reference(SEED / "L0593_estat_ic.toml")
    aic = ic.get("ic.aic")
    row = crosscheck(ic, {"e": {**{v.key: Actual(v.value) for v in ic.checked}, "ic.aic": Actual(aic.value + 0.5)}})
    assert next(r for r in row.rows if r.key == "ic.aic").status == "mismatch"  # rtol would allow 4.7


def test_coefficient_judged_against_its_standard_error():
    ref = load_reference(SEED / f"{M1}.toml")
    key = 'fixed."_cons".estimate'  # 12.65762, SE .1873212
    exact = {v.key: Actual(v.value) for v in ref.checked}
    v = ref.get(key).value
    # relative difference 5e-5 (inside rtol 1e-4) but 3.4e-3 standard errors: a mismatch now
    row = next(r for r in crosscheck(ref, {"e": {**exact, key: Actual(v * (1 + 5e-5), 0.1873212)}}).rows
               if r.key == key)
    assert row.status == "mismatch" and row.diff_in_se > 1e-3
    row = next(r for r in crosscheck(ref, {"e": {**exact, key: Actual(v + 1e-4, 0.1873212)}}).rows if r.key == key)
    assert (row.status, row.rule) == ("within", "se=0.001")


def test_p_values_are_absolute():
    ref = load_reference(SEED / "L0227_ereturn.toml")
    key = 'ereturn."e(p_c)"'  # 2.8e-216: any tiny tail area says the same
    exact = {v.key: Actual(v.value) for v in ref.checked}
    row = next(r for r in crosscheck(ref, {"e": {**exact, key: Actual(5e-216)}}).rows if r.key == key)
    assert (row.status, row.rule) == ("within", "atol=0.0001")
    row = next(r for r in crosscheck(ref, {"e": {**exact, key: Actual(2e-4)}}).rows if r.key == key)
    assert row.status == "mismatch"


def test_relative_tolerance_on_absolute_scales_is_refused(tmp_path):
    texts = _copy(tmp_path, M1)
    for cls in ABSOLUTE_CLASSES:
        t = DEFAULT_TOLERANCES[cls]
        assert t.rtol == 0 and t.atol > 0 and "absolute" in t.reason
        text = texts[M1].replace(f"[tolerance.{cls}]\n", f"[tolerance.{cls}]\nrtol = 1e-4\n")
        (tmp_path / f"{M1}.toml").write_text(text)
        with pytest.raises(FixtureError, match="relative tolerance"):
            load_reference(tmp_path / f"{M1}.toml")
    row = texts[M1].replace('loglik = { printed = "-23320.502", value = -23320.502, line = 389 }',
                            'loglik = { printed = "-23320.502", value = -23320.502, line = 389, rtol = 1e-3, '
                            'reason = "x" }')
    (tmp_path / f"{M1}.toml").write_text(row)
    with pytest.raises(FixtureError, match="header.loglik: a relative tolerance"):
        load_reference(tmp_path / f"{M1}.toml")


def test_every_seed_fixture_states_the_default_tolerances():
    for ref in load_references():
        for cls, tol in ref.tolerances.items():
            assert tol.reason, (ref.case, cls)
        loglik = [v for v in ref.values if v.qclass == "loglik"]
        for v in loglik:
            assert ref.tolerance(v).atol == 0.01 and not ref.tolerance(v).rtol
    assert not math.isnan(DEFAULT_TOLERANCES["chi2"].atol)


# --- every key known (issue 26 item 1) ---------------------------------------------------
def _insert_after(text: str, header: str, line: str) -> str:
    assert f"\n{header}\n" in text, header
    return text.replace(f"\n{header}\n", f"\n{header}\n{line}\n", 1)


@pytest.mark.parametrize("header, line, key", [
    ("[source]", 'comand = "mixed mathach ses || id:"', "comand"),
    ("[[models]]", 'nmae = "m1"', "nmae"),
    ("[meta]", 'titel = "Mixed-effects ML regression"', "titel"),
    ("[tolerance.estimate]", "sd = 0.5", "sd"),  # a misspelled `se`: before, silently the default
    ("[case]", "engine = [\"lme4\"]", "engine"),
])
def test_unknown_key_in_a_case_table_fails(tmp_path, capsys, header, line, key):
    # Before: the loader read only the keys it knew, so a misspelled one was passed over (exit 0).
    texts = _copy(tmp_path, M1)
    bad = _insert_after(texts[M1], header, line)
    (tmp_path / f"{M1}.toml").write_text(bad)
    code, out, err = _validate_cli(capsys, "--fixtures", str(tmp_path), "--engine", "statsmodels")
    assert code == 2, out[-300:] + err
    where = next(i for i, t in enumerate(bad.splitlines(), start=1) if t == line)
    assert f"{M1}.toml:{where}: unknown key {key!r}" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("old, new, key", [
    ('mean = ".274739"', 'mena = ".274739"', "mena"),  # a [[summary.row]]
    ('command = "sum"\n', 'comand = "sum"\n', "comand"),  # a [[summary]]
    ('note = "ids are strings', 'notes = "ids are strings', "notes"),  # [meta]
    ('cum = "', 'cumulative = "', "cumulative"),  # a [[tabulate.row]]
    ('format = "data_summaries"\n', 'format = "data_summaries"\nversion = 2\n', "version"),  # top level
])
def test_unknown_key_in_data_summaries_fails(tmp_path, capsys, old, new, key):
    # Before: data_summaries.toml was accepted by its `format` line alone; its keys were never read.
    _copy(tmp_path, M1)
    text = (FIXTURE_ROOT / "data_summaries.toml").read_text(encoding="utf-8")
    assert old in text
    bad = text.replace(old, new, 1)
    (tmp_path / "data_summaries.toml").write_text(bad)
    code, out, err = _validate_cli(capsys, "--fixtures", str(tmp_path), "--engine", "statsmodels")
    assert code == 2, out[-300:] + err
    where = next(i for i, t in enumerate(bad.splitlines(), start=1) if t.startswith(new.splitlines()[-1][:8]))
    assert f"data_summaries.toml:{where}: unknown key {key!r}" in err, err


def test_format_keys_are_defined_once():
    from hlmbridge.reference import fixtures

    keys = fixtures.FORMAT_KEYS
    assert set(fixtures._CELL_FIELDS) == set(keys["cell"]) and fixtures._OVERRIDE_FIELDS == keys["override"]
    # every key the bundled files use is known, and every table name the loaders use exists
    for ref in load_references():
        data = tomllib.loads(Path(ref.path).read_text(encoding="utf-8"))
        assert not fixtures.unknown_keys(data["source"], "source"), ref.case
        assert not fixtures.unknown_keys(data.get("meta", {}), "meta"), ref.case


# --- a symlinked folder is refused, never skipped -----------------------------------------
def test_symlinked_subfolder_is_refused(tmp_path, capsys):
    # Before: rglob did not enter a symlinked folder, so a wrong number in it passed (exit 0).
    fx, elsewhere = tmp_path / "fx", tmp_path / "elsewhere"
    fx.mkdir()
    elsewhere.mkdir()
    _copy(fx, "L0174_mixed")
    texts = _copy(elsewhere, M1)
    (elsewhere / f"{M1}.toml").write_text(_shift_printed(texts[M1], "-23320.502", "-23318.302"))
    (fx / "more").symlink_to(elsewhere, target_is_directory=True)
    code, out, err = _validate_cli(capsys, "--fixtures", str(fx), "--engine", "statsmodels")
    assert code == 2, out[-300:] + err
    assert f"{fx / 'more'}: a symlinked folder" in err and len(err.strip().splitlines()) == 1


# --- the manifest: a deleted, copied or edited file fails (issue 26 items 1 and 2) -------
@pytest.fixture()
def fixture_set(tmp_path) -> Path:
    """A copy of the bundled fixture set, manifest included."""
    import shutil

    root = tmp_path / "stata"
    shutil.copytree(FIXTURE_ROOT, root)
    return root


def _validate_set(capsys, root: Path, *extra: str) -> tuple[int, str, str]:
    return _validate_cli(capsys, "--fixtures", str(root), "--case", "L0174_mixed", "--engine", "statsmodels", *extra)


def test_bundled_manifest_lists_every_file():
    from hlmbridge.reference.fixtures import fixture_files
    from hlmbridge.reference.manifest import MANIFEST_NAME, check_manifest, read_manifest

    check_manifest(FIXTURE_ROOT)
    listed = read_manifest(FIXTURE_ROOT / MANIFEST_NAME)
    files = {p.relative_to(FIXTURE_ROOT).as_posix() for p in fixture_files(FIXTURE_ROOT)} - {MANIFEST_NAME}
    assert set(listed) == files
    refs = load_references()
    assert {e.case: e.numbers for e in listed.values() if e.case} == {r.case: len(r.values) for r in refs}
    assert listed["seed_overrides.toml"].format == "overrides"


def test_deleted_case_file_fails(fixture_set, capsys):
    # Before: validate loaded whatever files were there; a deleted case was simply not checked (exit 0).
    assert _validate_set(capsys, fixture_set)[0] == 0
    (fixture_set / "seed" / f"{M1}.toml").unlink()
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"seed/{M1}.toml is missing (the manifest lists it: case {M1}, 32 numbers)" in err
    assert f"hlmbridge validate --fixtures {fixture_set} --update-manifest" in err
    # a deliberate deletion is accepted, and said
    code, _, err = _validate_set(capsys, fixture_set, "--update-manifest")
    assert code == 0 and f"manifest: removed seed/{M1}.toml (case {M1}, 32 numbers)" in err, err
    assert _validate_set(capsys, fixture_set)[0] == 0


def test_case_copied_under_a_new_consistent_name_fails(fixture_set, capsys):
    # Before: a copy named L0374_mixed.toml with name = "L0374_mixed" loaded as one more case (exit 0).
    text = (fixture_set / "seed" / f"{M1}.toml").read_text(encoding="utf-8")
    copy = text.replace(f'name = "{M1}"', 'name = "L0374_mixed"')
    (fixture_set / "seed" / "L0374_mixed.toml").write_text(copy)
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and "comes from the same mixed output as case 'L0373_mixed'" in err, err
    # ... and with its [source] line moved to match the new name, the manifest still has no such file
    (fixture_set / "seed" / "L0374_mixed.toml").write_text(copy.replace("line = 373\n", "line = 374\n", 1))
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and "seed/L0374_mixed.toml is not in the manifest" in err, err


def test_edited_file_fails_even_inside_tolerance(fixture_set, capsys):
    # A number moved within its tolerance, or a comment: no verdict changes, but the file did.
    p = fixture_set / "seed" / f"{M1}.toml"
    p.write_text(_shift_printed(p.read_text(encoding="utf-8"), "-23320.502", "-23320.501"))
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and f"seed/{M1}.toml changed (case {M1}, 32 numbers when the manifest was written" in err, err
    (fixture_set / "logs" / "000_b67aa17e87dadab7.txt").write_text("edited\n")
    code, _, err = _validate_set(capsys, fixture_set)
    assert "2 file(s) differ from the manifest" in err and "logs/000_b67aa17e87dadab7.txt changed" in err


def test_manifest_itself_is_checked(fixture_set, capsys):
    m = fixture_set / "MANIFEST.toml"
    text = m.read_text(encoding="utf-8")
    m.write_text(text.replace("numbers = 568", "numbers = 567", 1))
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and "numbers = 567, but the [[file]] entries add up to 568" in err, err
    m.write_text(text.replace('path = "seed_prose.toml"', 'path = "seed_prose.toml"\nsha = "x"', 1))
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and "unknown key 'sha'" in err, err
    m.unlink()
    code, _, err = _validate_set(capsys, fixture_set)
    assert code == 2 and "no MANIFEST.toml here or in a folder above" in err, err


def test_a_subfolder_is_checked_against_the_sets_manifest(fixture_set, capsys):
    (fixture_set / "seed" / "L0988_lrtest.toml").unlink()
    code, _, err = _validate_cli(capsys, "--fixtures", str(fixture_set / "seed"), "--case", "L0174_mixed",
                                 "--engine", "statsmodels")
    assert code == 2 and "seed/L0988_lrtest.toml is missing" in err, err
    # one file named alone is checked against its entry in the set's manifest
    p = fixture_set / "seed" / "L0174_mixed.toml"
    p.write_text(p.read_text(encoding="utf-8").replace("# Do not edit by hand", "# Edited by hand"))
    code, _, err = _validate_cli(capsys, "--fixtures", str(p), "--engine", "statsmodels")
    assert code == 2 and "1 file(s) differ" in err and "seed/L0174_mixed.toml changed" in err, err


def test_import_stata_records_its_files_in_the_manifest(tmp_path, fixture_set):
    from hlmbridge.reference.fixtures import import_stata
    from hlmbridge.reference.manifest import check_manifest, read_manifest

    log = FIXTURE_ROOT / "logs" / "000_b67aa17e87dadab7.txt"
    (tmp_path / "MANIFEST.toml").write_text('[tool]\nname = "another project\'s file"\n')  # not ours: not used
    paths, _ = import_stata(log, tmp_path / "new")
    listed = read_manifest(tmp_path / "new" / "MANIFEST.toml")
    assert sorted(listed) == sorted(p.name for p in paths)
    assert listed[f"{M1}.toml"].case == M1 and listed[f"{M1}.toml"].numbers == 32
    check_manifest(tmp_path / "new")
    # re-importing into a set's sub-folder updates that set's manifest, and leaves it as committed
    before = (fixture_set / "MANIFEST.toml").read_bytes()
    import_stata(log, fixture_set / "seed", overrides=fixture_set / "seed_overrides.toml")
    assert (fixture_set / "MANIFEST.toml").read_bytes() == before
    assert not (fixture_set / "seed" / "MANIFEST.toml").exists()


# --- the README's import-stata -> validate round trip (issue 26 item 3) --------------------
#: The round trip exactly as README.md shows it, run from the repository root.
ROUND_TRIP = (
    "hlmbridge import-stata fixtures/stata/logs/000_b67aa17e87dadab7.txt --out myfixtures "
    "--overrides fixtures/stata/seed_overrides.toml",
    "hlmbridge validate --fixtures myfixtures --data fixtures/data/hsb.dta",
)


def _run_commands(cwd: Path, *commands: str) -> list[subprocess.CompletedProcess]:
    import shlex

    exe = Path(sys.executable).with_name("hlmbridge")
    assert exe.is_file(), f"no hlmbridge command beside {sys.executable}"
    out = []
    for c in commands:
        argv = shlex.split(c)
        assert argv[0] == "hlmbridge"
        out.append(subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, cwd=cwd, timeout=600))
    return out


@pytest.mark.requires_r
def test_readme_round_trip_passes(tmp_path):
    # The repository's fixtures/ seen from a scratch folder, so `myfixtures` is written there.
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures", target_is_directory=True)
    imp, val = _run_commands(tmp_path, *ROUND_TRIP)
    assert imp.returncode == 0, imp.stdout + imp.stderr
    assert "wrote 38 fixture files to myfixtures" in imp.stdout
    assert "recorded them in" in imp.stdout and (tmp_path / "myfixtures" / "MANIFEST.toml").is_file()
    for p in sorted((tmp_path / "myfixtures").glob("L*.toml")):  # the bundled seed fixtures, byte for byte
        assert p.read_bytes() == (SEED / p.name).read_bytes(), p.name
    assert val.returncode == 0, val.stdout[-3000:] + val.stderr[-2000:]
    last = val.stdout.strip().splitlines()[-1]
    assert last.startswith("OK: 571 numbers · lme4 ") and "statsmodels vs lme4" in last and last.endswith(
        " · 0 mismatch"), last


@pytest.mark.requires_r
def test_round_trip_without_overrides_says_what_to_do(tmp_path):
    # Without the overrides the two boundary fits' cov(ses,_cons) are 1.05e-3 of an SE from Stata's
    # (Stata stops short of the optimum there): a mismatch, never passed over, and the import and the
    # report say what it is and how a measured tolerance is recorded.
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures", target_is_directory=True)
    imp, val = _run_commands(tmp_path, ROUND_TRIP[0].split(" --overrides")[0], ROUND_TRIP[1])
    assert imp.returncode == 0, imp.stderr
    assert "note: L0815_mixed is a boundary fit" in imp.stdout and "(--overrides)" in imp.stdout
    assert val.returncode == 1
    bad = [t for t in val.stdout.splitlines() if t.startswith("mismatch")]
    assert len(bad) == 4 and all('random."cov(ses,_cons)".estimate' in t for t in bad), bad
    assert {t.split()[1] for t in bad} == {"L0815_mixed", "L0879_mixed"}
    assert "reason: boundary fit (the engine reports a singular fit)" in val.stdout
    assert "--overrides FILE" in val.stdout and "fixtures/stata/seed_overrides.toml" in val.stdout
