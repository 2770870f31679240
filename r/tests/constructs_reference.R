## R's reference for tests/test_formula_constructs_r.py: lmer and its fixed-effects model
## matrix on an R data frame, with lmer's arguments written as an R user writes them (R code
## as text: `contrasts` e.g. "list(f = 'contr.sum')", `subset` e.g. "x > 0").
##
## Plain functions, no side effects on the global environment: Python sources this file (after
## r/tests/reference_fit.R) into a private environment. It also runs from R alone:
##   source("r/tests/reference_fit.R"); source("r/tests/constructs_reference.R")
##   d <- data.frame(y = rnorm(60), s = rep(c("a", "B", "c"), 20), g = gl(10, 6))
##   str(constructs_lmer(d, "y ~ s + (1 | g)", TRUE, "list(s = 'contr.sum')"))

## The splines an R user attaches with library(splines), found by the formulas below.
ns <- splines::ns
bs <- splines::bs

constructs_call <- function(fun, data, formula, REML, contrasts = NULL, subset = NULL, control, start = NULL) {
  ## The formula's environment: a fresh one whose parent is this file's, so R's functions
  ## (and ns, bs) are found and nothing is looked up in, or written to, a caller's variables.
  args <- list(formula = stats::as.formula(formula, env = new.env(parent = environment(constructs_call))),
               data = quote(data), REML = REML, control = control)
  if (!is.null(contrasts)) args$contrasts <- eval(str2lang(contrasts), list(data = data), environment())
  if (!is.null(subset)) args$subset <- str2lang(subset)
  if (!is.null(start)) args$start <- list(theta = start)
  eval(as.call(c(list(fun), args)), list(data = data), environment())
}

## The fit (tight bobyqa, polished) and lFormula's model matrix; an R error comes back as
## list(error = message).
constructs_lmer <- function(data, formula, REML = TRUE, contrasts = NULL, subset = NULL) {
  out <- tryCatch({
    lf <- constructs_call(quote(lme4::lFormula), data, formula, REML, contrasts, subset,
                          reference_tight_control(check_rank = FALSE))
    fit <- suppressMessages(constructs_call(quote(lme4::lmer), data, formula, REML, contrasts, subset,
                                            reference_tight_control()))
    fit <- reference_polish(fit, function(control, start)
      constructs_call(quote(lme4::lmer), data, formula, REML, contrasts, subset, control, start$theta))
    list(lf = lf, fit = fit)
  }, error = function(e) list(error = conditionMessage(e)))
  if (!is.null(out$error)) return(out)
  X <- out$lf$X
  fe <- lme4::fixef(out$fit)
  vc <- as.data.frame(lme4::VarCorr(out$fit))
  list(
    x_names = colnames(X),
    X = unname(matrix(as.numeric(X), nrow(X), ncol(X))),
    rows = as.integer(rownames(out$lf$fr)),
    loglik = as.numeric(stats::logLik(out$fit)),
    fixef_names = names(fe),
    fixef = unname(as.numeric(fe)),
    se = unname(sqrt(diag(as.matrix(stats::vcov(out$fit))))),
    vc = as.numeric(vc$vcov),
    fit = out$fit
  )
}

## lme4's population-level prediction on new rows (R's predict, through makepredictcall).
constructs_predict <- function(fit, newdata) {
  as.numeric(stats::predict(fit, newdata = newdata, re.form = NA))
}
