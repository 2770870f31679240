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
>>> datasets.load("hsb2").shape           # by name, as ``hlmbridge fit ... --data hsb2``
(160, 7)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hlmbridge.errors import DataError, UsageError

if TYPE_CHECKING:  # pandas is imported when data are read, not with the module (the command line's start)
    import pandas as pd

__all__ = ["BUNDLE_DIR", "DATA_DIR", "HSB_LEVELS", "NAMES", "SOURCE_ROOT", "hsb", "hsb_path", "load",
           "resolve", "resource_path", "sleepstudy", "sleepstudy_path"]

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
    import pandas as pd

    df = pd.read_csv(sleepstudy_path(), dtype={"Subject": str})
    return df


#: The bundled data sets by name (``hlmbridge fit ... --data hsb``; :func:`load`): what each is.
NAMES: dict[str, str] = {
    "hsb": "HSB students with their school's variables, hsb.dta",
    "hsb1": "HSB students, hsb1.dta",
    "hsb2": "HSB schools, hsb2.dta",
    "sleepstudy": "lme4's sleepstudy, sleepstudy.csv",
}
_LEVEL_OF = {"hsb": "combined", "hsb1": "students", "hsb2": "schools"}


def _names_listed() -> str:
    return ", ".join(f"{k} ({v})" for k, v in NAMES.items())


def load(name: str) -> pd.DataFrame:
    """A bundled data set by name (one of :data:`NAMES`), as :func:`hsb` and :func:`sleepstudy`
    give it.

    Raises
    ------
    UsageError
        An unknown name (the message lists the names).

    Examples
    --------
    >>> list(load("sleepstudy").columns)
    ['Reaction', 'Days', 'Subject']
    """
    if not isinstance(name, str) or name not in NAMES:
        raise UsageError(f"no bundled data set named {name!r}; the bundled data sets are {_names_listed()}")
    if name == "sleepstudy":
        return sleepstudy()
    return hsb(_LEVEL_OF[name])


def resolve(data: str | Path) -> Path | str:
    """What a ``--data`` argument names: an existing file (returned as a Path), else a bundled
    data set's name (returned as the str, for :func:`load`).

    A file wins over a name: ``--data hsb`` reads a file called ``hsb`` in the current folder
    when there is one.

    Raises
    ------
    DataError
        Neither a file nor a bundled name (the message lists the names).

    Examples
    --------
    >>> resolve("hsb")
    'hsb'
    >>> resolve("no-such-thing")
    Traceback (most recent call last):
    ...
    hlmbridge.errors.DataError: no data file 'no-such-thing' and no bundled data set of that name; the bundled data sets are hsb (...
    """
    if Path(data).is_file():
        return Path(data)
    if isinstance(data, str) and data in NAMES:
        return data
    raise DataError(f"no data file {str(data)!r} and no bundled data set of that name; the bundled data sets "
                    f"are {_names_listed()}")
