"""Population-averaged quantities of a GLMM against the hospital log's published numbers (issue 24 item 3).

The numbers are fixtures/glmm/population_averaged.toml (xtrho's table, the mata block's
population-averaged odds ratio; provenance and tolerances there), each checked first against its
line of the log. They are computed on the lme4 engine's fit of the log's own command
(``xtlogit ..., i(mother) re``: 12 points, glmer nAGQ = 12).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.families import family
from hlmbridge.results.population_averaged import MANIFEST_MEASURES, manifest_measures, marginal_mean

REPO = Path(__file__).resolve().parent.parent
GLMM = REPO / "fixtures" / "glmm"
FIXTURE = tomllib.loads((GLMM / "population_averaged.toml").read_text(encoding="utf-8"))
Z_975 = 1.959963984540054


@pytest.fixture(scope="module")
def hospital_fit():
    data = pd.read_csv(GLMM / "hospital.csv")
    return hlmbridge.fit(FIXTURE["source"]["command"], data), data


def test_fixture_numbers_are_the_logs():
    src = FIXTURE["source"]
    log_bytes = (GLMM / src["log"]).read_bytes()
    assert hashlib.sha256(log_bytes).hexdigest() == src["sha256"]
    lines = log_bytes.decode("utf-8").splitlines()
    assert lines[src["command_line"] - 1] == ". " + src["command"]
    assert lines[FIXTURE["xtrho"]["line"] - 1] == ". xtrho"
    for row in FIXTURE["xtrho"]["rows"]:
        cells = lines[row["line"] - 1].split("│")
        assert cells[0].strip() == row["measure"]
        assert cells[1].split() == row["printed"]
        assert [float(p) for p in row["printed"]] == row["value"]
    assert [r["measure"] for r in FIXTURE["xtrho"]["rows"]] == list(MANIFEST_MEASURES)
    pa = FIXTURE["pa_odds_ratio"]
    assert lines[pa["line"] - 1].strip() == pa["printed"] and float(pa["printed"]) == pa["value"]
    assert lines[pa["means_line"] - 1].split() == pa["means_printed"]
    assert f"_gauss_hermite_nodes({pa['points']})" in "\n".join(lines)


@pytest.mark.requires_r
def test_xtrho_on_lme4(hospital_fit):
    res, data = hospital_fit
    got = res.xtrho()
    assert list(got["measure"]) == list(MANIFEST_MEASURES)
    tol = FIXTURE["xtrho"]["tolerance"]["se"]
    for row, (_, g) in zip(FIXTURE["xtrho"]["rows"], got.iterrows(), strict=True):
        est, lo, hi = row["value"]
        se = (hi - lo) / (2 * Z_975)
        for col, want in zip(("estimate", "conf_low", "conf_high"), row["value"], strict=True):
            assert abs(g[col] - want) <= tol * se, (row["measure"], col, g[col], want)
    # evaluated at the median linear predictor over the 1,060 births (not over the 501 mothers)
    fx = res.fixed.set_index("term")["estimate"]
    xb = fx["(Intercept)"] + sum(fx[c] * data[c] for c in ("loginc", "distance", "dropout", "college"))
    assert math.isclose(got.attrs["linear_predictor"], float(np.median(xb)), rel_tol=1e-12)


@pytest.mark.requires_r
def test_population_averaged_odds_ratio_on_lme4(hospital_fit):
    res, data = hospital_fit
    pa = FIXTURE["pa_odds_ratio"]
    first = data.drop_duplicates("mother")
    means = {c: float(first[c].mean()) for c in pa["means_over_groups"]}
    assert [f"{means['distance']:.7f}", f"{means['loginc']:.6f}"] == pa["means_printed"]
    at0 = {**means, **pa["at"], "college": 0}
    got = res.population_averaged_ratio(at0, {**at0, "college": 1}, points=pa["points"])
    assert abs(got["odds_ratio"] / pa["value"] - 1) <= pa["tolerance"]["rtol"], got
    # the mata block's sums, written out here: 12-point Gauss-Hermite, nodes * sqrt(2), weights / sqrt(pi)
    x, w = np.polynomial.hermite.hermgauss(12)
    sigma = math.sqrt(res.random["estimate"].iloc[0])
    fx = res.fixed.set_index("term")["estimate"]
    xb = fx["(Intercept)"] + fx["loginc"] * means["loginc"] + fx["distance"] * means["distance"]
    p1 = np.sum(1 / (1 + np.exp(-(xb + fx["college"] + x * np.sqrt(2) * sigma))) * w / np.sqrt(np.pi))
    p0 = np.sum(1 / (1 + np.exp(-(xb + x * np.sqrt(2) * sigma))) * w / np.sqrt(np.pi))
    assert math.isclose(got["mu1"], p1, rel_tol=1e-12) and math.isclose(got["mu0"], p0, rel_tol=1e-12)
    # the fit's own points are 12 too: the default
    assert res.population_averaged_ratio(at0, {**at0, "college": 1}) == got


def test_quadrature_pieces():
    """The one-dimensional integrals against scipy's adaptive quadrature (written out here). Plain
    Gauss-Hermite converges slowly for a large SD (the logistic's poles come near the real axis):
    at SD 3, 12 points are 1.1e-3 off the mean, 60 points 5e-8, 250 points 1e-14 off the joint
    probability (SD 1.2: 12 points 8e-8)."""
    from scipy import integrate, special, stats

    link = family("binomial").link
    for eta, s, k in ((-1.5, 1.2, 60), (2.0, 3.0, 250)):
        exact = integrate.quad(lambda t: special.expit(eta + s * t) * stats.norm.pdf(t), -40, 40, epsabs=1e-14,
                               limit=200)[0]
        assert abs(marginal_mean(link, np.array([eta]), np.array([s * s]), k)[0] - exact) < 1e-11
        p11 = integrate.quad(lambda t: special.expit(eta + s * t) ** 2 * stats.norm.pdf(t), -40, 40,
                             epsabs=1e-14, limit=200)[0]
        p, joint, odds, r, q = manifest_measures(link, eta, s, k)
        assert abs(p - exact) < 1e-11 and abs(joint - p11) < 1e-11
        assert math.isclose(odds, joint * (1 - 2 * exact + p11) / (exact - p11) ** 2, rel_tol=1e-9)
        assert math.isclose(r, (p11 - exact**2) / (exact * (1 - exact)), rel_tol=1e-9)
        assert math.isclose(q, (odds - 1) / (odds + 1), rel_tol=1e-12)
    log = family("poisson").link  # a log link: E exp(eta + s t) = exp(eta + s^2 / 2)
    assert math.isclose(marginal_mean(log, np.array([0.3]), np.array([0.49]), 30)[0], math.exp(0.3 + 0.245),
                        rel_tol=1e-12)
