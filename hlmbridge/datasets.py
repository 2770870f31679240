"""Bundled example data: High School and Beyond (HSB) and lme4's sleepstudy.

The files live in ``fixtures/data/`` at the repository root (the source of truth) and are
built by ``scripts/make_hsb_data.py`` from R's nlme and lme4; see ``fixtures/README.md`` for
provenance and checksums. A built wheel carries copies of them (and of ``r/hlmbridge.R`` and
the seed fixtures) in ``hlmbridge/_bundled/``; :func:`resource_path` looks there first, then
in the source tree (an editable install or a checkout).

Examples
--------
>>> from hlmbridge import datasets
>>> datasets.hsb("students").shape
(7185, 5)
>>> datasets.hsb().shape
(7185, 11)
>>> datasets.sleepstudy().shape
(180, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from hlmbridge.errors import DataError, UsageError

__all__ = ["BUNDLE_DIR", "DATA_DIR", "HSB_LEVELS", "SOURCE_ROOT", "hsb", "hsb_path", "resource_path",
           "sleepstudy", "sleepstudy_path"]

#: Copies of ``r/`` and ``fixtures/`` that the wheel build puts inside the package.
BUNDLE_DIR: Path = Path(__file__).resolve().parent / "_bundled"
#: The source tree's root (holds ``r/`` and ``fixtures/`` in a checkout or editable install).
SOURCE_ROOT: Path = Path(__file__).resolve().parent.parent


def resource_path(*parts: str, required: bool = True) -> Path:
    """A file or folder shipped with hlmbridge, e.g. ``resource_path("r", "hlmbridge.R")``.

    Looks inside the installed package first (``hlmbridge/_bundled/``, present in a wheel),
    then in the source tree (``r/``, ``fixtures/`` next to the package). With
    ``required=False`` a path found in neither place is returned as the source tree's
    (for defaults that are reported as missing only when used).

    Raises
    ------
    DataError
        ``required`` and neither place has it (names both, and how to reinstall).

    Examples
    --------
    >>> resource_path("fixtures", "data", "hsb.dta").name
    'hsb.dta'
    """
    places = [BUNDLE_DIR.joinpath(*parts), SOURCE_ROOT.joinpath(*parts)]
    for path in places:
        if path.exists():
            return path
    if not required:
        return places[1]
    raise DataError(
        f"bundled file missing: {'/'.join(parts)} is neither in the installed package ({places[0]}) nor in "
        f"a source tree ({places[1]}); reinstall hlmbridge (pip install .) or regenerate the data with "
        "scripts/make_hsb_data.py"
    )


#: Directory holding the bundled data files (the package's copy, else repo_root/fixtures/data).
DATA_DIR: Path = resource_path("fixtures", "data", required=False)

#: HSB level name -> file name.
HSB_LEVELS: dict[str, str] = {
    "students": "hsb1.dta",
    "schools": "hsb2.dta",
    "combined": "hsb.dta",
}

HsbLevel = Literal["students", "schools", "combined"]


def hsb_path(level: HsbLevel | str = "combined") -> Path:
    """Path of a bundled HSB file.

    Parameters
    ----------
    level : {"students", "schools", "combined"}
        ``students`` is hsb1.dta (7,185 rows), ``schools`` hsb2.dta (160 rows),
        ``combined`` hsb.dta (students with their school's variables).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    UsageError
        Unknown level (the message lists the choices).
    DataError
        The file is not there (a broken checkout).

    Examples
    --------
    >>> hsb_path("schools").name
    'hsb2.dta'
    """
    try:
        name = HSB_LEVELS[level]
    except (KeyError, TypeError):
        choices = ", ".join(repr(k) for k in HSB_LEVELS)
        raise UsageError(f"unknown HSB level {level!r}; choose one of {choices}") from None
    path = DATA_DIR / name
    if not path.is_file():
        raise DataError(
            f"bundled data file missing: {path} (regenerate with scripts/make_hsb_data.py)"
        )
    return path


def hsb(level: HsbLevel | str = "combined") -> pd.DataFrame:
    """The High School and Beyond data, as the seed handout's hsb1/hsb2/hsb.dta.

    Parameters
    ----------
    level : {"students", "schools", "combined"}, default "combined"

    Returns
    -------
    pandas.DataFrame
        ``id`` is text (school number); labels are in ``attrs`` (see
        :func:`hlmbridge.data.read_dta`). A fresh frame on every call.

    Raises
    ------
    UsageError
        Unknown level.

    Examples
    --------
    >>> df = hsb("combined")
    >>> list(df.columns)[:5]
    ['id', 'minority', 'female', 'ses', 'mathach']
    >>> df["id"].nunique()
    160
    """
    from hlmbridge.data import read_dta

    return read_dta(hsb_path(level))


def sleepstudy_path() -> Path:
    """Path of the bundled ``sleepstudy.csv`` (lme4's sleepstudy).

    Examples
    --------
    >>> sleepstudy_path().name
    'sleepstudy.csv'
    """
    path = DATA_DIR / "sleepstudy.csv"
    if not path.is_file():
        raise DataError(
            f"bundled data file missing: {path} (regenerate with scripts/make_hsb_data.py)"
        )
    return path


def sleepstudy() -> pd.DataFrame:
    """lme4's sleepstudy: 180 rows of Reaction (ms), Days (0-9), Subject (text).

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> df = sleepstudy()
    >>> list(df.columns)
    ['Reaction', 'Days', 'Subject']
    >>> df["Subject"].nunique()
    18
    """
    df = pd.read_csv(sleepstudy_path(), dtype={"Subject": str})
    return df
