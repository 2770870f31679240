"""``estat icc`` after a binomial GLMM: the latent-scale intra-class correlation (issue 23).

Stata's ``estat icc`` after ``melogit``/``meprobit``/``mecloglog`` divides the random-intercept
variances by their sum plus the latent residual's variance (pi^2/3, 1, pi^2/6); its SE is the
delta method and its CI the back-transformed logit(rho) -+ 1.96 se / (rho (1 - rho)) (as after
``mixed``). Checked on the lme4 engine's nAGQ = 12 fit of the hospital data against the
published Stata 18 log (fixtures/glmm): the log's ``di v2/(v2 + _pi^2/3)`` (case L0132_di), the
ICC and its delta-method SE from ``melogit``'s var(_cons) and SE (case L0061_melogit), and
``xtlogit``'s rho row, whose SE and CI are those of estat icc for one level (the logit of rho
is log var - log(pi^2/3), so the two intervals are the same transform of the same estimate).
Two nested levels (mlmRev's guImmun: children within mothers within communities) are checked
against the same formulas evaluated in R on glmer's own fit, with numDeriv's Hessian.
"""

from __future__ import annotations

import json
import math
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UnsupportedSpecError

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "fixtures" / "glmm" / "cases"
HOSPITAL = REPO / "fixtures" / "glmm" / "hospital.csv"
MELOGIT = "melogit hosp loginc distance dropout college || mother:, intpoints(12)"


def _case(name: str) -> dict:
    return tomllib.loads((CASES / f"{name}.toml").read_text())


@pytest.fixture(scope="module")
def hospital() -> pd.DataFrame:
    return pd.read_csv(HOSPITAL)


@pytest.fixture(scope="module")
def melogit(hospital):
    pytest.importorskip("rpy2")
    return hlmbridge.fit(MELOGIT, hospital, engine="lme4")


def test_latent_icc_matches_the_hospital_log(melogit):
    icc = melogit.icc()
    assert list(icc["level"]) == ["mother"]
    assert icc.attrs["title"] == "Residual intraclass correlation"
    rho, se, lo, hi = (float(icc[c].iloc[0]) for c in ("estimate", "std_error", "conf_low", "conf_high"))
    # the log's di of the latent ICC (at xtlogit's estimates, the same model): within 1e-3 of its SE
    di = _case("L0132_di")["di"]["value"]["value"]
    assert abs(rho - di) < 1e-3 * se
    # the ICC and its delta-method SE at melogit's printed var(_cons) and SE
    var = _case("L0061_melogit")["random"]["mother:var(_cons)"]
    v, se_v = var["estimate"]["value"], var["std_error"]["value"]
    latent = math.pi**2 / 3
    rho_stata = v / (v + latent)
    se_stata = latent / (v + latent) ** 2 * se_v
    assert abs(rho - rho_stata) < 1e-3 * se_stata
    assert se == pytest.approx(se_stata, rel=1e-4)
    # xtlogit's rho row: the same estimate, SE and interval (logit(rho) = log var - log(pi^2/3))
    row = _case("L0005_xtlogit")["random"]["rho"]
    assert se == pytest.approx(row["std_error"]["value"], rel=1e-4)
    for ours, key in ((lo, "conf_low"), (hi, "conf_high")):
        assert abs(ours - row[key]["value"]) < 1e-3 * se


@pytest.mark.parametrize("link, latent", [("probit", 1.0), ("cloglog", math.pi**2 / 6)])
def test_latent_variance_of_the_link(hospital, link, latent):
    pytest.importorskip("rpy2")
    cmd = {"probit": "meprobit", "cloglog": "mecloglog"}[link]
    res = hlmbridge.fit(f"{cmd} hosp loginc distance dropout college || mother:, intpoints(12)", hospital,
                        engine="lme4")
    v = float(res.random["estimate"].iloc[0])
    se_v = float(res.random["std_error"].iloc[0])
    icc = res.icc()
    assert float(icc["estimate"].iloc[0]) == pytest.approx(v / (v + latent), rel=1e-12)
    assert float(icc["std_error"].iloc[0]) == pytest.approx(latent / (v + latent) ** 2 * se_v, rel=1e-10)


