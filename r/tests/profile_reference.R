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
