"""The negative binomial GLMM (issue 23): ``family="negative_binomial"`` / Stata's ``menbreg``
against lme4's ``glmer.nb`` run by a separate R process.

The reference (``_R_REFERENCE``, Rscript): lme4's grouseticks, ``TICKS ~ YEAR + cHEIGHT +
(1 | BROOD)`` (counts with overdispersion beyond a Poisson random intercept), fitted by
``glmer.nb`` with its defaults; because glmer.nb stops its search on the NB theta loosely, R
then maximizes the same joint log likelihood of (lme4 theta, beta, log alpha) with another
optimizer (``nlminb`` on glmer's deviance with alpha set by the response's ``setTheta``, and
PIRLS restarted at each point: glmer's deviance otherwise depends on where PIRLS starts), and
takes the SEs from ``numDeriv::hessian`` of that deviance with Richardson's relative step
``d = 0.01``: glmer's deviance is computed by PIRLS (warm-started, to ``tolPwrss``), whose noise
dominates numDeriv's default step 1e-4 (the intercept's SE moves 1.5e-3 relative between
d = 1e-4 and 1e-3, while d = 1e-3 and 1e-2 agree within 2e-5 with each other and with the
engine's own Hessian).
With ``nAGQ = 7`` (Stata's default, mvaghermite 7 points) R adds the saturated log likelihood
glmer's quadrature deviance leaves out, and checks the result with ``integrate()`` of the
marginal likelihood brood by brood.

The same on mlmRev's Mmmec with the offset ``log(expected)`` (Stata's ``exposure()``), Laplace.

Held to: log likelihood 1e-6 relative; fixed effects, the variance and /lnalpha within 1e-4 of
their SE; SEs 1e-4 relative; the LR test against MASS::glm.nb's log likelihood (0.001 of chi2).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, SpecError, UnsupportedSpecError
from hlmbridge.spec.translate import parse_any

FORMULA = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD)"
MENBREG = "menbreg TICKS i.year cHEIGHT || brood:, intmethod(laplace)"

_R_REFERENCE = r"""
suppressPackageStartupMessages({library(lme4); library(MASS)})
out <- commandArgs(TRUE)[1]
data(grouseticks, package = "lme4")
d <- grouseticks
write.csv(data.frame(TICKS = d$TICKS, YEAR = as.character(d$YEAR), year = as.integer(as.character(d$YEAR)),
                     cHEIGHT = d$cHEIGHT, BROOD = as.character(d$BROOD), brood = as.integer(as.character(d$BROOD))),
          file.path(out, "grouse.csv"), row.names = FALSE)
data(Mmmec, package = "mlmRev")
write.csv(data.frame(deaths = Mmmec$deaths, uvb = Mmmec$uvb, expected = Mmmec$expected,
                     region = as.integer(Mmmec$region)), file.path(out, "mmmec.csv"), row.names = FALSE)