_R_TWO_LEVELS = r"""
suppressPackageStartupMessages(library(lme4))
data("guImmun", package = "mlmRev")
d <- data.frame(immun = as.integer(guImmun$immun == "Y"), kid2p = as.integer(guImmun$kid2p == "Y"),
                mom25p = as.integer(guImmun$mom25p == "Y"), comm = as.integer(as.character(guImmun$comm)),
                mom = as.integer(as.character(guImmun$mom)))
write.csv(d, commandArgs(TRUE)[1], row.names = FALSE)
d$comm <- factor(d$comm); d$mom <- factor(d$mom)
m <- glmer(immun ~ kid2p + mom25p + (1 | comm) + (1 | comm:mom), data = d, family = binomial, nAGQ = 1,
           control = glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5),
                                  tolPwrss = 1e-10))
th <- getME(m, "theta"); b <- fixef(m)
dev <- update(m, devFunOnly = TRUE)
## glmer's deviance depends on where PIRLS starts (its first stage's linear predictor): the exact
## Laplace deviance restarts it at the point itself (r/tests/glmm_differential_reference.R);
## glmer's optimum is finished by Newton steps on it (numDeriv)
rho <- environment(dev)
ex <- function(p) { v <- dev(p); for (r in 1:6) { rho$lp0 <- as.numeric(rho$resp$eta - rho$baseOffset); w <- v
  v <- dev(p); if (abs(v - w) <= 1e-14 * abs(v)) break }; v }
x <- c(th, b)
H <- numDeriv::hessian(ex, x, method.args = list(d = 0.01, r = 4))
for (k in 1:10) x <- x - solve(H, numDeriv::grad(ex, x))
H <- numDeriv::hessian(ex, x, method.args = list(d = 0.01, r = 4))
th <- x[seq_along(th)]
i <- match(c("comm:mom.(Intercept)", "comm.(Intercept)"), names(th))
V <- (2 * solve(H))[i, i]                        # covariance of (theta_dc, theta_d)
vdc <- th[i[1]]^2; vd <- th[i[2]]^2
L <- pi^2 / 3; tot <- vd + vdc + L
D <- diag(2 * th[i])                             # d (vdc, vd) / d theta
g1 <- c(-vd / tot^2, (vdc + L) / tot^2)          # d icc(comm) / d (vdc, vd)
g2 <- c(L / tot^2, L / tot^2)                    # d icc(comm|mom) / d (vdc, vd)
se <- function(g) sqrt(as.numeric(t(g) %*% D %*% V %*% D %*% g))
cat(jsonlite::toJSON(list(icc = c(vd / tot, (vd + vdc) / tot), se = c(se(g1), se(g2)),
                          ll = -ex(x) / 2, glmer_ll = as.numeric(logLik(m))), digits = NA, auto_unbox = TRUE))
"""


def test_two_nested_levels_against_r(tmp_path):
    pytest.importorskip("rpy2")
    csv = tmp_path / "guimmun.csv"
    script = tmp_path / "icc.R"
    script.write_text(_R_TWO_LEVELS)
    ref = json.loads(subprocess.run(["Rscript", "--vanilla", str(script), str(csv)], check=True,
                                    capture_output=True, text=True, timeout=300).stdout)
    d = pd.read_csv(csv)
    res = hlmbridge.fit("melogit immun kid2p mom25p || comm: || mom:, intmethod(laplace)", d, engine="lme4")
    assert res.loglik == pytest.approx(ref["ll"], abs=1e-6)
    icc = res.icc()
    assert list(icc["level"]) == ["comm", "comm|mom"]
    np.testing.assert_allclose(icc["estimate"], ref["icc"], rtol=1e-4)
    np.testing.assert_allclose(icc["std_error"], ref["se"], rtol=1e-4)
    for r in icc.itertuples(index=False):   # Stata's logit-transformed interval
        logit = math.log(r.estimate / (1 - r.estimate))
        half = 1.959963984540054 * r.std_error / (r.estimate * (1 - r.estimate))
        assert r.conf_low == pytest.approx(1 / (1 + math.exp(-(logit - half))), rel=1e-12)
        assert r.conf_high == pytest.approx(1 / (1 + math.exp(-(logit + half))), rel=1e-12)


def test_count_models_are_refused(hospital):
    pytest.importorskip("rpy2")
    res = hlmbridge.fit("mepoisson hosp loginc || mother:, intpoints(12)", hospital, engine="lme4")
    with pytest.raises(UnsupportedSpecError, match="not available after mepoisson or menbreg"):
        res.icc()
