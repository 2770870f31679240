## The reference for hlmbridge's after-fit quantities of a residual-structure fit
## (tests/test_nlme_postfit.py): nlme::lme fitted directly (not through hlmbridge's R code) on
## the data sets of r/tests/nlme_reference.R, and what nlme itself says after the fit.
## Runs in R alone:
##   source("r/tests/nlme_reference.R"); source("r/tests/nlme_postfit_reference.R")
##   d <- hb_nlme_data()$orth
##   out <- hb_postfit(d, "nlme::lme(distance ~ age, random = ~ 1 | id, correlation =
##                     nlme::corAR1(form = ~ occ | id), method = 'ML', data = d, control = ctl)",
##                     "transform(d[d$id %in% c(1, 2, 3), ], age = age + 1)", "id")
##   out$wcov
##
## `call` is R code using `d` and `ctl`; `newcode` R code building new data from `d`;
## `group` the outermost grouping variable. Returned (rows in the data's order, as nlme returns them):
##   loglik; fitted0 / fitted (nlme's fitted(fit, level = 0) and at every level, innermost);
##   fitted_levels (fitted(fit, level = 0:Q) as one vector, column after column);
##   resid_response / resid_pearson / resid_normalized (resid(fit, type = ...));
##   sigma, aic, bic (nlme's sigma, AIC(), BIC()); cor_coef (the correlation function's coefficients,
##   constrained scale); var_coef / var_levels (the variance function's ratios, every stratum's);
##   new (the new data's columns), pred0 / pred1 (predict(fit, new, level = 0 / 1));
##   for one level of random effects: ranef (ranef(fit), column after column), ranef_groups,
##   ranef_terms; condsd, the conditional SDs sqrt(diag(G - G Z_i' V_i^-1 Z_i G)) computed here from
##   nlme's G (getVarCov(fit)), V_i (getVarCov(fit, type = "marginal")) and Z_i (the random
##   formula's model matrix), column after column; sd_re / sd_re_terms, sqrt(diag(G)),
##   and cor_re, cov2cor(G); coef / coef_terms, coef(fit) (groups as ranef's), column after column; wcov, getVarCov(fit, individual = the first
##   row's group, type = "marginal"), and wcor, its cov2cor.

hb_postfit <- function(d, call, newcode, group) {
  fit <- eval(parse(text = call))
  new <- eval(parse(text = newcode))
  Q <- fit$dims$Q
  out <- list(
    loglik = as.numeric(stats::logLik(fit)),
    fitted0 = as.numeric(stats::fitted(fit, level = 0)),
    fitted = as.numeric(stats::fitted(fit)),
    fitted_levels = as.numeric(as.matrix(stats::fitted(fit, level = 0:Q))),
    resid_response = as.numeric(stats::resid(fit, type = "response")),
    resid_pearson = as.numeric(stats::resid(fit, type = "pearson")),
    resid_normalized = as.numeric(stats::resid(fit, type = "normalized")),
    new = as.list(new),
    pred0 = as.numeric(stats::predict(fit, newdata = new, level = 0)),
    pred1 = as.numeric(stats::predict(fit, newdata = new, level = 1)),
    sigma = fit$sigma, aic = stats::AIC(fit), bic = stats::BIC(fit),
    cor_coef = if (is.null(cs <- fit$modelStruct$corStruct)) numeric() else
      as.numeric(stats::coef(cs, unconstrained = FALSE)),
    var_coef = if (is.null(vs <- fit$modelStruct$varStruct)) numeric() else
      as.numeric(stats::coef(vs, unconstrained = FALSE, allCoef = TRUE)),
    var_levels = if (is.null(vs)) character() else names(stats::coef(vs, unconstrained = FALSE, allCoef = TRUE))
  )
  if (Q == 1) {
    re <- nlme::ranef(fit)
    G <- as.matrix(nlme::getVarCov(fit))
    groups <- rownames(re)
    zform <- stats::formula(fit$modelStruct$reStruct)[[1]]
    gvec <- as.character(d[[group]])
    sds <- t(vapply(groups, function(g) {
      V <- as.matrix(nlme::getVarCov(fit, individual = g, type = "marginal")[[1]])
      Z <- stats::model.matrix(zform, d[gvec == g, , drop = FALSE])
      sqrt(pmax(diag(G - G %*% t(Z) %*% solve(V, Z %*% G)), 0))
    }, numeric(ncol(G))))
    if (ncol(G) == 1) sds <- t(sds)
    first <- as.character(d[[group]][1])
    V1 <- as.matrix(nlme::getVarCov(fit, individual = first, type = "marginal")[[1]])
    out <- c(out, list(sd_re = sqrt(diag(G)), sd_re_terms = colnames(G), cor_re = as.numeric(stats::cov2cor(G)),
                       coef = as.numeric(as.matrix(stats::coef(fit))), coef_terms = colnames(stats::coef(fit)),
                       ranef = as.numeric(as.matrix(re)), ranef_groups = groups, ranef_terms = colnames(re),
                       condsd = as.numeric(if (ncol(G) == 1) t(sds) else sds), wcov = as.numeric(V1),
                       wcor = as.numeric(stats::cov2cor(V1)), wsize = nrow(V1)))
  }
  out
}
