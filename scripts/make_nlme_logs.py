"""Write fixtures/nlme/: nlme's Orthodont data and a Stata-layout log of our own making (issue 25).

The log is NOT Stata output (no public Stata log with data is at hand for these structures): it
is written here in the layout of Stata's ``mixed`` output as the Stata manual ([ME] mixed,
residual-error structures) shows it and as ``FitResult.summary()`` draws it (a "Residual: AR(1)"
block with ``rho`` and ``var(e)``; "Residual: Independent," / "by male" with one ``var(e)`` per
group), from real fits by hlmbridge's nlme engine, whose estimates tests/test_nlme_r.py checks
against ``nlme::lme`` run directly. It lets import-stata -> validate round-trip the new rows.

    .venv/bin/python scripts/make_nlme_logs.py          # rewrite fixtures/nlme/{orthodont.csv,logs/}
    .venv/bin/python scripts/make_nlme_logs.py --check  # rebuild in memory and compare

Needs R with nlme (the data and the engine) and rpy2.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "nlme"
R_EXPORT = r"""
o <- as.data.frame(nlme::Orthodont)
d <- data.frame(distance = o$distance, age = o$age, id = as.integer(factor(as.character(o$Subject))),
                male = as.integer(o$Sex == "Male"), occ = as.integer((o$age - 8) / 2 + 1))
write.csv(d, stdout(), row.names = FALSE)
"""
#: The models of the log: one per structure the engine fits on these data.
COMMANDS = (
    "mixed distance age || id:, residuals(ar 1, t(occ))",
    "mixed distance age || id:, residuals(independent, by(male))",
    "mixed distance age || id:, residuals(exponential, t(age)) reml",
    "mixed distance age || id:, residuals(ma 1, t(occ))",
    "mixed distance age || id: age, noconstant residuals(exchangeable)",
)


def export_data() -> str:
    return subprocess.run(["Rscript", "--vanilla", "-e", R_EXPORT], check=True, capture_output=True,
                          text=True).stdout


def make_log(csv_text: str) -> str:
    import hlmbridge

    data = pd.read_csv(io.StringIO(csv_text))
    out = [". import delimited orthodont.csv, clear", ""]
    for command in COMMANDS:
        res = hlmbridge.fit(command, data, engine="nlme")
        table = res.summary().split("\n[nlme:")[0]  # the engine's line and warnings are not Stata's
        out += [f". {command}", "", table, ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="rebuild in memory and compare with the files")
    args = ap.parse_args()
    csv_text = export_data()
    log = make_log(csv_text)
    files = {OUT / "orthodont.csv": csv_text, OUT / "logs" / "orthodont_nlme.log": log}
    if args.check:
        bad = [str(p) for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        print("differs: " + ", ".join(bad) if bad else "fixtures/nlme is up to date")
        return 1 if bad else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
