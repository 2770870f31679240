## R's reference for hlmbridge's GLMM differential suite (tests/test_glmm_differential.py), run as
##   Rscript r/tests/glmm_differential_reference.R OUTDIR
## It writes the data the tests fit (CSV, every double at 17 significant digits, factors as
## their labels) and, per case, the fit (JSON) at the exact optimum of glmer's deviance: glmer
## (another optimizer than hlmbridge's engine: nloptwrap to tight tolerances), then Newton steps
## on glmer's deviance with PIRLS restarted at each point (exact_devfun below; glmer's own
## deviance depends on where PIRLS starts), with numDeriv's Richardson-extrapolated gradient and
## Hessian (another implementation than hlmbridge's): log likelihood, fixed effects, their SEs
## from numDeriv's Hessian there, VarCorr and the conditional modes with conditional SDs
## (ranef(condVar = TRUE)) of the merMod at that point. glmer's plain log likelihood, fixed
## effects and SEs (numDeriv on update(fit, devFunOnly = TRUE) at glmer's optimum) are kept
## beside them (glmer_loglik, glmer_fixef, glmer_se_numderiv).
## For a scalar random effect fitted with nAGQ > 1 it also integrates the marginal likelihood
## at glmer's estimates with R's integrate() (`loglik_direct`), which checks the log
## likelihood's constant (glmer's nAGQ > 1 deviance leaves out the saturated log likelihood).
## Data (Debian packages r-cran-lme4, r-cran-mlmrev):
##   cbpp: lme4::cbpp (contagious bovine pleuropneumonia; incidence of size, by herd and period)
##   grouseticks: lme4::grouseticks (Elston et al. 2001), HEIGHT centred and scaled as H
##   contraception: mlmRev::Contraception (use and urban as 0/1)
##   verbagg: lme4::VerbAgg (r2 as 0/1), persons (id) crossed with items
##   mmmec: mlmRev::Mmmec (melanoma deaths by county with their expected number)
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
if (!requireNamespace("numDeriv", quietly = TRUE)) stop("R package numDeriv is missing (lme4 depends on it)")
if (!requireNamespace("mlmRev", quietly = TRUE)) stop("R package mlmRev is missing (Debian: r-cran-mlmrev)")
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[[1]] else tempdir()

cbpp <- lme4::cbpp
cbpp <- data.frame(incidence = cbpp$incidence, size = cbpp$size, period = as.character(cbpp$period),
                   herd = as.character(cbpp$herd), prop = cbpp$incidence / cbpp$size)
source(file.path(dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[[1]]))),
                 "glmm_data.R"))
grouse <- glmm_grouseticks()[c("TICKS", "YEAR", "H", "BROOD", "INDEX", "LOCATION")]
contra <- glmm_contraception()[c("use", "urban", "age", "livch", "district")]
va <- lme4::VerbAgg
verb <- data.frame(r2 = as.integer(va$r2 == "Y"), Anger = va$Anger, Gender = as.character(va$Gender),
                   btype = as.character(va$btype), situ = as.character(va$situ), id = as.character(va$id),
                   item = as.character(va$item))
mm <- mlmRev::Mmmec
mmmec <- data.frame(deaths = mm$deaths, expected = mm$expected, uvb = mm$uvb, nation = as.character(mm$nation),
                    region = as.character(mm$region))
write17 <- function(d, name) {
  old <- options(digits = 17, scipen = 0)
  on.exit(options(old))
  utils::write.csv(d, file.path(out, paste0(name, ".csv")), row.names = FALSE)
}
for (nm in c("cbpp", "grouse", "contra", "verb", "mmmec")) write17(get(nm), nm)

cases <- list(
  cbpp_cbind = list(data = cbpp, family = binomial(), nagq = 1L,
                    formula = cbind(incidence, size - incidence) ~ period + (1 | herd)),
  cbpp_cbind_agq9 = list(data = cbpp, family = binomial(), nagq = 9L,
                         formula = cbind(incidence, size - incidence) ~ period + (1 | herd)),
  cbpp_weights = list(data = cbpp, family = binomial(), nagq = 1L, weights = "size",
                      formula = prop ~ period + (1 | herd)),
  cbpp_probit_agq9 = list(data = cbpp, family = binomial(link = "probit"), nagq = 9L,
                          formula = cbind(incidence, size - incidence) ~ period + (1 | herd)),
  cbpp_cloglog = list(data = cbpp, family = binomial(link = "cloglog"), nagq = 1L,
                      formula = cbind(incidence, size - incidence) ~ period + (1 | herd)),
  grouse_poisson = list(data = grouse, family = poisson(), nagq = 1L,
                        formula = TICKS ~ YEAR + H + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)),
  contraception_urban = list(data = contra, family = binomial(), nagq = 1L,
                             formula = use ~ age + I(age^2) + urban + livch + (urban | district)),
  contraception_probit = list(data = contra, family = binomial(link = "probit"), nagq = 12L,
                              formula = use ~ age + urban + livch + (1 | district)),
  verbagg_crossed = list(data = verb, family = binomial(), nagq = 1L,
                         formula = r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)),
  mmmec_offset = list(data = mmmec, family = poisson(), nagq = 1L,
                      formula = deaths ~ uvb + offset(log(expected)) + (1 | nation) + (1 | region)),
  mmmec_offset_agq9 = list(data = mmmec, family = poisson(), nagq = 9L,
                           formula = deaths ~ uvb + offset(log(expected)) + (1 | region))
)
ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-10,
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))

