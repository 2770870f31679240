## Reference numbers for hlmbridge's ANOVA tables, linear combinations, glance and augment
## (tests/test_anova_r.py): lmerTest's anova(type = 1|2|3, ddf = ...) with show_tests,
## contest(joint = FALSE), and lme4's logLik/AIC/BIC/deviance/fitted/residuals/predict, on an
## lmer fit evaluated (optimizer = NULL) at the variance components hlmbridge estimated.
##
## Sourced together with df_reference.R (its df_reference_theta and df_reference_control) into
## a private environment through rpy2. Needs lme4, lmerTest, pbkrtest, nlme and mlmRev.

## A data set of an R package as a plain data frame.
anova_reference_data <- function(package, name) {
  e <- new.env()
  utils::data(list = name, package = package, envir = e)
  d <- as.data.frame(get(name, envir = e))
  class(d) <- "data.frame"
  d
}

## The lmerTest fit of `formula` at hlmbridge's variance components `at` (see df_reference_fit).
anova_reference_model <- function(data, formula, reml = TRUE, at = NULL, contrasts = NULL) {
  fit <- lmerTest::lmer(stats::as.formula(formula), data = data, REML = reml, contrasts = contrasts,
                        control = df_reference_control())
  if (!is.null(at)) {
    fit <- lmerTest::lmer(stats::as.formula(formula), data = data, REML = reml, contrasts = contrasts,
                          start = list(theta = df_reference_theta(fit, at)),
                          control = lme4::lmerControl(optimizer = NULL))
  }
  fit
}

## Every ANOVA table (types 1-3; Satterthwaite, and Kenward-Roger for REML fits) with its
## hypothesis matrices; lincom rows for the contrast matrix `Lc` (one row per contrast);
## lme4's glance and augment numbers.
anova_reference_fit <- function(data, formula, reml = TRUE, at = NULL, contrasts = NULL, Lc = NULL) {
  fit <- anova_reference_model(data, formula, reml, at, contrasts)
  out <- list(beta = unname(lme4::fixef(fit)), names = names(lme4::fixef(fit)))
  ddfs <- if (reml) c("Satterthwaite", "Kenward-Roger") else "Satterthwaite"
  for (type in 1:3) {
    for (ddf in ddfs) {
      av <- stats::anova(fit, type = type, ddf = ddf)
      key <- paste0("t", type, "_", if (ddf == "Satterthwaite") "sat" else "kr")
      out[[paste0(key, "_terms")]] <- rownames(av)
      out[[key]] <- unname(as.matrix(av[, c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")]))
      if (ddf == "Satterthwaite") {
        hyp <- lmerTest::show_tests(av)
        for (term in names(hyp)) {
          out[[paste0("L", type, ":", term)]] <- unname(as.matrix(hyp[[term]]))
        }
      }
    }
  }
  if (!is.null(Lc)) {
    for (ddf in ddfs) {
      r <- lmerTest::contest(fit, Lc, joint = FALSE, ddf = ddf, confint = TRUE)
      out[[paste0("lincom_", if (ddf == "Satterthwaite") "sat" else "kr")]] <-
        unname(as.matrix(r[, c("Estimate", "Std. Error", "df", "t value", "lower", "upper", "Pr(>|t|)")]))
    }
  }
  ll <- stats::logLik(fit)
  out$glance <- c(nobs = stats::nobs(fit), sigma = stats::sigma(fit), logLik = as.numeric(ll),
                  AIC = stats::AIC(fit), BIC = stats::BIC(fit),
                  deviance = if (reml) NA_real_ else stats::deviance(fit),
                  REMLcrit = if (reml) lme4::REMLcrit(fit) else NA_real_,
                  df.residual = stats::df.residual(fit))
  out$fitted <- unname(stats::fitted(fit))
  out$resid <- unname(stats::residuals(fit))
  out$fixed <- unname(stats::predict(fit, re.form = NA))
  out
}
