"""`import hlmbridge` and the bundled data must work on a machine without rpy2/R.

Each check runs in a fresh interpreter where ``rpy2`` is made unimportable
(``sys.modules["rpy2"] = None`` makes any ``import rpy2...`` raise ImportError).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run_without_rpy2(body: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nsys.modules['rpy2'] = None\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_blocking_really_blocks_rpy2():
    proc = _run_without_rpy2(
        """
        try:
            import rpy2.robjects
        except ImportError:
            print("blocked")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "blocked"


def test_import_hlmbridge_and_hsb_without_rpy2():
    proc = _run_without_rpy2(
        """
        import hlmbridge
        from hlmbridge import datasets
        from hlmbridge.data import summarize
        df = datasets.hsb()
        students = datasets.hsb("students")
        schools = datasets.hsb("schools")
        table = summarize(df)
        sleep = datasets.sleepstudy()
        assert not any(m == "rpy2" or m.startswith("rpy2.") for m in sys.modules
                       if sys.modules[m] is not None), "rpy2 was imported"
        print(len(df), len(students), len(schools), len(table), len(sleep))
        """
    )
    assert proc.returncode == 0, proc.stderr
    n_combined, n_students, n_schools, n_rows, n_sleep = map(int, proc.stdout.split())
    assert n_combined == n_students > n_schools > 0
    assert n_rows == 11
    assert n_sleep > 0


def test_plain_import_does_not_load_rpy2():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, hlmbridge; print('rpy2' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_import_stays_light():
    # Cold start (issue 13): scipy.stats (0.5 s), statsmodels, rpy2 and matplotlib load only
    # when a fit, a test or a plot needs them.
    code = ("import sys, hlmbridge; heavy = [m for m in ('scipy.stats', 'statsmodels', 'rpy2', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
