"""The install layer: rpy2 really loads lme4, the requires_r gate, and test.sh's exit-5 rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()


@pytest.mark.requires_r
def test_rpy2_loads_lme4():
    import rpy2.robjects as ro

    ro.r("suppressPackageStartupMessages(library(lme4))")
    fitted = ro.r("nrow(lme4::sleepstudy)")[0]
    from hlmbridge import datasets

    assert int(fitted) == len(datasets.sleepstudy())


def _run_gate(ci: str) -> subprocess.CompletedProcess[str]:
    """Run test_rpy2_loads_lme4 through the real conftest with rpy2 unimportable."""
    code = (
        "import sys; sys.modules['rpy2'] = None\n"
        "import pytest\n"
        f"sys.exit(pytest.main([{str(THIS) + '::test_rpy2_loads_lme4'!r}, '-rsf', '-q',"
        " '-p', 'no:cacheprovider']))\n"
    )
    env = {**os.environ, "CI": ci}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def test_requires_r_gate_skips_with_reason_when_rpy2_missing():
    proc = _run_gate(ci="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
    assert "rpy2 cannot be imported" in proc.stdout


def test_requires_r_gate_fails_under_ci_when_rpy2_missing():
    proc = _run_gate(ci="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout  # pytest.fail in the setup fixture: an error, exit 1
    assert "CI=true, so R may not be skipped" in proc.stdout


@pytest.mark.slow
def test_test_sh_turns_no_tests_collected_into_failure():
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("scripts/test.sh needs the repository's .venv (run bash scripts/install.sh)")
    proc = subprocess.run(
        ["bash", "scripts/test.sh", "-q", "-p", "no:cacheprovider", "-k", "no_test_has_this_name"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "collected no tests" in proc.stderr


def test_ci_entry_point_runs_exactly_the_readme_test_command():
    run = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert run.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in run
    assert "exec bash scripts/test.sh\n" in run
    assert "bash scripts/test.sh\n" in readme
    assert os.access(REPO / ".ci" / "run", os.X_OK)
