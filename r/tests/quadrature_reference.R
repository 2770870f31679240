## R's reference for the quadrature engine's tests (tests/test_quadrature.py), run as
##   Rscript r/tests/quadrature_reference.R OUTDIR
## It writes the data the tests fit (CSV) and, per case, glmer's fit (JSON): log likelihood
## (with nAGQ > 1 plus the saturated log likelihood glmer's deviance leaves out, as
## r/hlmbridge.R adds it), fixed effects, VarCorr, and the covariance of the
## fixed effects and of the covariance entries from numDeriv's Richardson-extrapolated Hessian
## of glmer's deviance in (theta, beta) (the entries by the delta method, in lme4's order:
## vech of each VarCorr block, column by column), and ranef(condVar = TRUE).
## glmer runs with bobyqa to rhoend 1e-10 and tolPwrss = 1e-14: PIRLS stops when the penalized
## deviance changes by less than tolPwrss (relative), and the Laplace deviance carries the
## Cholesky factor of the iterate before the last; with glmer's default 1e-7 (and 1e-10) that
## is a step early (hospital: logLik -524.58200 against -524.58190 at the mode, variance
## 1.25062 against 1.25074), with 1e-12 still 6e-6 on grouseticks; with 1e-14 glmer's Laplace
## is the approximation at the conditional mode, the one the quadrature engine computes. On the
## larger crossed cases (VerbAgg, the simulated one) PIRLS cannot reach 1e-14 in rounding
## ("PIRLS step-halvings failed"): they run with 1e-13 (logLik within 1e-12 of 1e-12's).
##   hospital: fixtures/glmm/hospital.dat (Lillard & Panis; see fixtures/glmm/README.md)
##   grouseticks: lme4::grouseticks (Elston et al. 2001), HEIGHT centred and scaled
##   contraception: mlmRev::Contraception (use and urban as 0/1; livch as its labels)
##   mmmec: mlmRev::Mmmec (melanoma deaths by county, expected deaths as the offset's exposure)
##   verbagg: lme4::VerbAgg (r2 as 0/1; id and item crossed: 316 + 24 random intercepts)
##   crossed: simulated here (set.seed(24)): 12,000 counts, 2,500 x 40 crossed groups (2,540
##     random intercepts, more than the quadrature engine's former dense limit of 2,000)
##   cbpp: lme4::cbpp (incidence of size, period as its labels; binomial trials, logit, probit, cloglog)
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
grouse <- glmm_grouseticks()[c("TICKS", "YEAR", "H", "BROOD", "LOCATION")]
contra <- glmm_contraception()[c("use", "urban", "age", "livch", "district")]
write.csv(hosp, file.path(out, "hospital.csv"), row.names = FALSE)
write.csv(grouse, file.path(out, "grouseticks.csv"), row.names = FALSE)
write.csv(contra, file.path(out, "contraception.csv"), row.names = FALSE)
mm <- mlmRev::Mmmec
mmmec <- data.frame(deaths = mm$deaths, uvb = mm$uvb, expected = mm$expected, region = as.character(mm$region))
write.csv(mmmec, file.path(out, "mmmec.csv"), row.names = FALSE)
va <- lme4::VerbAgg
verbagg <- data.frame(r2 = as.integer(va$r2 == "Y"), Anger = va$Anger, Gender = as.character(va$Gender),
                      btype = as.character(va$btype), situ = as.character(va$situ), id = as.character(va$id),
                      item = as.character(va$item))
write.csv(verbagg, file.path(out, "verbagg.csv"), row.names = FALSE)
cb <- lme4::cbpp
cbpp <- data.frame(incidence = cb$incidence, size = cb$size, period = as.character(cb$period),
                   herd = as.character(cb$herd))
write.csv(cbpp, file.path(out, "cbpp.csv"), row.names = FALSE)
cbpp_f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
set.seed(24)
crossed <- data.frame(a = sample(2500, 12000, replace = TRUE), b = sample(40, 12000, replace = TRUE),
                      x = rnorm(12000))
crossed$y <- rpois(12000, exp(0.2 + 0.5 * crossed$x + rnorm(2500, sd = 0.6)[crossed$a] +
                              rnorm(40, sd = 0.3)[crossed$b]))
crossed$a <- as.character(crossed$a)
crossed$b <- as.character(crossed$b)
write.csv(crossed, file.path(out, "crossed.csv"), row.names = FALSE)