mm <- data.frame(deaths = Mmmec$deaths, uvb = Mmmec$uvb, expected = Mmmec$expected, region = factor(Mmmec$region))
one <- function(nagq, form = TICKS ~ YEAR + cHEIGHT + (1 | BROOD), dd = d, group = "BROOD") {
  m <- glmer.nb(form, data = dd, nAGQ = nagq)
  dev <- update(m, devFunOnly = TRUE, control = glmerControl(tolPwrss = 1e-10))
  rho <- environment(dev)
  y <- getME(m, "y")
  nt <- length(getME(m, "theta")); nb <- length(fixef(m))
  sat <- function(size) if (nagq == 1) 0 else sum(dnbinom(y, size = size, mu = y, log = TRUE))
  ## glmer's deviance depends on where PIRLS starts (its first stage's linear predictor): the exact
  ## deviance restarts PIRLS at the point itself (as r/tests/glmm_differential_reference.R does)
  ex <- function(q) { v <- dev(q); for (r in 1:6) { rho$lp0 <- as.numeric(rho$resp$eta - rho$baseOffset); w <- v
    v <- dev(q); if (abs(v - w) <= 1e-14 * abs(v)) break }; v }
  f <- function(p) { size <- exp(-p[nt + nb + 1]); rho$resp$setTheta(size); ex(p[1:(nt + nb)]) - 2 * sat(size) }
  fsafe <- function(p) tryCatch(f(p), error = function(e) 1e10)   # PIRLS failing far from the optimum
  p0 <- c(getME(m, "theta"), fixef(m), -log(getME(m, "glmer.nb.theta")))
  o <- nlminb(p0, fsafe, lower = c(0, rep(-Inf, nb + 1)), control = list(eval.max = 5000, iter.max = 2000,
                                                                     rel.tol = 1e-14, x.tol = 1e-12))
  p <- o$par
  H <- numDeriv::hessian(f, p, method.args = list(d = 0.01))  # see the module docstring
  for (k in 1:5) p <- p - solve(H, numDeriv::grad(f, p))       # nlminb's point finished by Newton steps
  o$objective <- f(p)
  H <- numDeriv::hessian(f, p, method.args = list(d = 0.01))
  V <- 2 * solve(H)
  se <- sqrt(diag(V))
  res <- list(loglik = -o$objective / 2, glmer_nb_loglik = -f(p0) / 2, beta = unname(p[nt + 1:nb]),
              se_beta = unname(se[nt + 1:nb]), var = unname(p[1]^2), se_var = unname(2 * p[1] * se[1]),
              lnalpha = unname(p[nt + nb + 1]), se_lnalpha = unname(se[nt + nb + 1]),
              glmer_nb_lnalpha = unname(p0[nt + nb + 1]), grad = max(abs(numDeriv::grad(f, p0))))
  if (nagq == 1) {  # at R's optimum (the deviance function's state there): fitted values and residuals
    f(p)
    size <- exp(-p[nt + nb + 1])
    mu <- rho$resp$mu
    fam <- negative.binomial(theta = size)
    res$fitted <- unname(mu)
    res$pearson <- unname((y - mu) / sqrt(fam$variance(mu)))
    res$deviance <- unname(sign(y - mu) * sqrt(fam$dev.resids(y, mu, 1)))
  }
  if (nagq > 1) {  # the marginal likelihood by integrate(), brood by brood, at R's optimum
    X <- getME(m, "X"); eta <- as.numeric(X %*% p[nt + 1:nb]); size <- exp(-p[nt + nb + 1]); s <- p[1]
    res$loglik_integrate <- sum(vapply(split(seq_along(y), dd[[group]]), function(i) {
      g <- function(u) vapply(u, function(b) exp(sum(dnbinom(y[i], size = size, mu = exp(eta[i] + s * b), log = TRUE))
                                                   + dnorm(b, log = TRUE)), 0)
      log(integrate(g, -Inf, Inf, rel.tol = 1e-10, abs.tol = 0)$value)   # the integrand is ~1e-13: no absolute tolerance
    }, 0))
  }
  res
}
g <- glm.nb(TICKS ~ YEAR + cHEIGHT, data = d, control = glm.control(epsilon = 1e-12, maxit = 100))
mmmec <- one(1, deaths ~ uvb + offset(log(expected)) + (1 | region), mm, "region")
mmmec$glm_nb_loglik <- as.numeric(logLik(glm.nb(deaths ~ uvb + offset(log(expected)), data = mm,
                                                control = glm.control(epsilon = 1e-12, maxit = 100))))
cat(jsonlite::toJSON(list(laplace = one(1), agq7 = one(7), glm_nb_loglik = as.numeric(logLik(g)), mmmec = mmmec),
                     digits = NA, auto_unbox = TRUE), file = file.path(out, "ref.json"))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    pytest.importorskip("rpy2")
    out = tmp_path_factory.mktemp("glmm_nb")
    script = out / "nb.R"
    script.write_text(_R_REFERENCE)
    proc = subprocess.run(["Rscript", "--vanilla", str(script), str(out)], capture_output=True, text=True,
                          timeout=480)
    assert proc.returncode == 0, proc.stderr
    data = pd.read_csv(out / "grouse.csv", dtype={"YEAR": str, "BROOD": str})
    data.attrs["mmmec"] = pd.read_csv(out / "mmmec.csv")
    return data, json.loads((out / "ref.json").read_text())


