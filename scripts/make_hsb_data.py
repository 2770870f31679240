"""Build the bundled data files in ``fixtures/data/`` from R's nlme and lme4 packages.

Writes (byte-for-byte reproducible; sha256 sums are recorded in fixtures/README.md):

* ``hsb1.dta``  - 7,185 students: id, minority, female, ses, mathach
* ``hsb2.dta``  - 160 schools: id, size, sector, pracad, disclim, himinty, meanses
* ``hsb.dta``   - hsb1 merged with hsb2 on id (11 variables, student order kept)
* ``sleepstudy.csv`` - lme4's sleepstudy (180 rows: Reaction, Days, Subject as text)

Source: ``nlme::MathAchieve`` (students) and ``nlme::MathAchSchool`` (schools), exported
to CSV by ``r/export_hsb.R`` run through ``Rscript`` in a temporary directory. Row order is
nlme's: students are grouped by school in ascending school number (1224 ... 9586; the
ids are all four digits, so text and numeric order agree), within a school in nlme's order;
schools ascending by school number.

Stata types follow what Stata would store: ``id`` str4 (text, so ``summarize`` shows 0
obs), indicators as byte, ``size`` as int, continuous measures as float (Stata's default
storage type; the handout's numbers were computed from float data).

Usage::

    .venv/bin/python scripts/make_hsb_data.py            # rewrite fixtures/data/*
    .venv/bin/python scripts/make_hsb_data.py --check    # rebuild in a temp dir, compare sha256

Exit status 0 on success; with ``--check``, 1 when a bundled file differs from a rebuild.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "fixtures" / "data"
R_SCRIPT = REPO / "r" / "export_hsb.R"

# Fixed header timestamp so the .dta bytes do not depend on when the script ran.
FIXED_TIMESTAMP = datetime.datetime(2000, 1, 1, 0, 0)
DTA_VERSION = 118  # dta format 118, readable by Stata 14 and later

STUDENT_LABELS = {
    "id": "school number",
    "minority": "student ethnicity (1=minority, 0=other)",
    "female": "student gender (1=female, 0=male)",
    "ses": "standardized socio-economic status scale",
    "mathach": "mathematics achievement",
}
SCHOOL_LABELS = {
    "id": "school number",
    "size": "school enrollment",
    "sector": "school sector (1=Catholic, 0=public)",
    "pracad": "proportion of students in the academic track",
    "disclim": "disciplinary climate scale",
    "himinty": "1=more than 40% minority enrollment, 0=less than 40%",
    "meanses": "school mean of student SES",
}
VALUE_LABELS = {
    "minority": {0: "other", 1: "minority"},
    "female": {0: "male", 1: "female"},
    "sector": {0: "public", 1: "catholic"},
    "himinty": {0: "less than 40%", 1: "more than 40%"},
}


def export_from_r(outdir: Path) -> dict[str, str]:
    """Run ``r/export_hsb.R`` into *outdir*; return the R package versions it reports."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        sys.exit("make_hsb_data: Rscript not found; install R >= 4.2 with nlme and lme4")
    subprocess.run([rscript, "--vanilla", str(R_SCRIPT), str(outdir)], check=True)
    versions = pd.read_csv(outdir / "versions.csv", dtype=str)
    return dict(zip(versions["package"], versions["version"], strict=True))


def build_students(raw: pd.DataFrame) -> pd.DataFrame:
    """Level-1 frame (hsb1) from the exported MathAchieve table."""
    for column, allowed in (("Minority", {"No", "Yes"}), ("Sex", {"Male", "Female"})):
        unexpected = set(raw[column]) - allowed
        if unexpected:
            raise SystemExit(f"make_hsb_data: unexpected {column} values {sorted(unexpected)}")
    return pd.DataFrame(
        {
            "id": raw["School"].astype(str).to_numpy(dtype=object),
            "minority": (raw["Minority"] == "Yes").astype(np.int8).to_numpy(),
            "female": (raw["Sex"] == "Female").astype(np.int8).to_numpy(),
            "ses": raw["SES"].to_numpy(dtype=np.float32),
            "mathach": raw["MathAch"].to_numpy(dtype=np.float32),
        }
    )


def build_schools(raw: pd.DataFrame) -> pd.DataFrame:
    """Level-2 frame (hsb2) from the exported MathAchSchool table."""
    unexpected = set(raw["Sector"]) - {"Public", "Catholic"}
    if unexpected:
        raise SystemExit(f"make_hsb_data: unexpected Sector values {sorted(unexpected)}")
    size = raw["Size"].to_numpy()
    if not np.array_equal(size, np.round(size)) or size.max() > 32740:
        raise SystemExit("make_hsb_data: Size does not fit a Stata int")
    return pd.DataFrame(
        {
            "id": raw["School"].astype(str).to_numpy(dtype=object),
            "size": size.astype(np.int16),
            "sector": (raw["Sector"] == "Catholic").astype(np.int8).to_numpy(),
            "pracad": raw["PRACAD"].to_numpy(dtype=np.float32),
            "disclim": raw["DISCLIM"].to_numpy(dtype=np.float32),
            "himinty": raw["HIMINTY"].astype(int).astype(np.int8).to_numpy(),
            "meanses": raw["MEANSES"].to_numpy(dtype=np.float32),
        }
    )


