## R's reference for hlmbridge's GLMM tests (tests/test_glmm.py), run as
##   Rscript r/tests/glmm_reference.R OUTDIR
## It writes the data the tests fit (CSV) and, per case, the fit (JSON) at the exact optimum
## of glmer's deviance: glmer (nloptwrap with tight tolerances, another optimizer than
## hlmbridge's bobyqa), then Newton steps with numDeriv's gradient and Hessian on glmer's
## deviance function (update(fit, devFunOnly = TRUE)) with PIRLS restarted at each point
## (exact_devfun below: glmer's own deviance depends on where PIRLS starts). Log likelihood,
## fixed effects with two SEs: `se_numderiv` from numDeriv's Richardson-extrapolated Hessian of
## the exact deviance at that optimum (another implementation than hlmbridge's) and `se`,
## glmer's own vcov(fit, use.hessian = TRUE) at glmer's optimum (lme4's deriv12 of glmer's
## deviance: central differences with step 1e-4), VarCorr and ranef(condVar = TRUE) of the
## merMod at the exact optimum; `glmer_loglik` is glmer's own.
##   hospital: fixtures/glmm/hospital.dat (Lillard & Panis; see fixtures/glmm/README.md)
##   grouseticks: lme4::grouseticks (Elston et al. 2001)
##   contraception: mlmRev::Contraception (use and urban as 0/1)
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
if (!requireNamespace("numDeriv", quietly = TRUE)) stop("R package numDeriv is missing (lme4 depends on it)")
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[[1]] else tempdir()
repo <- normalizePath(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
                                "..", ".."))

source(file.path(repo, "r", "tests", "glmm_data.R"))
hosp <- glmm_hospital(repo)
grouse <- glmm_grouseticks()[c("TICKS", "YEAR", "H", "HEIGHT", "BROOD", "LOCATION")]
contra <- glmm_contraception()[c("use", "urban", "age", "district")]
write.csv(hosp, file.path(out, "hospital.csv"), row.names = FALSE)
write.csv(grouse, file.path(out, "grouseticks.csv"), row.names = FALSE)
write.csv(contra, file.path(out, "contraception.csv"), row.names = FALSE)

cases <- list(
  hospital_laplace = list(data = hosp, family = binomial, nagq = 1L,
                          formula = hosp ~ loginc + distance + dropout + college + (1 | mother)),
  hospital_agq12 = list(data = hosp, family = binomial, nagq = 12L,
                        formula = hosp ~ loginc + distance + dropout + college + (1 | mother)),
  grouse_laplace = list(data = grouse, family = poisson, nagq = 1L,
                        formula = TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)),
  grouse_agq9 = list(data = grouse, family = poisson, nagq = 9L, formula = TICKS ~ YEAR + H + (1 | BROOD)),
  contraception_slope = list(data = contra, family = binomial, nagq = 1L,
                             formula = use ~ urban + age + (urban | district))
)
ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-10,
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))
## the exact deviance and optimum (r/tests/glmm_exact.R, beside this script)
local({
  here <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  source(file.path(dirname(normalizePath(here[[1]])), "glmm_exact.R"))
})

res <- lapply(cases, function(k) {
  m <- glmer(k$formula, data = k$data, family = k$family, nAGQ = k$nagq, control = ctrl)
  se_glmer <- sqrt(diag(as.matrix(vcov(m, use.hessian = TRUE))))
  names(se_glmer) <- names(lme4::fixef(m))
  glmer_loglik <- as.numeric(logLik(m))
  ## the exact optimum (PIRLS restarted at each point) and the merMod there
  dev <- stats::update(m, devFunOnly = TRUE)
  th <- lme4::getME(m, "theta")
  f <- exact_devfun(dev)
  ex <- exact_optimum(f, c(th, lme4::fixef(m)))
  f(ex$par)
  rho <- environment(dev)
  rho$resp$setOffset(rho$baseOffset)
  opt <- list(par = ex$par, fval = ex$value, conv = 0L, feval = m@optinfo$feval, message = "exact optimum")
  for (a in c("optimizer", "control", "warnings")) attr(opt, a) <- m@optinfo[[a]]
  gl <- glFormula(k$formula, data = k$data, family = k$family)
  m <- lme4::mkMerMod(rho, opt, gl$reTrms, fr = gl$fr, mc = m@call)
  vc <- lme4::VarCorr(m)
  ## The marginal log likelihood at glmer's estimates by R's integrate(), one group at a time
  ## (one scalar random effect only): an independent check of the log likelihood's constant.
  direct <- NA_real_
  if (length(vc) == 1L && nrow(vc[[1]]) == 1L) {
    y <- lme4::getME(m, "y")
    eta <- as.numeric(lme4::getME(m, "X") %*% lme4::fixef(m))
    s <- sqrt(vc[[1]][1, 1])
    g <- lme4::getME(m, "flist")[[1]]
    ll_obs <- function(i, u) if (identical(k$family, poisson)) stats::dpois(y[i], exp(eta[i] + u), log = TRUE) else
      stats::dbinom(y[i], 1, stats::plogis(eta[i] + u), log = TRUE)
    direct <- sum(vapply(split(seq_along(y), g), function(i) {
      mode <- stats::optimize(function(u) sum(ll_obs(i, u)) + stats::dnorm(u, 0, s, log = TRUE), c(-20, 20),
                              maximum = TRUE)
      top <- mode$objective
      h <- function(u) vapply(u, function(v) exp(sum(ll_obs(i, v)) + stats::dnorm(v, 0, s, log = TRUE) - top), 0)
      log(stats::integrate(h, mode$maximum - 15 * s, mode$maximum + 15 * s, subdivisions = 1000L,
                           rel.tol = 1e-12)$value) + top
    }, 0))
  }
  se_nd <- sqrt(diag(2 * solve(ex$hessian)))[-seq_along(th)]
  names(se_nd) <- names(lme4::fixef(m))
  list(loglik = as.numeric(logLik(m)), loglik_direct = direct, se_numderiv = as.list(se_nd), fixef = as.list(lme4::fixef(m)),
       se = as.list(se_glmer), glmer_loglik = glmer_loglik,
       ranef = as.data.frame(lme4::ranef(m, condVar = TRUE))[, c("grp", "term", "condval", "condsd")],
       varcorr = lapply(vc, function(x) { x <- unclass(x); attr(x, "stddev") <- NULL;
                                          attr(x, "correlation") <- NULL; x }),
       nagq = k$nagq)
})
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"), file.path(out, "glmm_reference.json"))
