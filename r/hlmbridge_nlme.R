## hlmbridge's nlme engine: one nlme::lme() fit, returned as a plain list.
##
## Sourced by hlmbridge (engines/r_session.py) into the same private environment as
## r/hlmbridge.R, whose hlmbridge_call_data and hlmbridge_collect it uses; it also runs in R
## alone after source("r/hlmbridge.R"); source("r/hlmbridge_nlme.R"):
##
##   d <- nlme::Orthodont
##   out <- hlmbridge_nlme_fit(d, "distance ~ 1 + age", "list(Subject = nlme::pdIdent(~ 1))",
##                             "nlme::corAR1(form = ~ age / 2 | Subject)", "", FALSE)
##   out$loglik
##
## `fixed`, `random`, `correlation` and `weights` are R code ("" = argument left out), as
## hlmbridge's spec/render_nlme.py writes them; `reml` TRUE/FALSE; `factors` and `rows` as in
## hlmbridge_fit (r/hlmbridge.R). The optimizer runs with tight tolerances (nlminb, relative
## tolerance 1e-12) so that the estimates are the optimum to the digits compared.
## Returns list(loglik, sigma2, fixef, fixed_names, vcov, re_names, re_terms, re_sizes, re_cov,
## cor_coef, var_coef, var_levels, nobs, n_used, fixed_fitted, iterations, elapsed, warnings, messages)
## or list(error = message).

hlmbridge_nlme_control <- function() {
  nlme::lmeControl(maxIter = 500, msMaxIter = 1000, niterEM = 25, msVerbose = FALSE, tolerance = 1e-10,
                   msTol = 1e-12, opt = "nlminb", returnObject = FALSE,
                   msMaxEval = 2000, sing.tol = 1e-20)
}

hlmbridge_nlme_call <- function(fixed, random, correlation, weights, reml) {
  args <- c(sprintf("fixed = %s", fixed), sprintf("random = %s", random))
  if (nzchar(correlation)) args <- c(args, sprintf("correlation = %s", correlation))
  if (nzchar(weights)) args <- c(args, sprintf("weights = %s", weights))
  args <- c(args, sprintf('method = "%s"', if (isTRUE(reml)) "REML" else "ML"), "data = d",
            "control = hlmbridge_nlme_control()")
  str2lang(sprintf("nlme::lme(%s)", paste(args, collapse = ", ")))
}

hlmbridge_nlme_fit <- function(data, fixed, random, correlation, weights, reml, factors = list(), rows = NULL) {
  prep <- hlmbridge_call_data(data, hlmbridge_nlme_call(fixed, random, correlation, weights, reml),
                              factors, rows)
  d <- prep$d
  t0 <- proc.time()[["elapsed"]]
  got <- hlmbridge_collect(prep$call, environment())
  elapsed <- proc.time()[["elapsed"]] - t0
  fit <- got$value
  if (inherits(fit, "error")) {
    return(list(error = conditionMessage(fit), warnings = got$warnings, messages = got$messages))
  }
  sigma2 <- fit$sigma^2
  re <- nlme::pdMatrix(fit$modelStruct$reStruct)  # relative to sigma^2, innermost level last
  cs <- fit$modelStruct$corStruct
  vs <- fit$modelStruct$varStruct
  var_coef <- if (is.null(vs)) numeric() else stats::coef(vs, unconstrained = FALSE, allCoef = TRUE)
  list(
    loglik = as.numeric(stats::logLik(fit)),
    sigma2 = sigma2,
    fixef = as.numeric(nlme::fixef(fit)),
    fixed_names = names(nlme::fixef(fit)),
    vcov = as.numeric(stats::vcov(fit)),
    re_names = names(re),
    re_terms = unlist(lapply(re, rownames), use.names = FALSE),
    re_sizes = vapply(re, nrow, 1L),
    re_cov = unlist(lapply(re, function(m) as.numeric(m) * sigma2), use.names = FALSE),
    cor_coef = if (is.null(cs)) numeric() else as.numeric(stats::coef(cs, unconstrained = FALSE)),
    var_coef = as.numeric(var_coef),
    var_levels = names(var_coef),
    nobs = nrow(fit$data) - length(fit$na.action),
    n_used = as.integer(fit$dims$N),
    fixed_fitted = as.numeric(stats::fitted(fit, level = 0)),  # X beta, rows in the data's order
    iterations = as.numeric(fit$numIter),
    elapsed = elapsed,
    warnings = got$warnings,
    messages = got$messages
  )
}

hlmbridge_nlme_versions <- function() {
  c(nlme = as.character(utils::packageVersion("nlme")))
}
