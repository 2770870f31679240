## Reference numbers for hlmbridge's estimated marginal means, contrasts and margins
## (tests/test_emmeans_r.py, tests/test_margins_r.py): emmeans' emmeans() and contrast() on an
## lmer fit evaluated (optimizer = NULL) at the variance components hlmbridge estimated.
##
## Sourced together with df_reference.R and anova_reference.R (the data sets and the fit at
## hlmbridge's variance components) into a private environment through rpy2. Needs lme4,
## lmerTest, pbkrtest, nlme, mlmRev and emmeans.

## The columns of an emmeans summary after the grid variables, whatever emmeans calls them
## (t.ratio or z.ratio, lower.CL or asymp.LCL).
emmeans_reference_numbers <- function(s, first) {
  s <- as.data.frame(s)
  est <- which(names(s) == first)
  cols <- c(est, est + 1L, est + 2L,
            which(names(s) %in% c("lower.CL", "asymp.LCL")), which(names(s) %in% c("upper.CL", "asymp.UCL")),
            which(names(s) %in% c("t.ratio", "z.ratio")), which(names(s) == "p.value"))
  unname(as.matrix(s[, cols]))
}

## emmeans(fit, specs, by, at, weights, lmer.df = df, counterfactuals) and
## contrast(method, adjust) of the means (method NULL: no contrasts; a list: custom ones).
## Returns the means (estimate, SE, df, lower, upper, t or z, p), their labels (the grid
## variables pasted with " "), and the contrasts with their labels and emmeans' adjustment.
## df NULL: emmeans' default (Kenward-Roger, asymptotic above 3000 observations); a df method
## given is used whatever the size (the limits are raised to the fit's size).
emmeans_reference <- function(fit, specs, by = NULL, at = NULL, weights = "equal", df = NULL,
                              method = NULL, adjust = NULL, level = 0.95, counterfactuals = NULL,
                              type = NULL) {
  args <- list(fit, specs = specs, by = by, weights = weights, level = level)
  if (!is.null(df)) {
    n <- lme4::getME(fit, "N")
    args <- c(args, list(lmer.df = df, lmerTest.limit = n, pbkrtest.limit = n))
  }
  if (!is.null(at)) args$at <- at
  if (!is.null(counterfactuals)) args <- c(args, list(counterfactuals = counterfactuals, rg.limit = 1e6))
  em <- do.call(emmeans::emmeans, args)
  s <- if (is.null(type)) summary(em, infer = c(TRUE, TRUE), level = level) else
    summary(em, infer = c(TRUE, TRUE), level = level, type = type)
  vars <- c(specs, by)
  first <- intersect(c("emmean", "prob", "rate", "response"), names(s))[1]
  out <- list(emm = emmeans_reference_numbers(s, first),
              emm_labels = do.call(paste, c(lapply(vars, function(v) as.character(s[[v]])), sep = " ")))
  if (!is.null(method)) {
    con <- if (is.null(adjust)) emmeans::contrast(em, method = method) else
      emmeans::contrast(em, method = method, adjust = adjust)
    cs <- if (is.null(type)) summary(con, infer = c(TRUE, TRUE), level = level) else
      summary(con, infer = c(TRUE, TRUE), level = level, type = type)
    out$con <- emmeans_reference_numbers(cs, intersect(c("estimate", "odds.ratio", "ratio"), names(cs))[1])
    out$con_labels <- as.character(cs$contrast)
    out$con_adjust <- attr(cs, "mesg")
  }
  out
}

## emtrends(fit, specs, var = var, weights = weights, lmer.df = "asymptotic"): the slope of the
## prediction in `var` (estimate, SE, df, lower, upper, z, p), labelled as emmeans_reference.
emmeans_reference_trend <- function(fit, specs, var, weights = "proportional") {
  tr <- emmeans::emtrends(fit, specs = specs, var = var, weights = weights, lmer.df = "asymptotic")
  s <- summary(tr, infer = c(TRUE, TRUE))
  list(emm = emmeans_reference_numbers(s, paste0(var, ".trend")))
}

## emmeans' reference grid of a GLMM from its fixed part, coefficients and covariance
## (qdrg: the grid emmeans builds for a glmer fit, at hlmbridge's estimates; df = Inf as for glmer).
emmeans_reference_qdrg <- function(formula, data, coef, vcov, link) {
  emmeans::qdrg(stats::as.formula(formula), data = data, coef = coef, vcov = vcov, df = Inf, link = link)
}