## The marginal log likelihood of a one-scalar-random-effect GLMM at its estimates, by integrate().
direct_loglik <- function(m) {
  vc <- lme4::VarCorr(m)
  if (length(vc) != 1L || nrow(vc[[1]]) != 1L) return(NA_real_)
  fam <- stats::family(m)
  y <- lme4::getME(m, "y")
  w <- m@resp$weights
  eta0 <- as.numeric(lme4::getME(m, "X") %*% lme4::fixef(m)) + m@resp$offset
  s <- sqrt(vc[[1]][1, 1])
  g <- lme4::getME(m, "flist")[[1]]
  ll_obs <- function(i, u) {
    mu <- fam$linkinv(eta0[i] + u)
    if (fam$family == "poisson") stats::dpois(y[i], mu, log = TRUE) else
      stats::dbinom(round(w[i] * y[i]), round(w[i]), mu, log = TRUE)
  }
  sum(vapply(split(seq_along(y), g), function(i) {
    mode <- stats::optimize(function(u) sum(ll_obs(i, u)) + stats::dnorm(u, 0, s, log = TRUE), c(-20, 20),
                            maximum = TRUE)
    top <- mode$objective
    h <- function(u) vapply(u, function(v) exp(sum(ll_obs(i, v)) + stats::dnorm(v, 0, s, log = TRUE) - top), 0)
    log(stats::integrate(h, mode$maximum - 15 * s, mode$maximum + 15 * s, subdivisions = 1000L,
                         rel.tol = 1e-12)$value) + top
  }, 0))
}

## the exact deviance and optimum (r/tests/glmm_exact.R, beside this script)
local({
  here <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  source(file.path(dirname(normalizePath(here[[1]])), "glmm_exact.R"))
})

res <- lapply(cases, function(k) {
  d <- k$data
  t0 <- proc.time()[["elapsed"]]
  m <- if (is.null(k$weights)) glmer(k$formula, data = d, family = k$family, nAGQ = k$nagq, control = ctrl) else {
    d$.w <- d[[k$weights]]
    glmer(k$formula, data = d, family = k$family, nAGQ = k$nagq, control = ctrl, weights = .w)
  }
  seconds <- proc.time()[["elapsed"]] - t0
  ## glmer's own numbers: numDeriv's SEs on glmer's deviance as glmer evaluates it (PIRLS from
  ## the first stage's linear predictor), kept beside the exact ones to show the difference
  dev <- stats::update(m, devFunOnly = TRUE)
  th <- lme4::getME(m, "theta")
  H <- numDeriv::hessian(dev, c(th, lme4::fixef(m)), method.args = list(d = 0.01, r = 4))
  se_glmer <- sqrt(diag(2 * solve(H)))[-seq_along(th)]
  names(se_glmer) <- names(lme4::fixef(m))
  glmer_loglik <- as.numeric(logLik(m))
  glmer_fixef <- lme4::fixef(m)
  ## the exact optimum, and the merMod there (lme4::mkMerMod on the deviance function's state
  ## at the optimum, so that VarCorr, ranef and logLik are lme4's at that point)
  f <- exact_devfun(dev)
  ex <- exact_optimum(f, c(th, lme4::fixef(m)))
  f(ex$par)
  rho <- environment(dev)
  rho$resp$setOffset(rho$baseOffset)
  opt <- list(par = ex$par, fval = ex$value, conv = 0L, feval = m@optinfo$feval, message = "exact optimum")
  for (a in c("optimizer", "control", "warnings")) attr(opt, a) <- m@optinfo[[a]]
  gl <- if (is.null(k$weights)) glFormula(k$formula, data = d, family = k$family) else
    glFormula(k$formula, data = d, family = k$family, weights = .w)
  warns <- as.character(unlist(m@optinfo$conv$lme4$messages))
  m <- lme4::mkMerMod(rho, opt, gl$reTrms, fr = gl$fr, mc = m@call)
  vc <- lme4::VarCorr(m)
  se_nd <- sqrt(diag(2 * solve(ex$hessian)))[-seq_along(th)]
  names(se_nd) <- names(lme4::fixef(m))
  list(loglik = as.numeric(logLik(m)), loglik_direct = direct_loglik(m), se_numderiv = as.list(se_nd),
       glmer_loglik = glmer_loglik, glmer_se_numderiv = as.list(se_glmer), glmer_fixef = as.list(glmer_fixef),
       exact_newton_steps = ex$steps,
       fixef = as.list(lme4::fixef(m)), nobs = stats::nobs(m), glmer_seconds = seconds,
       ranef = as.data.frame(lme4::ranef(m, condVar = TRUE))[, c("grpvar", "grp", "term", "condval", "condsd")],
       varcorr = lapply(vc, function(x) { x <- unclass(x); attr(x, "stddev") <- NULL
                                          attr(x, "correlation") <- NULL; x }),
       nagq = k$nagq, warnings = warns)
})
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           file.path(out, "glmm_differential_reference.json"))
