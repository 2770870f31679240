"""Checks the proposed ``evaluate_fast`` against ``hlmbridge.inference.evaluate``.

Run: .venv/bin/python -m pytest benchmarks/proposals/test_fast_inference.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.design import build_design
from hlmbridge.inference import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_inference import evaluate_fast  # noqa: E402

SEED_MODELS = (
    "mixed mathach || id:",
    "mixed mathach ses || id:",
    "mixed mathach ses || id: ses, cov(unstructured)",
    "mixed mathach sector || id:",
    "mixed mathach ses sector || id: ses, cov(unstr)",
    "mixed mathach ses sector || id:",
    "mixed mathach c.ses##i.sector || id: ses, cov(unstr)",
    "mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)",
    "mixed mathach c.ses##i.sector || id:",
    "mixed mathach ses || id: ses, cov(independent)",
    "mixed mathach ses || id: ses, cov(identity)",
    "mixed mathach ses || id: ses, cov(exchangeable)",
)


def _same(a, b) -> None:
    assert a.loglik == pytest.approx(b.loglik, rel=1e-11)
    for f in ("beta_gls", "fixed_vcov", "random_vcov", "information"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-8, atol=1e-12, err_msg=f)


@pytest.mark.parametrize("model", SEED_MODELS)
@pytest.mark.parametrize("reml", [False, True])
def test_matches_evaluate_on_seed_models(model: str, reml: bool) -> None:
    df = hlmbridge.datasets.hsb("combined")
    design = build_design(hlmbridge.ModelSpec.parse(model, reml=reml), df)
    rng = np.random.default_rng(3)
    from hlmbridge.inference import variance_parameters

    params = variance_parameters(design)
    theta = np.array([4.0 if p.kind == "var" else 0.3 for p in params])
    theta[-1] = 36.0
    beta = rng.normal(size=design.n_fixed) + 12
    _same(evaluate_fast(design, beta, theta), evaluate(design, beta, theta))


def test_matches_evaluate_with_missing_rows_and_three_slopes() -> None:
    rng = np.random.default_rng(7)
    g = rng.integers(0, 40, size=900)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=900), "z": rng.normal(size=900)})
    df["y"] = 1 + df.x + rng.normal(size=40)[g] + rng.normal(size=900)
    df.loc[::17, "z"] = np.nan
    design = build_design(hlmbridge.ModelSpec.parse("mixed y x z || g: x z, cov(unstr)"), df)
    from hlmbridge.inference import variance_parameters

    K = len(variance_parameters(design))
    theta = np.array([1.0, 0.5, 0.4, 0.1, 0.05, -0.02, 1.2])[:K]
    _same(evaluate_fast(design, np.array([1.0, 1.0, 0.0]), theta),
          evaluate(design, np.array([1.0, 1.0, 0.0]), theta))
