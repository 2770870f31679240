"""Issue 12, item 10: a built wheel carries r/hlmbridge.R and the bundled data and fixtures.

The wheel is built from the checkout (as ``pip install .`` does) and unpacked into a folder
outside it with ``pip install --no-deps --target``; a child Python started there must find
everything inside the installed package. ``scripts/smoke_wheel.sh`` (run by scripts/test.sh)
goes further: a fresh venv with the dependencies, fits on both engines, ``hlmbridge validate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from hlmbridge import datasets

REPO = Path(__file__).resolve().parents[1]
BUNDLED = [REPO / "r" / "hlmbridge.R", REPO / "r" / "hlmbridge_nlme.R",
           *sorted((REPO / "fixtures" / "data").rglob("*")), *sorted((REPO / "fixtures" / "stata").rglob("*"))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps",
                           "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("hlmbridge-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_carries_the_r_code_data_and_fixtures_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for src in (p for p in BUNDLED if p.is_file()):
            inside = "hlmbridge/_bundled/" + src.relative_to(REPO).as_posix()
            assert inside in names, f"{inside} missing from {wheel.name}"
            assert z.read(inside) == src.read_bytes(), f"{inside} differs from {src}"


@pytest.mark.slow
def test_installed_wheel_finds_everything_inside_the_package(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = textwrap.dedent("""
        import json, sys
        import hlmbridge
        from hlmbridge import datasets
        from hlmbridge.engines.lme4 import r_source_path
        from hlmbridge.reference.fixtures import FIXTURE_ROOT, load_references
        print(json.dumps({
            "package": hlmbridge.__file__,
            "rpy2_imported": "rpy2" in sys.modules,
            "paths": [str(p) for p in (datasets.hsb_path(), datasets.sleepstudy_path(), r_source_path(), FIXTURE_ROOT)],
            "hsb": list(datasets.hsb().shape),
            "cases": len(load_references()),
        }))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).is_relative_to(target)
    assert not got["rpy2_imported"]
    for path in got["paths"]:
        assert Path(path).is_relative_to(target / "hlmbridge" / "_bundled"), path
    assert got["hsb"] == [7185, 11]
    from hlmbridge.reference.fixtures import load_references

    assert got["cases"] == len(load_references()) > 0


def test_source_tree_is_read_directly_without_copies() -> None:
    """Editable install / checkout: no bundle inside the source package; the source tree is used."""
    assert not datasets.BUNDLE_DIR.exists(), "a build wrote hlmbridge/_bundled into the source tree"
    assert datasets.hsb_path().is_relative_to(REPO / "fixtures" / "data")
    from hlmbridge.engines.lme4 import r_source_path

    assert r_source_path() == REPO / "r" / "hlmbridge.R"


def test_missing_resource_names_both_places() -> None:
    from hlmbridge.errors import DataError

    with pytest.raises(DataError, match="neither in the installed package .* nor in a source tree"):
        datasets.resource_path("fixtures", "no-such-file.csv")
    assert datasets.resource_path("fixtures", "no-such-file.csv", required=False) == REPO / "fixtures" / "no-such-file.csv"


@pytest.mark.slow
def test_wheel_r_extra_admits_both_rpy2_series(wheel: Path) -> None:
    """``hlmbridge[r]`` must admit rpy2 3.5 (R < 4.5) and 3.6 (R >= 4.5): the lme4 engine's first
    use names the series for the R found (hlmbridge/engines/r_requirements.py)."""
    from hlmbridge.engines.r_requirements import RPY2_BEFORE_R45, RPY2_FROM_R45

    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        lines = z.read(meta).decode().splitlines()
    extra = [ln for ln in lines if ln.startswith("Requires-Dist:") and 'extra == "r"' in ln]
    assert extra == ['Requires-Dist: rpy2<3.7,>=3.5.17; extra == "r"'], extra
    assert RPY2_BEFORE_R45 == "rpy2>=3.5.17,<3.6" and RPY2_FROM_R45 == "rpy2>=3.6,<3.7"
