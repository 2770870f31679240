## R's reference for hlmbridge's GLMM predictions, residuals, empirical Bayes means and
## population-averaged means (tests/test_glmm_postfit.py), run as
##   Rscript r/tests/glmm_postfit_reference.R OUTDIR
## Per case it writes the data and new rows the tests use (CSV) and, in one JSON, glmer's own
## numbers: estimates (fixef, VarCorr, ranef with condVar), fitted(), residuals() of every type,
## predict() on the link and response scales with re.form = NULL and NA on the fit's rows and
## on new rows with a group the fit did not see (allow.new.levels = TRUE). For one scalar random
## intercept it adds, at glmer's estimates and computed here with R's integrate() (no
## quadrature rule of hlmbridge's): each group's posterior mean and SD of the random effect
## (Stata's ebmeans and reses) and each row's mean with the random effect integrated out
## (Stata's predict, marginal); for the random-slope case the same marginal means by nested
## integrate() over the two random effects.
##   hospital: fixtures/glmm/hospital.dat (Lillard & Panis; see fixtures/glmm/README.md)
##   grouseticks: lme4::grouseticks (Elston et al. 2001), HEIGHT standardized as H
##   contraception: mlmRev::Contraception (use and urban as 0/1)
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[[1]] else tempdir()
repo <- normalizePath(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
                                "..", ".."))

source(file.path(repo, "r", "tests", "glmm_data.R"))
hosp <- glmm_hospital(repo)
grouse <- glmm_grouseticks()[c("TICKS", "YEAR", "H", "BROOD", "LOCATION")]
contra <- glmm_contraception()[c("use", "urban", "age", "district")]
## new rows: the first rows of each data set, some in groups the fit did not see
hosp_new <- hosp[c(1, 2, 3, 50, 51), ]
hosp_new$mother[c(2, 5)] <- c(100001L, 100002L)
grouse_new <- grouse[c(1, 2, 3, 100, 200), ]
grouse_new$BROOD[c(2, 4)] <- "new_brood"
grouse_new$LOCATION[c(4, 5)] <- "new_location"
contra_new <- contra[c(1, 2, 3, 400, 401), ]
contra_new$district[c(2, 5)] <- "new_district"
data <- list(hospital = hosp, grouse = grouse, contraception = contra)
newdata <- list(hospital = hosp_new, grouse = grouse_new, contraception = contra_new)
for (nm in names(data)) {
  write.csv(data[[nm]], file.path(out, paste0(nm, ".csv")), row.names = FALSE)
  write.csv(newdata[[nm]], file.path(out, paste0(nm, "_new.csv")), row.names = FALSE)
}

cases <- list(
  hospital_agq12 = list(data = "hospital", family = binomial, nagq = 12L,
                        formula = hosp ~ loginc + distance + dropout + college + (1 | mother)),
  grouse_agq9 = list(data = "grouse", family = poisson, nagq = 9L, formula = TICKS ~ YEAR + H + (1 | BROOD)),
  grouse_crossed = list(data = "grouse", family = poisson, nagq = 1L,
                        formula = TICKS ~ YEAR + H + (1 | BROOD) + (1 | LOCATION)),
  contraception_slope = list(data = "contraception", family = binomial, nagq = 1L,
                             formula = use ~ urban + age + (urban | district))
)
ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-10,
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))

## E[g(u) | y] for one group, u ~ N(0, s^2), by integrate() around the posterior mode
posterior_moments <- function(loglik, s) {
  mode <- stats::optimize(function(u) loglik(u) + stats::dnorm(u, 0, s, log = TRUE), c(-20, 20), maximum = TRUE)
  top <- mode$objective
  dens <- function(u) vapply(u, function(v) exp(loglik(v) + stats::dnorm(v, 0, s, log = TRUE) - top), 0)
  lo <- mode$maximum - 15 * s
  hi <- mode$maximum + 15 * s
  m0 <- stats::integrate(dens, lo, hi, subdivisions = 1000L, rel.tol = 1e-12)$value
  ## moments about the mode (no cancellation near 0), to an absolute 1e-13 of the mass
  m1 <- mode$maximum + stats::integrate(function(u) (u - mode$maximum) * dens(u), lo, hi, subdivisions = 1000L,
                                        rel.tol = 1e-10, abs.tol = 1e-13 * m0)$value / m0
  m2 <- stats::integrate(function(u) (u - m1)^2 * dens(u), lo, hi, subdivisions = 1000L, rel.tol = 1e-10,
                         abs.tol = 1e-13 * m0)$value / m0
  c(mean = m1, sd = sqrt(m2))
}

