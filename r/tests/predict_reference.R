## Reference numbers for hlmbridge's predictions and simulations (tests/test_predict_r.py,
## tests/test_simulate_r.py): lme4's predict(re.form = ...) on the fit's rows and on new rows
## (allow.new.levels = TRUE), the population-level prediction's standard error from the
## fixed-effects covariance (sqrt(diag(X vcov X')); lme4 has no se.fit), and lme4's simulate(),
## on an lmer fit evaluated (optimizer = NULL) at the variance components hlmbridge estimated.
##
## Sourced together with df_reference.R (df_reference_theta, df_reference_control) into a
## private environment through rpy2. It also runs from R alone, e.g.
##   source("r/tests/df_reference.R"); source("r/tests/predict_reference.R")
##   d <- predict_reference_data("lme4", "sleepstudy")
##   fit <- predict_reference_model(d, "Reaction ~ Days + (Days | Subject)", TRUE, NULL)
##   str(predict_reference(fit, d[1:3, ], c("NA", "~ (1 | Subject)")))

## A data set of an R package as a plain data frame.
predict_reference_data <- function(package, name) {
  e <- new.env()
  utils::data(list = name, package = package, envir = e)
  d <- as.data.frame(get(name, envir = e))
  class(d) <- "data.frame"
  d
}

## The lmer fit of `formula` at the variance components `at` (NULL: lmer's own optimum);
## `weights`: the name of a column of data holding precision weights, or NULL.
predict_reference_model <- function(data, formula, reml = TRUE, at = NULL, weights = NULL) {
  f <- stats::as.formula(formula, env = new.env(parent = environment(predict_reference_model)))
  args <- list(formula = f, data = data, REML = reml, control = df_reference_control())
  if (!is.null(weights)) args$weights <- data[[weights]]
  fit <- do.call(lme4::lmer, args)
  if (!is.null(at)) {
    args$start <- list(theta = df_reference_theta(fit, at))
    args$control <- lme4::lmerControl(optimizer = NULL)
    fit <- do.call(lme4::lmer, args)
  }
  fit
}

## predict(fit, re.form = ...) for each of `re_forms` ("NA", "NULL" or a one-sided formula as
## text), on the fit's rows (fit_<i>) and on `newdata` (new_<i>, allow.new.levels = TRUE);
## the population-level standard errors on both (se_fit, se_new).
predict_reference <- function(fit, newdata, re_forms) {
  out <- list()
  for (i in seq_along(re_forms)) {
    rf <- switch(re_forms[i], "NA" = NA, "NULL" = NULL, stats::as.formula(re_forms[i]))
    out[[paste0("fit_", i)]] <- unname(stats::predict(fit, re.form = rf))
    out[[paste0("new_", i)]] <- unname(stats::predict(fit, newdata = newdata, re.form = rf,
                                                      allow.new.levels = TRUE))
  }
  V <- as.matrix(stats::vcov(fit))
  X <- lme4::getME(fit, "X")
  out$se_fit <- sqrt(rowSums((X %*% V) * X))
  tt <- stats::delete.response(stats::terms(fit, fixed.only = TRUE))
  mf <- stats::model.frame(tt, newdata)
  Xn <- stats::model.matrix(tt, mf, contrasts.arg = attr(X, "contrasts"))
  out$se_new <- unname(sqrt(rowSums((Xn %*% V) * Xn)))
  out
}

## simulate(fit, nsim, seed, re.form = ...) as a numeric matrix, one column per simulation;
## `re_form` as in predict_reference: "NA" (new random effects, lme4's default), "NULL" (the
## fitted ones, use.u = TRUE) or a one-sided formula (hold those terms, draw the others).
simulate_reference <- function(fit, nsim, seed, re_form = "NA") {
  rf <- switch(re_form, "NA" = NA, "NULL" = NULL, stats::as.formula(re_form))
  s <- stats::simulate(fit, nsim = nsim, seed = seed, re.form = rf)
  unname(as.matrix(s))
}

## confint(fit, method = method, level = level, oldNames = FALSE): names, lower, upper.
confint_reference <- function(fit, method, level) {
  ci <- suppressMessages(stats::confint(fit, method = method, level = level, oldNames = FALSE))
  list(names = rownames(ci), low = unname(ci[, 1]), high = unname(ci[, 2]))
}

## The moments of each row's response under the fitted model, from lme4's own matrices:
## unconditional (new random effects): mean X beta (+ offset), variance
## sigma^2 (diag(Z Lambda Lambda' Z') + 1 / w); conditional on the fitted random effects:
## mean fitted(fit), variance sigma^2 / w (w the precision weights, 1 without).
## (lme4 1.1.31's simulate() draws sigma * rnorm() for a linear mixed model whatever the
## weights, so for a weighted fit these moments, not simulate(), are the model's.)
model_moments <- function(fit, conditional = FALSE) {
  s2 <- stats::sigma(fit)^2
  w <- stats::weights(fit)
  if (conditional) return(list(mean = unname(stats::fitted(fit)), var = unname(s2 / w)))
  ZL <- lme4::getME(fit, "Z") %*% lme4::getME(fit, "Lambda")
  list(mean = unname(stats::predict(fit, re.form = NA)), var = unname(s2 * (Matrix::rowSums(ZL^2) + 1 / w)))
}

## residuals(fit, type = ...) for lme4's four types, and the scaled Pearson residuals.
residuals_reference <- function(fit) {
  out <- lapply(c(response = "response", working = "working", deviance = "deviance", pearson = "pearson"),
                function(t) unname(stats::residuals(fit, type = t)))
  out$pearson_scaled <- unname(stats::residuals(fit, type = "pearson", scaled = TRUE))
  out
}
