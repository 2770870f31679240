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


#: The environment of the scratch venv's processes: without the R_HOME and LD_LIBRARY_PATH that
#: starting R in this process (the requires_r gate) leaves behind (R's LD_LIBRARY_PATH puts the
#: system's libssl before Python's own: pip then has no ssl module).
_CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "R_HOME", "LD_LIBRARY_PATH")}


def _pip_venv(where: Path) -> Path:
    """A fresh virtualenv (no packages) in ``where``; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, capture_output=True, timeout=300,
                   env=_CLEAN_ENV)
    return where / "bin" / "python"


_SESSION_ERROR = (
    "import sys\n"
    "from hlmbridge.errors import EngineUnavailableError\n"
    "from hlmbridge.engines import r_session\n"
    "try:\n"
    "    r_session.session()\n"
    "except EngineUnavailableError as exc:\n"
    "    print('EngineUnavailableError:', exc)\n"
    "    sys.exit(0)\n"
    "print('no error')\n"
)


@pytest.mark.slow
@pytest.mark.requires_r
def test_rpy2_36_on_older_r_names_the_command_that_repairs_it(tmp_path: Path) -> None:
    """Issue 26, item 1: ``pip install 'hlmbridge[r]'`` gets the newest rpy2 (3.6); on R < 4.5 the
    first R use must say exactly what to run, and running that must leave an rpy2 that loads R
    (rpy2 3.6 on R >= 4.5 is the pair the [r] extra gives directly)."""
    r_version = subprocess.run(["Rscript", "--vanilla", "-e", "cat(as.character(getRversion()))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    if tuple(int(p) for p in r_version.split(".")[:2]) >= (4, 5):
        pytest.skip(f"R {r_version} is >= 4.5: rpy2 3.6, what `pip install 'hlmbridge[r]'` gets, is the right one")
    py = _pip_venv(tmp_path / "venv")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "rpy2>=3.6,<3.7"], capture_output=True, text=True,
                         timeout=600, env=_CLEAN_ENV)
    if pip.returncode != 0:
        pytest.skip(f"cannot install rpy2 3.6 into a scratch venv here (no package index?): {pip.stderr[-500:]}")
    env = dict(_CLEAN_ENV)
    env["PYTHONPATH"] = str(REPO)  # hlmbridge's session module needs neither numpy nor pandas
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    first = subprocess.run([str(py), "-c", _SESSION_ERROR], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    fix = (f"{py} -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && "
           f"{py} -m pip install 'rpy2>=3.5.17,<3.6'")
    assert first.stdout.startswith("EngineUnavailableError: rpy2 3.6."), first.stdout
    assert f"cannot load R {r_version}: rpy2 3.6 needs R >= 4.5" in first.stdout, first.stdout
    assert first.stdout.strip().endswith(fix), first.stdout

    # The advice rpy2's users find first ("pip install 'rpy2<3.6'") leaves a mix behind ...
    subprocess.run([str(py), "-m", "pip", "install", "-q", "rpy2>=3.5.17,<3.6"], capture_output=True, check=True,
                   timeout=600, env=_CLEAN_ENV)
    mixed = subprocess.run([str(py), "-c", _SESSION_ERROR], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=300)
    assert "(left behind by rpy2 3.6): this mix cannot be imported" in mixed.stdout, mixed.stdout + mixed.stderr
    assert mixed.stdout.strip().endswith(fix), mixed.stdout

    # ... and the command named repairs either state.
    repair = subprocess.run(["bash", "-c", fix], capture_output=True, text=True, timeout=600, env=_CLEAN_ENV)
    assert repair.returncode == 0, repair.stderr[-3000:]
    after = subprocess.run([str(py), "-c",
                            "from hlmbridge.engines.r_requirements import check\ncheck()\n"
                            "import rpy2.robjects as ro\nfrom importlib.metadata import version\n"
                            "print(version('rpy2'), ro.r('as.character(getRversion())')[0],"
                            " ro.r('isTRUE(requireNamespace(\"lme4\", quietly = TRUE))')[0])"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert after.returncode == 0, after.stderr[-3000:]
    version, r_seen, lme4 = after.stdout.split()
    assert version.startswith("3.5.") and r_seen == r_version and lme4 == "True", after.stdout


def test_no_code_reads_rpy2_dunder_version() -> None:
    """rpy2 3.6's ``rpy2`` is a namespace package with no ``__version__`` (3.5's had one): reading
    it made the lme4 engine fail with AttributeError on R >= 4.5, the pair ``hlmbridge[r]`` gives.
    The version comes from the distribution's metadata (``r_requirements.rpy2_version``)."""
    import re

    offenders = []
    for path in [*sorted((REPO / "hlmbridge").rglob("*.py")), *sorted((REPO / "scripts").glob("*"))]:
        text = path.read_text(encoding="utf-8")
        if re.search(r"""rpy2\.__version__|__import__\(["']rpy2["']\)\.__version__""", text):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