hosp_f <- hosp ~ loginc + distance + dropout + college + (1 | mother)
cases <- list(
  hospital_laplace = list(data = hosp, family = binomial, nagq = 1L, formula = hosp_f),
  hospital_agq12 = list(data = hosp, family = binomial, nagq = 12L, formula = hosp_f),
  hospital_agq5 = list(data = hosp, family = binomial, nagq = 5L, formula = hosp_f),
  grouse_laplace = list(data = grouse, family = poisson, nagq = 1L, formula = TICKS ~ YEAR + H + (1 | BROOD)),
  grouse_agq9 = list(data = grouse, family = poisson, nagq = 9L, formula = TICKS ~ YEAR + H + (1 | BROOD)),
  grouse_two_levels = list(data = grouse, family = poisson, nagq = 1L,
                           formula = TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)),
  mmmec_offset = list(data = mmmec, family = poisson, nagq = 9L,
                      formula = deaths ~ uvb + offset(log(expected)) + (1 | region)),
  verbagg_crossed = list(data = verbagg, family = binomial, nagq = 1L,
                         formula = r2 ~ (Anger + Gender + btype + situ) + (1 | id) + (1 | item), tol = 1e-13),
  crossed_large = list(data = crossed, family = poisson, nagq = 1L, formula = y ~ x + (1 | a) + (1 | b), tol = 1e-13),
  cbpp_laplace = list(data = cbpp, family = binomial, nagq = 1L, formula = cbpp_f),
  cbpp_agq9 = list(data = cbpp, family = binomial, nagq = 9L, formula = cbpp_f),
  cbpp_probit_laplace = list(data = cbpp, family = binomial(link = "probit"), nagq = 1L, formula = cbpp_f),
  cbpp_probit_agq9 = list(data = cbpp, family = binomial(link = "probit"), nagq = 9L, formula = cbpp_f),
  cbpp_cloglog_laplace = list(data = cbpp, family = binomial(link = "cloglog"), nagq = 1L, formula = cbpp_f),
  contraception_slope = list(data = contra, family = binomial, nagq = 1L,
                             formula = use ~ urban + age + livch + (urban | district))
)
ctrl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-14, optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
res <- lapply(cases, function(k) {
  ctrl <- if (is.null(k$tol)) ctrl else glmerControl(optimizer = "bobyqa", tolPwrss = k$tol,
                                                     optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
  m <- glmer(k$formula, data = k$data, family = k$family, nAGQ = k$nagq, control = ctrl)
  vc <- lme4::VarCorr(m)
  th <- lme4::getME(m, "theta")
  y <- lme4::getME(m, "y")
  ## glmer's nAGQ > 1 deviance leaves out the saturated log likelihood (with binomial trials it
  ## holds the log binomial coefficients, which its Laplace log likelihood includes)
  pw <- m@resp$weights
  constant <- if (k$nagq <= 1) 0 else if (identical(k$family, poisson)) sum(stats::dpois(y, y, log = TRUE)) else
    sum(stats::dbinom(round(pw * y), round(pw), y, log = TRUE))
  dev <- stats::update(m, devFunOnly = TRUE)
  par <- c(th, lme4::fixef(m))
  H <- numDeriv::hessian(dev, par, method.args = list(d = 0.01, r = 4))
  V <- 2 * solve(H)
  nt <- length(th)
  ## the covariance entries as functions of theta: vech of Lambda Lambda' per block
  cnms <- m@cnms
  entries <- function(theta) {
    out <- numeric()
    pos <- 0
    for (blk in seq_along(cnms)) {
      q <- length(cnms[[blk]])
      L <- matrix(0, q, q)
      L[lower.tri(L, diag = TRUE)] <- theta[pos + seq_len(q * (q + 1) / 2)]
      pos <- pos + q * (q + 1) / 2
      G <- L %*% t(L)
      out <- c(out, G[lower.tri(G, diag = TRUE)])
    }
    out
  }
  J <- numDeriv::jacobian(entries, th)
  vc_vcov <- J %*% V[seq_len(nt), seq_len(nt)] %*% t(J)
  fixed_vcov <- V[-seq_len(nt), -seq_len(nt), drop = FALSE]
  list(loglik = as.numeric(logLik(m)) + constant, fixef = as.list(lme4::fixef(m)),
       fixed_names = names(lme4::fixef(m)), fixed_vcov = unname(fixed_vcov),
       vc_entries = entries(th), vc_vcov = unname(vc_vcov), vc_terms = unname(cnms), vc_groups = names(cnms),
       varcorr = lapply(vc, function(x) { x <- unclass(x); attr(x, "stddev") <- NULL;
                                          attr(x, "correlation") <- NULL; x }),
       ranef = as.data.frame(lme4::ranef(m, condVar = TRUE))[, c("grpvar", "grp", "term", "condval", "condsd")],
       nagq = k$nagq, seconds = as.numeric(system.time(
         glmer(k$formula, data = k$data, family = k$family, nAGQ = k$nagq, control = ctrl))[["elapsed"]]))
})
writeLines(jsonlite::toJSON(res, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           file.path(out, "quadrature_reference.json"))