def check_meanses(students_raw: pd.DataFrame, schools_raw: pd.DataFrame) -> None:
    """MathAchieve's MEANSES must equal MathAchSchool's MEANSES school by school."""
    lookup = dict(zip(schools_raw["School"].astype(str), schools_raw["MEANSES"], strict=True))
    school_value = students_raw["School"].astype(str).map(lookup)
    if school_value.isna().any() or not np.array_equal(
        school_value.to_numpy(), students_raw["MEANSES"].to_numpy()
    ):
        raise SystemExit("make_hsb_data: MathAchieve$MEANSES differs from MathAchSchool$MEANSES")


def write_dta(df: pd.DataFrame, path: Path, labels: dict[str, str], file_label: str) -> None:
    """Write *df* as a Stata .dta (format 118) with variable and value labels.

    pandas' writer is used rather than ``pyreadstat.write_dta`` because pyreadstat stores
    every integer as long and every real as double, while Stata would store these
    variables as byte / int / float; pandas keeps int8 -> byte, int16 -> int,
    float32 -> float and takes a fixed header timestamp, so the bytes are reproducible.
    """
    value_labels = {k: v for k, v in VALUE_LABELS.items() if k in df.columns}
    df.to_stata(
        path,
        write_index=False,
        version=DTA_VERSION,
        time_stamp=FIXED_TIMESTAMP,
        data_label=file_label,
        variable_labels={k: labels[k] for k in df.columns},
        value_labels=value_labels,
    )


def build(outdir: Path) -> dict[str, str]:
    """Build every data file into *outdir*; return the R package versions used."""
    with tempfile.TemporaryDirectory(prefix="hlmbridge-hsb-") as tmp:
        versions = export_from_r(Path(tmp))
        students_raw = pd.read_csv(Path(tmp) / "students.csv", dtype={"School": str})
        schools_raw = pd.read_csv(Path(tmp) / "schools.csv", dtype={"School": str, "HIMINTY": str})
        sleep_raw = pd.read_csv(Path(tmp) / "sleepstudy.csv", dtype={"Subject": str})
    check_meanses(students_raw, schools_raw)
    students = build_students(students_raw)
    schools = build_schools(schools_raw)
    if schools["id"].duplicated().any():
        raise SystemExit("make_hsb_data: school ids repeat in MathAchSchool")
    combined = students.merge(schools, on="id", how="left", validate="many_to_one", sort=False)
    if combined["size"].isna().any() or len(combined) != len(students):
        raise SystemExit("make_hsb_data: some students have no school row")
    outdir.mkdir(parents=True, exist_ok=True)
    nlme = f"nlme {versions['nlme']}"  # file labels: at most 80 characters
    write_dta(students, outdir / "hsb1.dta", STUDENT_LABELS, f"HSB students ({nlme} MathAchieve)")
    write_dta(schools, outdir / "hsb2.dta", SCHOOL_LABELS, f"HSB schools ({nlme} MathAchSchool)")
    write_dta(
        combined,
        outdir / "hsb.dta",
        {**SCHOOL_LABELS, **STUDENT_LABELS},
        f"HSB students with school variables ({nlme})",
    )
    sleep = sleep_raw[["Reaction", "Days", "Subject"]]
    sleep.to_csv(outdir / "sleepstudy.csv", index=False, lineterminator="\n")
    return versions


OUTPUTS = ("hsb1.dta", "hsb2.dta", "hsb.dta", "sleepstudy.csv")


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare")
    parser.add_argument("--outdir", type=Path, default=DATA_DIR, help="where to write (default fixtures/data)")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="hlmbridge-check-") as tmp:
            versions = build(Path(tmp))
            bad = [n for n in OUTPUTS if sha256(Path(tmp) / n) != sha256(DATA_DIR / n)]
        print(f"R {versions['R']}, nlme {versions['nlme']}, lme4 {versions['lme4']}")
        for name in OUTPUTS:
            print(f"{'DIFFERS' if name in bad else 'same   '} {name}")
        return 1 if bad else 0
    versions = build(args.outdir)
    print(f"R {versions['R']}, nlme {versions['nlme']}, lme4 {versions['lme4']}")
    for name in OUTPUTS:
        print(f"{sha256(args.outdir / name)}  fixtures/data/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