def _compare(res, ref):
    assert res.loglik == pytest.approx(ref["loglik"], rel=1e-6)
    fx = res.fixed
    fx = fx.iloc[np.argsort((fx["stata_term"] != "_cons").to_numpy(), kind="stable")]  # R's order: intercept first
    se = fx["std_error"].to_numpy()
    assert np.all(np.abs(fx["estimate"].to_numpy() - ref["beta"]) <= 1e-4 * se)
    np.testing.assert_allclose(se, ref["se_beta"], rtol=1e-4)
    rnd = res.random
    v, se_v = float(rnd["estimate"].iloc[0]), float(rnd["std_error"].iloc[0])
    assert abs(v - ref["var"]) <= 1e-4 * se_v
    assert se_v == pytest.approx(ref["se_var"], rel=1e-4)
    anc = res.ancillary.set_index("stata_term")
    ln, se_ln = anc.loc["/lnalpha", "estimate"], anc.loc["/lnalpha", "std_error"]
    assert abs(ln - ref["lnalpha"]) <= 1e-4 * se_ln
    assert se_ln == pytest.approx(ref["se_lnalpha"], rel=1e-4)
    # alpha = exp(/lnalpha): SE by the delta method, CI the exponentiated /lnalpha interval
    assert anc.loc["alpha", "estimate"] == pytest.approx(math.exp(ln), rel=1e-12)
    assert anc.loc["alpha", "std_error"] == pytest.approx(math.exp(ln) * se_ln, rel=1e-12)
    assert anc.loc["alpha", "conf_low"] == pytest.approx(math.exp(anc.loc["/lnalpha", "conf_low"]), rel=1e-12)
    assert anc.loc["/lnalpha", "conf_high"] == pytest.approx(ln + 1.959963984540054 * se_ln, rel=1e-12)


def test_glmer_nb_laplace(reference):
    data, ref = reference
    res = hlmbridge.fit(FORMULA, data, family="negative_binomial", engine="lme4")
    _compare(res, ref["laplace"])
    # the polish reaches at least glmer.nb's own optimum, and the parameters count alpha
    assert res.loglik >= ref["laplace"]["glmer_nb_loglik"] - 1e-9
    assert res.df == 4 + 1 + 1
    assert res.aic == pytest.approx(-2 * res.loglik + 2 * 6)
    # LR test vs. the negative binomial regression without the random intercept
    assert res.lr_chi2 == pytest.approx(2 * (res.loglik - ref["glm_nb_loglik"]), abs=1e-3)
    assert res.lr_kind == "chibar2"
    # the same model as Stata's menbreg, and its printed layout
    stata = hlmbridge.fit(MENBREG, data, engine="lme4")
    assert stata.loglik == pytest.approx(res.loglik, rel=1e-9)
    def by_term(t):
        return t.assign(stata_term=t["stata_term"].str.lower()).set_index("stata_term")["estimate"]

    ours = by_term(res.fixed)
    np.testing.assert_allclose(by_term(stata.fixed).loc[ours.index], ours, rtol=1e-6)
    text = stata.summary()
    assert text.splitlines()[0].startswith("Mixed-effects nbinomial regression")
    assert "Overdispersion:                  mean" in text
    assert re.search(r"^    /lnalpha \|\s+-1\.19\d+ ", text, re.M)
    assert re.search(r"^       alpha \|\s+\.30\d+ ", text, re.M)
    assert "LR test vs. nbinomial model: chibar2(01)" in text
    # irr: exponentiated coefficients
    irr = hlmbridge.fit(MENBREG + " irr", data, engine="lme4").eform()
    np.testing.assert_allclose(by_term(irr).loc[ours.index], np.exp(ours), rtol=1e-6)
    # the result round-trips with its ancillary rows
    again = type(res).from_dict(res.to_dict())
    pd.testing.assert_frame_equal(again.ancillary, res.ancillary)


