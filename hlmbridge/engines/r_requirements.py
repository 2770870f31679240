"""Whether the installed rpy2 can load the R found here, checked before rpy2 is imported.

rpy2 3.6 calls ``R_getVar``, which R added in 4.5.0: on an older R, importing
``rpy2.rinterface`` fails with ``undefined symbol: R_getVar``. rpy2 3.5 does not work with
R >= 4.5. ``pip install 'hlmbridge[r]'`` installs the newest rpy2 (3.6, right for R >= 4.5),
and rpy2 3.6 is three distributions (``rpy2``, ``rpy2-rinterface``, ``rpy2-robjects``) where
3.5 was one: ``pip install 'rpy2<3.6'`` over a 3.6 leaves the 3.6 ``rpy2-rinterface`` and
``rpy2-robjects`` installed in the same ``rpy2/`` folder, and that mix cannot be imported.

:func:`check` reads the installed distributions' versions (their metadata on ``sys.path``,
nothing imported) and R's version (``R_HOME``, else ``R RHOME`` as rpy2 finds it, then the base
package's ``DESCRIPTION``), and raises :class:`~hlmbridge.errors.EngineUnavailableError` with
the exact command that installs the rpy2 series for this R: it uninstalls all three
distributions first, then installs, which works from any of those states (checked in
``tests/test_install.py`` in a scratch virtualenv). Nothing is checked when R cannot be
found: starting R then reports that (:mod:`hlmbridge.engines.r_session`).

Examples
--------
>>> from hlmbridge.engines.r_requirements import rpy2_requirement, problem
>>> rpy2_requirement((4, 2, 2))
'rpy2>=3.5.17,<3.6'
>>> rpy2_requirement((4, 5, 1))
'rpy2>=3.6,<3.7'
>>> problem((4, 2, 2), {"rpy2": "3.5.17", "rpy2-rinterface": None, "rpy2-robjects": None}) is None
True
>>> print(problem((4, 2, 2), {"rpy2": "3.6.9", "rpy2-rinterface": "3.6.7", "rpy2-robjects": "3.6.6"},
...               python="python3"))  # doctest: +NORMALIZE_WHITESPACE
rpy2 3.6.9 (rpy2-rinterface 3.6.7, rpy2-robjects 3.6.6) cannot load R 4.2.2: rpy2 3.6 needs
R >= 4.5 (on older R it fails with `undefined symbol: R_getVar`). Install the rpy2 series for
this R with: python3 -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && python3 -m pip
install 'rpy2>=3.5.17,<3.6'
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hlmbridge.errors import EngineUnavailableError

__all__ = ["DISTRIBUTIONS", "RPY2_BEFORE_R45", "RPY2_FROM_R45", "check", "installed_rpy2", "problem",
           "r_version", "repair_command", "rpy2_requirement", "rpy2_version"]

#: The rpy2 series for R 4.2-4.4 (3.5.17 is the first 3.5 that builds against R 4.4's headers).
RPY2_BEFORE_R45 = "rpy2>=3.5.17,<3.6"
#: The rpy2 series for R >= 4.5 (rpy2 3.6 needs R_getVar, new in R 4.5.0; 3.7 is untried).
RPY2_FROM_R45 = "rpy2>=3.6,<3.7"
#: The distributions rpy2 is installed as: 3.6 splits it into three; 3.5 is the first alone.
DISTRIBUTIONS = ("rpy2", "rpy2-rinterface", "rpy2-robjects")

Version = tuple[int, ...]


def _version(text: str | None) -> Version | None:
    """The leading numbers of a version string (``"3.6.0a2"`` -> (3, 6, 0)); None if none."""
    if not text:
        return None
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def rpy2_requirement(r: Version) -> str:
    """The pip requirement of the rpy2 series that loads R version ``r``."""
    return RPY2_FROM_R45 if r[:2] >= (4, 5) else RPY2_BEFORE_R45


def repair_command(r: Version, python: str | None = None) -> str:
    """The shell command that replaces whatever rpy2 is installed with the series for R ``r``.

    Uninstalling first matters: pip would otherwise keep ``rpy2-rinterface`` and
    ``rpy2-robjects`` 3.6 next to an rpy2 3.5 (or, upgrading 3.5 to 3.6, delete files the new
    distributions had just written). pip skips, with a warning, a distribution that is not
    installed.

    >>> repair_command((4, 5, 0), python="python3")
    "python3 -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && python3 -m pip install 'rpy2>=3.6,<3.7'"
    """
    py = shlex.quote(python if python is not None else (sys.executable or "python3"))
    return (f"{py} -m pip uninstall -y {' '.join(DISTRIBUTIONS)} && "
            f"{py} -m pip install {shlex.quote(rpy2_requirement(r))}")


_DIST_INFO = re.compile(r"^(rpy2(?:[-_.]rinterface|[-_.]robjects)?)-([^-]+)\.(?:dist-info|egg-info)$", re.IGNORECASE)


def installed_rpy2() -> dict[str, str | None]:
    """The installed version of each of :data:`DISTRIBUTIONS` (None when not installed), read
    from the distributions' metadata on ``sys.path`` without importing them.

    As ``importlib.metadata.version`` finds them (the first ``*.dist-info``/``*.egg-info`` along
    ``sys.path``, its ``Version:``), without importing ``importlib.metadata`` (45 ms here, a
    twentieth of the lme4 engine's cold start).

    >>> from importlib import metadata
    >>> installed_rpy2()["rpy2"] == metadata.version("rpy2")
    True
    """
    out: dict[str, str | None] = dict.fromkeys(DISTRIBUTIONS)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a folder that is gone
            continue
        for name in sorted(names):
            m = _DIST_INFO.match(name)
            if m is None:
                continue
            key = re.sub(r"[-_.]+", "-", m.group(1).lower())
            if out.get(key) is not None:
                continue
            out[key] = _metadata_version(Path(entry or ".", name)) or m.group(2)
        if all(v is not None for v in out.values()):
            break
    return out


def _metadata_version(folder: Path) -> str | None:
    """The ``Version:`` of a distribution's METADATA (dist-info) or PKG-INFO (egg-info)."""
    for file in ("METADATA", "PKG-INFO"):
        try:
            with open(folder / file, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():  # the headers end at the first blank line
                        break
        except OSError:
            continue
    return None


def rpy2_version() -> str:
    """The installed rpy2's version, from its distribution's metadata: rpy2 3.6's ``rpy2`` is a
    namespace package without ``__version__`` (3.5's had one); "unknown" when not installed.

    >>> rpy2_version() == (installed_rpy2()["rpy2"] or installed_rpy2()["rpy2-robjects"] or "unknown")
    True
    """
    found = installed_rpy2()
    return found["rpy2"] or found["rpy2-robjects"] or "unknown"


def r_version(r_home: str | None = None) -> Version | None:
    """The version of the R that rpy2 would load: ``r_home``, else ``R_HOME``, else what
    ``R RHOME`` prints (rpy2's own order); read from the base package's ``DESCRIPTION``.
    None when no R is found there (starting R then says what is wrong)."""
    home = r_home or os.environ.get("R_HOME")
    if not home:
        exe = shutil.which("R")
        if exe is None:
            return None
        try:
            said = subprocess.run([exe, "RHOME"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = said.stdout.strip().splitlines()
        if said.returncode != 0 or not lines:
            return None
        home = lines[-1].strip()
    try:
        text = (Path(home) / "library" / "base" / "DESCRIPTION").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"^Version:\s*(\S+)", text, flags=re.MULTILINE)
    return _version(m.group(1)) if m else None


def _show(v: Version) -> str:
    return ".".join(map(str, v))


def problem(r: Version, installed: dict[str, str | None], python: str | None = None) -> str | None:
    """Why the installed rpy2 (``installed``, as :func:`installed_rpy2` gives it) cannot load
    R version ``r``, with the command that repairs it; None when it can.

    >>> problem((4, 5, 0), {"rpy2": "3.6.9", "rpy2-rinterface": "3.6.7", "rpy2-robjects": "3.6.6"}) is None
    True
    >>> print(problem((4, 2, 2), {"rpy2": "3.5.17", "rpy2-rinterface": "3.6.7", "rpy2-robjects": None},
    ...               python="py").split(":")[0])
    rpy2 3.5.17 is installed together with rpy2-rinterface 3.6.7 (left behind by rpy2 3.6)
    """
    fix = repair_command(r, python)
    have = {k: v for k, v in installed.items() if v is not None}
    if not have:
        return f"rpy2 is not installed; install the rpy2 series for R {_show(r)} with: {fix}"
    listed = ", ".join(f"{k} {v}" for k, v in have.items())
    series = {k: (_version(v) or (0,))[:2] >= (3, 6) for k, v in have.items()}
    if len(set(series.values())) > 1:
        main = have.get("rpy2")
        if main is not None and not series["rpy2"]:
            left = ", ".join(f"{k} {v}" for k, v in have.items() if series[k])
            what = f"rpy2 {main} is installed together with {left} (left behind by rpy2 3.6)"
        else:
            what = f"the rpy2 distributions installed do not belong together ({listed})"
        return f"{what}: this mix cannot be imported. Install the rpy2 series for R {_show(r)} with: {fix}"
    if "rpy2" in have:
        rest = ", ".join(f"{k} {v}" for k, v in have.items() if k != "rpy2")
        listed = f"rpy2 {have['rpy2']}" + (f" ({rest})" if rest else "")
    if all(series.values()) and r[:2] < (4, 5):
        return (f"{listed} cannot load R {_show(r)}: rpy2 3.6 needs R >= 4.5 (on older R it fails with "
                f"`undefined symbol: R_getVar`). Install the rpy2 series for this R with: {fix}")
    if not any(series.values()) and r[:2] >= (4, 5):
        return (f"{listed} cannot load R {_show(r)}: rpy2 3.5 does not work with R >= 4.5. "
                f"Install the rpy2 series for this R with: {fix}")
    return None


_CHECKED: list[bool] = []


def check() -> None:
    """Raise :class:`EngineUnavailableError` naming the repair command when the installed rpy2
    cannot load this R (see the module docstring); called once per process, before rpy2 is
    first imported (``r_session``). A passed check is remembered for the process."""
    if _CHECKED:
        return
    if "rpy2.rinterface" in sys.modules:  # imported already: whatever it is, it loaded
        _CHECKED.append(True)
        return
    r = r_version()
    if r is None:
        return
    said = problem(r, installed_rpy2())
    if said is not None:
        raise EngineUnavailableError(said)
    _CHECKED.append(True)
