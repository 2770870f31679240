"""Issue 13, cold start: a light ``import hlmbridge`` and the stamp of the R start check.

``import hlmbridge`` loads the errors and the model spec only; every other public name loads
on first use. The lme4 engine checks in a child process that R starts before it loads R into
the process (a wrong ``R_HOME`` would otherwise abort it); a passed check is recorded in a
stamp under ``$XDG_CACHE_HOME/hlmbridge`` keyed on the set-up, so a later process skips the
child, and a changed set-up (another ``R_HOME``) checks again. Each probe runs a fresh Python
with its own cache folder, counting the check's child processes, and starts the real R.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)


# ---------------------------------------------------------------- import hlmbridge

def test_import_loads_no_pandas_and_every_public_name_resolves() -> None:
    proc = _python("""
        import sys, hlmbridge
        print("loaded", sorted(m for m in ("pandas", "numpy", "scipy") if m in sys.modules))
        missing = [n for n in hlmbridge.__all__ if getattr(hlmbridge, n, None) is None]
        print("missing", missing)
        print("dir", set(hlmbridge.__all__) <= set(dir(hlmbridge)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["loaded []", "missing []", "dir True"]


def test_fit_stays_the_function_when_its_module_is_imported_first() -> None:
    # Importing the submodule hlmbridge.fit binds it on the package, where the function belongs.
    proc = _python("""
        import sys
        import hlmbridge.fit
        import hlmbridge
        from hlmbridge import fit
        print(callable(hlmbridge.fit), hlmbridge.fit is fit, hlmbridge.fit is sys.modules["hlmbridge.fit"].fit)
        print(hlmbridge.engines.ENGINES, hlmbridge.datasets.__name__)
        try:
            hlmbridge.no_such_name
        except AttributeError as exc:
            print("AttributeError", exc)
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "True True True"
    assert lines[1] == "('lme4', 'statsmodels', 'nlme', 'quadrature') hlmbridge.datasets"
    assert lines[2] == "AttributeError module 'hlmbridge' has no attribute 'no_such_name'"


# ---------------------------------------------------------------- the R start check's stamp

# Counts the check's child processes (Python started with -c), then starts R and fits.
_CHECK_AND_FIT = """
    import os, subprocess, sys
    children = []
    run = subprocess.run
    def counting_run(args, *a, **k):
        if isinstance(args, list) and args[:2] == [sys.executable, "-c"]:
            children.append(args)
        return run(args, *a, **k)
    subprocess.run = counting_run
    import hlmbridge
    from hlmbridge.errors import EngineUnavailableError
    before = os.environ.get("LD_LIBRARY_PATH")
    try:
        res = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", hlmbridge.datasets.sleepstudy(), engine="lme4")
        print("fit", round(res.loglik, 4))
    except EngineUnavailableError as exc:
        print("EngineUnavailableError", exc)
    print("children", len(children))
    print("ld_path_restored", os.environ.get("LD_LIBRARY_PATH") == before)
    print("still alive")
"""


def _stamps(cache: Path) -> list[Path]:
    return sorted((cache / "hlmbridge").glob("r-starts-*.json"))


@pytest.mark.requires_r
def test_a_passed_start_check_is_kept_and_a_changed_r_home_checks_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "R_HOME"}
    env["XDG_CACHE_HOME"] = str(cache)

    first = _python(_CHECK_AND_FIT, env=env)
    assert first.returncode == 0, first.stderr
    assert "children 1" in first.stdout and "ld_path_restored True" in first.stdout, first.stdout
    loglik = [ln for ln in first.stdout.splitlines() if ln.startswith("fit ")]
    assert loglik, first.stdout
    stamps = _stamps(cache)
    assert len(stamps) == 1
    recorded = json.loads(stamps[0].read_text(encoding="utf-8"))
    assert recorded["key"]["R_HOME"] is None and isinstance(recorded["ld_library_path"], str)

    again = _python(_CHECK_AND_FIT, env=env)  # the same set-up: no child, and R starts as before
    assert again.returncode == 0, again.stderr
    assert "children 0" in again.stdout and loglik[0] in again.stdout, again.stdout
    assert "ld_path_restored True" in again.stdout

    # A wrong R_HOME is another set-up: checked again, a clear error, the process lives on.
    wrong = _python(_CHECK_AND_FIT, env=dict(env, R_HOME=str(tmp_path / "no-R-here")))
    assert wrong.returncode == 0, wrong.stderr
    assert "EngineUnavailableError" in wrong.stdout and "R_HOME" in wrong.stdout and "R RHOME" in wrong.stdout
    assert "children 1" in wrong.stdout and wrong.stdout.strip().endswith("still alive")
    assert len(_stamps(cache)) == 1  # a failed check leaves no stamp

    # R_HOME set to R's real home is yet another key: checked once, then kept beside the first.
    home = subprocess.run(["R", "RHOME"], capture_output=True, text=True, check=True).stdout.strip()
    right = _python(_CHECK_AND_FIT, env=dict(env, R_HOME=home))
    assert right.returncode == 0, right.stderr
    assert "children 1" in right.stdout and loglik[0] in right.stdout, right.stdout
    assert len(_stamps(cache)) == 2


@pytest.mark.requires_r
def test_a_stamp_whose_key_does_not_match_is_not_trusted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "R_HOME"}
    env["XDG_CACHE_HOME"] = str(cache)
    assert _python(_CHECK_AND_FIT, env=env).returncode == 0
    (stamp,) = _stamps(cache)
    recorded = json.loads(stamp.read_text(encoding="utf-8"))
    recorded["key"]["R_HOME"] = "/somewhere/else"  # the file name no longer matches its content
    stamp.write_text(json.dumps(recorded), encoding="utf-8")
    proc = _python(_CHECK_AND_FIT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "children 1" in proc.stdout and "fit " in proc.stdout, proc.stdout
    assert json.loads(stamp.read_text(encoding="utf-8"))["key"]["R_HOME"] is None  # rewritten

    stamp.write_text("not json", encoding="utf-8")  # a torn or foreign file: checked again
    proc = _python(_CHECK_AND_FIT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "children 1" in proc.stdout and "fit " in proc.stdout, proc.stdout
