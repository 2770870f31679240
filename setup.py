"""Build hook: the wheel carries copies of ``r/hlmbridge.R`` and the bundled data.

The top-level ``r/`` and ``fixtures/`` folders stay the source of truth; building a wheel
(``pip install .``, ``pip wheel .``) copies them into ``hlmbridge/_bundled/`` in the build
directory, never into the source tree. An editable install (``pip install -e .``) copies
nothing: ``hlmbridge.datasets.resource_path`` then reads the source tree itself.
Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What the wheel carries, relative to the repository root (files or whole folders).
BUNDLED = ("r/hlmbridge.R", "r/hlmbridge_nlme.R", "fixtures/data", "fixtures/stata")
TARGET = Path("hlmbridge") / "_bundled"


class BuildPyWithBundle(build_py):
    """build_py, then copy BUNDLED into the built package (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        bundle = Path(self.build_lib) / TARGET
        shutil.rmtree(bundle, ignore_errors=True)  # no stale copies from an earlier build
        for rel in BUNDLED:
            source = ROOT / rel
            target = bundle / rel
            if not source.exists():
                raise FileNotFoundError(f"cannot bundle {rel}: {source} is missing")
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildPyWithBundle})