def test_fitted_and_residuals_against_glmer(reference):
    """fitted() and residuals() use the estimated alpha (families.negative_binomial): glmer's
    at R's optimum, within the distance between the two optima (1e-6 relative)."""
    data, ref = reference
    res = hlmbridge.fit(FORMULA, data, family="negative_binomial", engine="lme4")
    np.testing.assert_allclose(res.fitted().to_numpy(), ref["laplace"]["fitted"], rtol=1e-5)
    for kind in ("pearson", "deviance"):
        np.testing.assert_allclose(res.residuals(kind).to_numpy(), ref["laplace"][kind], rtol=1e-5, atol=1e-6)


def test_glmer_nb_with_an_offset(reference):
    """mlmRev's Mmmec (deaths with the offset log(expected), regions): the formula's offset and
    Stata's exposure(); the LR test against MASS::glm.nb with the same offset."""
    data, ref = reference
    mm = data.attrs["mmmec"]
    res = hlmbridge.fit("deaths ~ uvb + offset(log(expected)) + (1 | region)", mm, family="negative_binomial",
                        engine="lme4")
    _compare(res, ref["mmmec"])
    assert res.lr_chi2 == pytest.approx(2 * (res.loglik - ref["mmmec"]["glm_nb_loglik"]), abs=1e-3)
    stata = hlmbridge.fit("menbreg deaths uvb, exposure(expected) || region:, intmethod(laplace)", mm, engine="lme4")
    _compare(stata, ref["mmmec"])


def test_glmer_nb_adaptive_quadrature(reference):
    """menbreg's default (7 points) on one random intercept: glmer.nb with nAGQ = 7 plus the
    saturated log likelihood, which depends on alpha (checked by integrate() in R)."""
    data, ref = reference
    agq = ref["agq7"]
    assert agq["loglik"] == pytest.approx(agq["loglik_integrate"], abs=1e-3)   # 7 points' quadrature error
    res = hlmbridge.fit("menbreg TICKS i.year cHEIGHT || brood:", data, engine="lme4")
    assert (res.spec.intmethod, res.spec.intpoints) == ("mvaghermite", 7)
    _compare(res, agq)


def test_menbreg_spec_and_refusals():
    s = parse_any("menbreg y x, exposure(t) || g:, irr")
    assert (s.family, s.link, s.eform, s.exposure, s.intpoints) == ("negative_binomial", "log", "irr", "t", 7)
    assert parse_any(s.to_stata()) == s
    from hlmbridge.spec.serialize import spec_from_dict, spec_to_dict

    assert spec_from_dict(spec_to_dict(s)) == s
    lm = parse_any("menbreg y x || g:, intmethod(laplace)").to_lme4()
    assert lm.r_code().endswith("fit <- lme4::glmer.nb(y ~ 1 + x + (1 | g), data = data, nAGQ = 1)")
    assert parse_any("menbreg y x || g:, dispersion(mean)").family == "negative_binomial"
    with pytest.raises(SpecError, match=re.escape("dispersion(constant), var = mu(1 + delta), is another model")):
        parse_any("menbreg y x || g:, dispersion(constant)")
    with pytest.raises(SpecError, match="menbreg takes 'irr', not 'or'"):
        parse_any("menbreg y x || g:, or")


def test_negative_binomial_bad_input(reference):
    data, _ = reference
    bad = data.assign(TICKS=data["TICKS"].astype(float))
    bad.loc[5, "TICKS"] = 2.5
    with pytest.raises(DataError, match="a negative binomial GLMM needs a non-negative whole-number response"):
        hlmbridge.fit(FORMULA, bad, family="negative_binomial", engine="lme4")
    res = hlmbridge.fit(FORMULA, data, family="negative_binomial", engine="lme4")
    with pytest.raises(UnsupportedSpecError, match="not available after mepoisson or menbreg"):
        res.icc()
