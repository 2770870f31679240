## Reference numbers for hlmbridge's profile-likelihood intervals (tests/test_profile.py):
## lme4's confint(fit, method = "profile") on an lmer fit with tight bobyqa settings (the lme4
## engine's), so that R and hlmbridge start from the same optimum.
##
## Sourced into a private environment through rpy2; nothing is written to R's global environment.
## Note: for a REML fit lme4's profile refits by ML first (refitML in lme4:::devfun2), so the
## intervals are those of the ML deviance; hlmbridge does the same.

profile_reference_control <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                    calc.derivs = FALSE)
}

## An lme4 example data set as a plain data frame.
profile_reference_data <- function(name) {
  e <- new.env()
  utils::data(list = name, package = "lme4", envir = e)
  as.data.frame(get(name, envir = e))
}

## Profile intervals of every parameter, with lme4's long names (oldNames = FALSE):
## sd_(Intercept)|id, cor_ses.(Intercept)|id, sigma, then the fixed effects.
##   data     a data frame
##   formula  an lme4 formula (string)
##   reml     TRUE/FALSE
##   level    the confidence level
## Returns list(names, lower, upper, seconds): seconds is the wall time of confint alone.
profile_reference_ci <- function(data, formula, reml = TRUE, level = 0.95) {
  fit <- lme4::lmer(stats::as.formula(formula), data = data, REML = reml,
                    control = profile_reference_control())
  t0 <- proc.time()[["elapsed"]]
  ci <- suppressMessages(stats::confint(fit, method = "profile", level = level, oldNames = FALSE))
  seconds <- proc.time()[["elapsed"]] - t0
  list(names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]), seconds = seconds)
}

## The same on lme4's variance/covariance scale: profile(prof.scale = "varcov") of the random
## part, with names var_(Intercept)|id, cov_ses.(Intercept)|id, sigma (a variance here).
profile_reference_varcov <- function(data, formula, reml = TRUE, level = 0.95) {
  fit <- lme4::lmer(stats::as.formula(formula), data = data, REML = reml,
                    control = profile_reference_control())
  pr <- suppressMessages(stats::profile(fit, which = "theta_", prof.scale = "varcov", signames = FALSE))
  ci <- stats::confint(pr, level = level)
  list(names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]), seconds = 0)
}

## The profile interval of one fixed effect found without lme4's spline: for a value b of the
## coefficient, lmer refits the model by ML with b times its column as an offset and the column
## dropped (from lmer's default start, away from the boundary), so the deviance there is the
## profile's; uniroot finds where the signed root of (deviance - ML deviance) crosses the normal
## quantile. This is what confint(method = "profile") interpolates with splines: near a boundary
## fit (Dyestuff2, whose profile bends where the variance leaves 0) the spline is off by ~2e-4.
##   term     the fixed effect's lme4 name (a column of the model matrix)
## Returns list(names, lower, upper, seconds) for that one term.
profile_reference_fixed_exact <- function(data, formula, term, reml = TRUE, level = 0.95) {
  ctl <- profile_reference_control()
  fit <- lme4::lmer(stats::as.formula(formula), data = data, REML = FALSE, control = ctl)
  t0 <- proc.time()[["elapsed"]]
  X <- lme4::getME(fit, "X")
  j <- match(term, colnames(X))
  if (is.na(j)) stop("no fixed effect named ", term)
  d <- lme4::getData(fit)[rownames(stats::model.frame(fit)), , drop = FALSE]
  d$.y <- lme4::getME(fit, "y")
  d$.Xo <- X[, -j, drop = FALSE]
  bars <- vapply(lme4::findbars(stats::as.formula(formula)), function(b) paste0("(", deparse(b), ")"), "")
  rhs <- paste(c(if (ncol(d$.Xo) > 0) ".Xo", bars), collapse = " + ")
  f <- stats::as.formula(paste(".y ~ 0 +", rhs))
  dev_min <- stats::deviance(fit)
  b_hat <- lme4::fixef(fit)[[j]]
  dev_at <- function(b) {
    d$.off <- b * X[, j]
    m <- suppressMessages(lme4::lmer(f, data = d, REML = FALSE, offset = .off, control = ctl))
    stats::deviance(m)
  }
  zeta <- function(b) sign(b - b_hat) * sqrt(max(dev_at(b) - dev_min, 0))
  q <- stats::qnorm(0.5 + level / 2)
  se <- sqrt(diag(as.matrix(stats::vcov(fit))))[[j]]
  lo <- stats::uniroot(function(b) zeta(b) + q, c(b_hat - 4 * q * se, b_hat), tol = 1e-10)$root
  hi <- stats::uniroot(function(b) zeta(b) - q, c(b_hat, b_hat + 4 * q * se), tol = 1e-10)$root
  list(names = term, lower = lo, upper = hi, seconds = proc.time()[["elapsed"]] - t0)
}
