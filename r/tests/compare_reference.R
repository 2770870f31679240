## Reference numbers for hlmbridge's model comparisons (tests/test_compare_r.py): lme4's
## anova(m0, m1, ...), lmerTest's ranova and drop1, pbkrtest's KRmodcomp, SATmodcomp and
## PBmodcomp.
##
## Sourced together with df_reference.R and anova_reference.R (anova_reference_model: an lmer fit
## evaluated at hlmbridge's variance components) into a private environment through rpy2; runs in
## R alone too. Needs lme4, lmerTest, pbkrtest, nlme and mlmRev.

## lmer with the tight settings every reference uses (the optimum, not lmer's default stopping).
## do.call puts the data frame itself into the call, so that pbkrtest's update() of the fit
## (SATmodcomp refits with REML = TRUE) finds it. With `at`, the fit is evaluated at hlmbridge's
## variance components (optimizer = NULL), as anova_reference_model does.
compare_reference_lmer <- function(data, formula, reml, at = NULL) {
  fit <- do.call(lmerTest::lmer, list(formula = stats::as.formula(formula), data = data, REML = reml,
                                      control = df_reference_control()))
  if (!is.null(at)) {
    fit <- do.call(lmerTest::lmer, list(formula = stats::as.formula(formula), data = data, REML = reml,
                                        start = list(theta = df_reference_theta(fit, at)),
                                        control = lme4::lmerControl(optimizer = NULL)))
  }
  fit
}

## lme4's anova(m1, m2, ...) of the formulas (all REML or all ML, as `reml` says), refit = TRUE.
## The rows (model names m1, m2, ... in the order given) and the numeric table, and whether lme4
## announced the ML refit.
compare_reference_anova <- function(data, formulas, reml) {
  fits <- lapply(formulas, function(f) compare_reference_lmer(data, f, reml))
  msg <- character()
  av <- withCallingHandlers(
    do.call(stats::anova, c(unname(fits), list(model.names = paste0("m", seq_along(fits))))),
    message = function(m) { msg <<- c(msg, conditionMessage(m)); invokeRestart("muffleMessage") })
  list(models = rownames(av),
       table = unname(as.matrix(av[, c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)")])),
       message = if (length(msg)) trimws(msg[1]) else "")
}

## lmerTest's ranova(fit) on the tight lmer fit (reduce.terms as given).
compare_reference_ranova <- function(data, formula, reml, reduce_terms = TRUE) {
  fit <- compare_reference_lmer(data, formula, reml)
  av <- lmerTest::ranova(fit, reduce.terms = reduce_terms)
  list(terms = rownames(av),
       table = unname(as.matrix(av[, c("npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)")])))
}

## lmerTest's drop1(fit, ddf = ddf) at hlmbridge's variance components `at`.
compare_reference_drop1 <- function(data, formula, reml, at, ddf) {
  fit <- compare_reference_lmer(data, formula, reml, at)
  av <- stats::drop1(fit, ddf = ddf)
  list(terms = rownames(av),
       table = unname(as.matrix(av[, c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")])))
}

## pbkrtest's KRmodcomp and SATmodcomp of the large model (REML, at hlmbridge's variance
## components `at`) against the small one (only its fixed-effect columns matter).
compare_reference_modcomp <- function(data, large, small, at) {
  lg <- compare_reference_lmer(data, large, TRUE, at)
  sm <- compare_reference_lmer(data, small, TRUE)
  kr <- pbkrtest::KRmodcomp(lg, sm)
  sat <- pbkrtest::SATmodcomp(lg, sm)
  list(kr = unname(c(kr$stats$Fstat, kr$stats$ndf, kr$stats$ddf, kr$stats$F.scaling, kr$stats$p.value)),
       sat = unname(c(sat$test$statistic, sat$test$ndf, sat$test$ddf, sat$test$p.value)),
       L = unname(as.matrix(kr$L)))
}

## pbkrtest's PBmodcomp(large, small, nsim, seed) on tight ML fits: the observed LRT and the
## p-values of LRT, PBtest, Gamma, Bartlett and F (summary()), and the number of samples used.
compare_reference_pbmodcomp <- function(data, large, small, nsim, seed) {
  lg <- compare_reference_lmer(data, large, FALSE)
  sm <- compare_reference_lmer(data, small, FALSE)
  set.seed(seed)  # PBmodcomp's own seed= does not reach its sampling (pbkrtest 0.5.2): R's stream, seeded here
  pb <- suppressWarnings(pbkrtest::PBmodcomp(lg, sm, nsim = nsim, cl = 1))
  s <- summary(pb)
  tab <- s$test
  list(tobs = unname(tab["LRT", "stat"]), df = unname(tab["LRT", "df"]),
       p = unname(tab[c("LRT", "PBtest", "Gamma", "Bartlett", "F"), "p.value"]),
       npos = unname(s$samples["npos"]), ref = as.numeric(pb$ref))
}

## lme4's anova(m1, m2, ...) of binomial glmer fits (Laplace, tight bobyqa): the numeric table,
## with each fit's log likelihood at its exact Laplace optimum (exact_fit, r/tests/glmm_exact.R,
## sourced beside this file: glmer's own is PIRLS-path dependent, 1e-4 on the hospital data) and
## the columns that follow from it as lme4's anova computes them.
compare_reference_glmer_anova <- function(data, formulas) {
  ctrl <- lme4::glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
  fits <- lapply(formulas, function(f) lme4::glmer(stats::as.formula(f), data = data, family = stats::binomial,
                                                  control = ctrl))
  av <- do.call(stats::anova, c(unname(fits), list(model.names = paste0("m", seq_along(fits)))))
  ll <- vapply(fits, function(m) exact_fit(m)$loglik, 0)[match(rownames(av), paste0("m", seq_along(fits)))]
  npar <- av[["npar"]]
  n <- stats::nobs(fits[[1]])
  chisq <- c(NA, 2 * diff(ll))
  df <- c(NA, diff(npar))
  tab <- cbind(npar, -2 * ll + 2 * npar, -2 * ll + log(n) * npar, ll, -2 * ll, chisq, df,
               stats::pchisq(chisq, df, lower.tail = FALSE))
  list(models = rownames(av), table = unname(tab), glmer_loglik = av[["logLik"]])
}
