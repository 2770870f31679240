"""validate(): cases chosen, each (spec, engine) fitted once, statuses computed from real fits."""

from __future__ import annotations

import pytest

from hlmbridge.errors import UsageError
from hlmbridge.reference.fixtures import load_references
from hlmbridge.check.validate import select_cases, validate


def test_select_cases_patterns_and_errors():
    refs = load_references()
    assert {r.case for r in select_cases(refs, ["L0*_lrtest"])} == {"L0631_lrtest", "L0781_lrtest", "L0988_lrtest"}
    with pytest.raises(UsageError, match="valid cases"):
        select_cases(refs, ["nope"])


def test_validate_data_cases_need_no_engine():
    from hlmbridge.engines import available_engines

    if not available_engines():
        pytest.skip("no engine available")
    rep = validate(cases=["L0116_tab", "L0130_summarize"], engines=[available_engines()[0]])
    assert rep.ok, rep.render()
    assert {r.case for r in rep.rows} == {"L0116_tab", "L0130_summarize"}


def test_validate_statsmodels_di_and_prose():
    from hlmbridge.engines import available_engines

    if "statsmodels" not in available_engines():
        pytest.skip("statsmodels engine unavailable")
    fits = []
    rep = validate(cases=["L0486_di", "L0489_di", "L0492_di", "seed_prose"], engines=["statsmodels"],
                   progress=lambda d, t, label: fits.append(label))
    assert len(fits) == 2  # base and ses models, each fitted once
    assert rep.ok, rep.render()


# --- the README's validate line is what validate prints (issue 26 item 4) ----------------
def _readme_validate_line() -> str:
    """The line README.md quotes after "`bash scripts/validate.sh` ends with", unwrapped."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"`bash scripts/validate\.sh` ends with\s+`([^`]+)`", readme)
    assert len(found) == 1, f"README quotes the validate line {len(found)} times"
    return " ".join(found[0].split())


@pytest.mark.requires_r
def test_readme_validate_line_is_what_validate_prints():
    # Before: README said "statsmodels vs lme4 433 match/within, 2 explained" while validate printed 435 and 0.
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("hlmbridge")  # what scripts/validate.sh runs: .venv/bin/hlmbridge validate
    assert exe.is_file(), f"no hlmbridge command beside {sys.executable}"
    p = subprocess.run([str(exe), "validate"], capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    printed = p.stdout.strip().splitlines()[-1]
    assert printed.startswith("OK: ") and "lme4" in printed and "statsmodels vs lme4" in printed, printed
    assert _readme_validate_line() == printed


# --- the README's Stata 18 round trip prints what README shows (issue 21, issue 26) -------
@pytest.mark.requires_r
def test_readme_stata18_round_trip_is_what_it_prints(tmp_path):
    """The code block under "### Your own Stata log, any version": its two commands, run as
    written (in a scratch folder for ``--out``), end with the OK line the block shows."""
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Your own Stata log, any version", 1)[1]
    block = re.search(r"```\n(.*?)```", section, flags=re.S).group(1).splitlines()
    commands = [ln for ln in block if ln.startswith("hlmbridge ")]
    shown = [ln for ln in block if ln.startswith("OK: ")]
    assert len(commands) == 2 and len(shown) == 1, block
    exe = Path(sys.executable).with_name("hlmbridge")
    for cmd in commands:
        argv = shlex.split(cmd)
        argv = [str(root / a) if a.startswith("fixtures/") else str(tmp_path / a) if a == "my_cases" else a
                for a in argv[1:]]
        p = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    assert p.stdout.strip().splitlines()[-1] == shown[0]
