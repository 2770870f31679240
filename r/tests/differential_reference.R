## R's reference numbers for hlmbridge's differential tests (tests/test_differential_r.py).
##
## Plain functions, no side effects on the global environment: Python sources this file
## (and r/export_datasets.R, which defines hlmbridge_diff_datasets()) into a private
## environment. It also runs from R alone, e.g.
##   source("r/export_datasets.R"); source("r/tests/differential_reference.R")
##   d <- hlmbridge_diff_datasets()$sleepstudy
##   str(diffref_model_matrix(d, "Reaction ~ Days + (Days | Subject)"))
##   str(diffref_lmer(d, "Reaction ~ Days + (Days | Subject)", REML = TRUE))
##
## lmer's call arguments weights=, offset= and subset= are given as R expressions over the
## data's columns (text, e.g. "Days + 1", "Days > 1"), na_action as the name of R's
## function ("na.omit", "na.exclude", "na.fail"), exactly as an R user writes them.

diffref_control <- function(check_rank = TRUE) {
  lme4::lmerControl(
    optimizer = "bobyqa",
    optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
    calc.derivs = FALSE,
    check.rankX = if (check_rank) "message+drop.cols" else "ignore"
  )
}

## Build the call lmer(formula, data = data, ...) (or lFormula) with the user's argument
## expressions, evaluated the way lmer evaluates them (in the data).
diffref_call <- function(fun, data, formula, REML, weights = NULL, offset = NULL, subset = NULL,
                         na_action = NULL, control, start = NULL) {
  ## The formula's environment: a fresh one whose parent is this file's (private)
  ## environment, so R's functions (log, poly, scale, relevel ...) are found on the search
  ## path and nothing is ever looked up in, or written to, a caller's variables.
  args <- list(formula = stats::as.formula(formula, env = new.env(parent = environment(diffref_call))),
               data = quote(data), REML = REML, control = control)
  if (!is.null(weights)) args$weights <- str2lang(weights)
  if (!is.null(offset)) args$offset <- str2lang(offset)
  if (!is.null(subset)) args$subset <- str2lang(subset)
  if (!is.null(na_action)) args$na.action <- as.name(na_action)
  if (!is.null(start)) args$start <- list(theta = start)
  cl <- as.call(c(list(fun), args))
  eval(cl, list(data = data), environment())
}

## Catch an R error as list(error = message); muffle and collect warnings and messages.
diffref_quietly <- function(expr) {
  warns <- character()
  value <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(list(error = conditionMessage(e)), class = "diffref_error")),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      warns <<- c(warns, sub("\n$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
  list(value = value, warnings = warns)
}

## The fixed-effect model matrix exactly as lmer builds it (lme4::lFormula: the model frame
## of the whole formula after subset= and na.action=, then model.matrix of the fixed part),
## without dropping rank-deficient columns. rows are 1-based positions in `data`.
diffref_model_matrix <- function(data, formula, REML = TRUE, weights = NULL, offset = NULL,
                                 subset = NULL, na_action = NULL) {
  out <- diffref_quietly(diffref_call(quote(lme4::lFormula), data, formula, REML, weights,
                                      offset, subset, na_action, diffref_control(check_rank = FALSE)))
  lf <- out$value
  if (inherits(lf, "diffref_error")) return(list(error = lf$error))
  X <- lf$X
  list(
    names = colnames(X),
    X = unname(matrix(as.numeric(X), nrow(X), ncol(X))),
    rows = as.integer(rownames(lf$fr)),
    y = as.numeric(stats::model.response(lf$fr)),
    warnings = out$warnings
  )
}

## An lmer fit with tight bobyqa settings, polished by a second run from its optimum
## (reference_polish in reference_fit.R, sourced first): log likelihood, fixed effects with SEs, and the rows of
## as.data.frame(VarCorr(fit)).
diffref_lmer <- function(data, formula, REML = TRUE, weights = NULL, offset = NULL,
                         subset = NULL, na_action = NULL) {
  out <- diffref_quietly(diffref_call(quote(lme4::lmer), data, formula, REML, weights, offset,
                                      subset, na_action, diffref_control()))
  fit <- out$value
  if (inherits(fit, "diffref_error")) return(list(error = fit$error))
  fit <- reference_polish(fit, function(control, start) {
    again <- diffref_call(quote(lme4::lmer), data, formula, REML, weights, offset, subset, na_action,
                          control, start = start$theta)
    again
  })
  fe <- lme4::fixef(fit)
  vc <- as.data.frame(lme4::VarCorr(fit))
  list(
    loglik = as.numeric(stats::logLik(fit)),
    fixef_names = names(fe),
    fixef = unname(as.numeric(fe)),
    se = unname(sqrt(diag(as.matrix(stats::vcov(fit))))),
    vc_grp = as.character(vc$grp),
    vc_var1 = ifelse(is.na(vc$var1), "", as.character(vc$var1)),
    vc_var2 = ifelse(is.na(vc$var2), "", as.character(vc$var2)),
    vc_vcov = as.numeric(vc$vcov),
    nobs = as.integer(stats::nobs(fit)),
    rows = as.integer(rownames(stats::model.frame(fit))),
    warnings = out$warnings
  )
}
