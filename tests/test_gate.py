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
    assert others == {Path("data_summaries.toml"), Path("seed_overrides.toml")}
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
