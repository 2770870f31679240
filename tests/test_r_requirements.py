"""Issue 26, item 1: the installed rpy2 must match the R found, and the error names the fix.

rpy2 3.6 cannot load R < 4.5 (``undefined symbol: R_getVar``) and rpy2 3.5 cannot load
R >= 4.5; ``pip install 'rpy2<3.6'`` over a 3.6 leaves ``rpy2-rinterface``/``rpy2-robjects``
3.6 behind. :mod:`hlmbridge.engines.r_requirements` reads the installed versions and R's
version before rpy2 is imported. The states below are the ones pip really produces (seen in a
scratch virtualenv, and reproduced for real in ``tests/test_install.py``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hlmbridge.engines.r_requirements import problem, r_version, repair_command

REPO = Path(__file__).resolve().parents[1]
NEW = {"rpy2": "3.6.9", "rpy2-rinterface": "3.6.7", "rpy2-robjects": "3.6.6"}   # pip install rpy2 (2026)
OLD = {"rpy2": "3.5.17", "rpy2-rinterface": None, "rpy2-robjects": None}        # pip install 'rpy2<3.6'
MIXED = {"rpy2": "3.5.17", "rpy2-rinterface": "3.6.7", "rpy2-robjects": "3.6.6"}  # the second over the first
NONE = {"rpy2": None, "rpy2-rinterface": None, "rpy2-robjects": None}
FIX_OLD_R = "py -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && py -m pip install 'rpy2>=3.5.17,<3.6'"
FIX_NEW_R = "py -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && py -m pip install 'rpy2>=3.6,<3.7'"


@pytest.mark.parametrize(("r", "installed", "fix", "says"), [
    ((4, 2, 2), NEW, FIX_OLD_R, "rpy2 3.6.9 (rpy2-rinterface 3.6.7, rpy2-robjects 3.6.6) cannot load R 4.2.2: "
                               "rpy2 3.6 needs R >= 4.5 (on older R it fails with `undefined symbol: R_getVar`)"),
    ((4, 4, 3), MIXED, FIX_OLD_R, "rpy2 3.5.17 is installed together with rpy2-rinterface 3.6.7, rpy2-robjects "
                                  "3.6.6 (left behind by rpy2 3.6): this mix cannot be imported"),
    ((4, 5, 0), MIXED, FIX_NEW_R, "this mix cannot be imported"),
    ((4, 5, 1), OLD, FIX_NEW_R, "rpy2 3.5.17 cannot load R 4.5.1: rpy2 3.5 does not work with R >= 4.5"),
    ((4, 2, 2), NONE, FIX_OLD_R, "rpy2 is not installed"),
    ((4, 3, 0), {"rpy2": None, "rpy2-rinterface": "3.6.7", "rpy2-robjects": None}, FIX_OLD_R,
     "rpy2-rinterface 3.6.7 cannot load R 4.3.0"),
])
def test_a_wrong_rpy2_for_this_r_names_the_exact_repair(r, installed, fix, says) -> None:
    said = problem(r, installed, python="py")
    assert said is not None
    assert says in said
    assert said.endswith(f"with: {fix}")
    assert "\n" not in said  # the command line prints the first line of an error


@pytest.mark.parametrize(("r", "installed"), [((4, 2, 2), OLD), ((4, 4, 0), OLD), ((4, 5, 0), NEW), ((5, 0, 0), NEW)])
def test_the_right_rpy2_for_this_r_passes(r, installed) -> None:
    assert problem(r, installed) is None


def test_repair_command_names_this_python_quoted() -> None:
    assert repair_command((4, 2, 2), python="/opt/my env/bin/python") == (
        "'/opt/my env/bin/python' -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && "
        "'/opt/my env/bin/python' -m pip install 'rpy2>=3.5.17,<3.6'")


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs R (Rscript) to compare with")
def test_r_version_is_the_version_r_reports() -> None:
    said = subprocess.run(["Rscript", "--vanilla", "-e", "cat(as.character(getRversion()))"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert r_version() == tuple(int(p) for p in said.split("."))


def test_r_version_of_a_folder_without_r_is_none(tmp_path: Path) -> None:
    assert r_version(str(tmp_path)) is None


def test_install_script_and_smoke_script_use_the_same_rpy2_series() -> None:
    from hlmbridge.engines.r_requirements import RPY2_BEFORE_R45, RPY2_FROM_R45

    text = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    assert set(re.findall(r'RPY2_SPEC="([^"]+)"', text)) == {RPY2_BEFORE_R45, RPY2_FROM_R45}
    smoke = (REPO / "scripts" / "smoke_wheel.sh").read_text(encoding="utf-8")
    assert f'REPAIR="{repair_command((4, 2, 2), python="python")}"' in smoke  # the README's repair step