res <- lapply(cases, function(k) {
  d <- data[[k$data]]
  nd <- newdata[[k$data]]
  m <- glmer(k$formula, data = d, family = k$family, nAGQ = k$nagq, control = ctrl)
  vc <- lme4::VarCorr(m)
  inv <- family(m)$linkinv
  r <- list(
    fixef = as.list(lme4::fixef(m)),
    varcorr = lapply(vc, function(x) { x <- unclass(x); attr(x, "stddev") <- NULL; attr(x, "correlation") <- NULL; x }),
    ranef = as.data.frame(lme4::ranef(m, condVar = TRUE))[, c("grpvar", "grp", "term", "condval", "condsd")],
    fitted = unname(fitted(m)),
    residuals = lapply(c(response = "response", pearson = "pearson", deviance = "deviance", working = "working"),
                       function(t) unname(residuals(m, type = t))),
    predict = list(
      link = unname(predict(m)), response = unname(predict(m, type = "response")),
      link_fixed = unname(predict(m, re.form = NA)), response_fixed = unname(predict(m, re.form = NA, type = "response"))),
    predict_new = list(
      link = unname(predict(m, newdata = nd, allow.new.levels = TRUE)),
      response = unname(predict(m, newdata = nd, allow.new.levels = TRUE, type = "response")),
      link_fixed = unname(predict(m, newdata = nd, re.form = NA)),
      response_fixed = unname(predict(m, newdata = nd, re.form = NA, type = "response"))),
    nagq = k$nagq)
  eta <- as.numeric(lme4::getME(m, "X") %*% lme4::fixef(m))
  if (length(vc) == 1L && nrow(vc[[1]]) == 1L) {
    y <- lme4::getME(m, "y")
    s <- sqrt(vc[[1]][1, 1])
    g <- lme4::getME(m, "flist")[[1]]
    ll_obs <- function(i, u) if (identical(k$family, poisson)) stats::dpois(y[i], exp(eta[i] + u), log = TRUE) else
      stats::dbinom(y[i], 1, stats::plogis(eta[i] + u), log = TRUE)
    idx <- split(seq_along(y), g)
    eb <- t(vapply(idx, function(i) posterior_moments(function(u) sum(ll_obs(i, u)), s), c(mean = 0, sd = 0)))
    r$ebmeans <- data.frame(grp = names(idx), mean = unname(eb[, "mean"]), sd = unname(eb[, "sd"]))
    r$marginal <- vapply(eta, function(e) stats::integrate(function(t) inv(e + s * t) * stats::dnorm(t), -40, 40,
                                                           rel.tol = 1e-12)$value, 0)
  }
  if (nrow(vc[[1]]) == 2L) {
    D <- unclass(vc[[1]])
    Z <- lme4::getME(m, "X")[, "urban"]
    rows <- c(1L, 2L, 3L, 400L, 401L)
    L <- t(chol(D[1:2, 1:2]))
    ## posterior means and SDs of (intercept, urban) for three districts: nested integrate() about
    ## glmer's conditional mode, 12 conditional SDs each way
    y <- lme4::getME(m, "y")
    g <- lme4::getME(m, "flist")[[1]]
    Dinv <- solve(D[1:2, 1:2])
    re <- as.data.frame(lme4::ranef(m, condVar = TRUE))
    picks <- levels(g)[c(1L, 2L, 11L)]
    r$ebmeans <- do.call(rbind, lapply(picks, function(lv) {
      i <- which(g == lv)
      at <- re[re$grp == lv, ]
      c0 <- at$condval[at$term == "(Intercept)"]; s0 <- at$condsd[at$term == "(Intercept)"]
      c1 <- at$condval[at$term == "urban"]; s1 <- at$condsd[at$term == "urban"]
      logpost <- function(b0, b1) sum(stats::dbinom(y[i], 1, stats::plogis(eta[i] + b0 + Z[i] * b1), log = TRUE)) -
        0.5 * sum(c(b0, b1) * (Dinv %*% c(b0, b1)))
      top <- logpost(c0, c1)
      moment <- function(f) stats::integrate(function(a) vapply(a, function(b0) stats::integrate(function(b1)
        vapply(b1, function(v) f(b0, v) * exp(logpost(b0, v) - top), 0), c1 - 12 * s1, c1 + 12 * s1,
        rel.tol = 1e-11)$value, 0), c0 - 12 * s0, c0 + 12 * s0, rel.tol = 1e-10)$value
      m0 <- moment(function(b0, b1) 1)
      e0 <- c0 + moment(function(b0, b1) b0 - c0) / m0
      e1 <- c1 + moment(function(b0, b1) b1 - c1) / m0
      data.frame(grp = lv, term = c("(Intercept)", "urban"), mean = c(e0, e1),
                 sd = sqrt(c(moment(function(b0, b1) (b0 - e0)^2), moment(function(b0, b1) (b1 - e1)^2)) / m0))
    }))
    r$marginal_rows <- rows
    r$marginal <- vapply(rows, function(i) stats::integrate(function(t1) vapply(t1, function(a)
      stats::integrate(function(t2) { b <- L %*% rbind(a, t2); inv(eta[i] + b[1, ] + Z[i] * b[2, ]) * stats::dnorm(t2) },
                       -40, 40, rel.tol = 1e-12)$value * stats::dnorm(a), 0), -40, 40, rel.tol = 1e-11)$value, 0)
  }
  r
})
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"), file.path(out, "glmm_postfit_reference.json"))
