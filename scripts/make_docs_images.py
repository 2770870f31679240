"""Make the images the README shows (run from the repository root):

    .venv/bin/python scripts/make_docs_images.py

Writes docs/caterpillar.png: the caterpillar plot of the HSB seed's model 2
(`mixed mathach ses || id: ses, cov(unstructured)`), fitted by the statsmodels engine so that
the script needs no R (the lme4 engine gives the same random effects). Needs matplotlib
(`pip install -e '.[plot]'`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hlmbridge
from hlmbridge.results.plots import caterpillar

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> int:
    """Fit the model and write the image; prints the path."""
    hsb = hlmbridge.datasets.hsb()
    res = hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", hsb, engine="statsmodels")
    fig = caterpillar(res)
    fig.set_size_inches(8, 7)
    DOCS.mkdir(exist_ok=True)
    out = DOCS / "caterpillar.png"
    fig.savefig(out, dpi=80, metadata={"Software": None})  # no version stamp: reruns give the same file
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
