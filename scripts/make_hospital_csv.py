"""Write fixtures/glmm/hospital.csv: fixtures/glmm/hospital.dat with its column names.

hospital.dat (Lillard & Panis, via grodri.github.io/datasets) is whitespace-separated without
a header; the Stata log reads it with ``infile hosp loginc distance dropout college mother``.
The CSV has those names and the same values, written by pandas exactly as read (the .dat's
text is kept: every value is written with Python's shortest round-trip repr).

    .venv/bin/python scripts/make_hospital_csv.py           # (re)write the CSV
    .venv/bin/python scripts/make_hospital_csv.py --check   # fail if the CSV differs
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DAT = ROOT / "fixtures" / "glmm" / "hospital.dat"
CSV = ROOT / "fixtures" / "glmm" / "hospital.csv"
COLUMNS = ["hosp", "loginc", "distance", "dropout", "college", "mother"]


def make() -> str:
    data = pd.read_csv(DAT, sep=r"\s+", header=None, names=COLUMNS)
    if len(data) != 1060 or data["mother"].nunique() != 501:
        raise SystemExit(f"{DAT}: expected 1,060 births to 501 mothers, got {len(data)} rows")
    return data.to_csv(index=False, lineterminator="\n")


def main() -> int:
    text = make()
    if "--check" in sys.argv[1:]:
        if CSV.read_text(encoding="utf-8") != text:
            print(f"{CSV} differs from {DAT}: rerun scripts/make_hospital_csv.py")
            return 1
        print(f"{CSV}: up to date")
        return 0
    CSV.write_text(text, encoding="utf-8")
    print(f"wrote {CSV}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
