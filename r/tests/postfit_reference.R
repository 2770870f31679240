## R's reference numbers for hlmbridge's post-fit tests (tests/test_postfit.py): lme4's own
## ranef(condVar = TRUE), fitted, residuals and predict(allow.new.levels = TRUE).
##
## Plain functions, no side effects on the global environment: Python sources this file
## into a private environment. It also runs from R alone, e.g.
##   source("r/tests/postfit_reference.R")
##   fit <- postfit_lmer(lme4::sleepstudy, "Reaction ~ Days + (Days | Subject)", TRUE)
##   str(postfit_ranef(fit)); str(postfit_fitted(fit))
##   str(postfit_predict(fit, data.frame(Days = c(1, NA), Subject = c("308", "new"))))

postfit_control <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5), calc.derivs = FALSE)
}

## An lmer fit at the optimum hlmbridge's lme4 engine reaches (the same control). The
## formula's environment is a fresh child of this file's private environment.
## weights: the name of a column of data holding precision weights, or NULL.
postfit_lmer <- function(data, formula, REML, weights = NULL) {
  f <- stats::as.formula(formula, env = new.env(parent = environment(postfit_lmer)))
  args <- list(formula = f, data = data, REML = REML, control = postfit_control())
  if (!is.null(weights)) args$weights <- data[[weights]]
  do.call(lme4::lmer, args)
}

## A data set of lme4 by name (lme4::sleepstudy, lme4::Penicillin, lme4::Pastes).
postfit_dataset <- function(name) {
  e <- new.env()
  utils::data(list = name, package = "lme4", envir = e)
  get(name, envir = e)
}

## as.data.frame(ranef(fit, condVar = TRUE)) (grpvar, term, grp, condval, condsd) plus each
## group's whole conditional covariance (attr "postVar", q x q per group) in long form:
## pv_grpvar, pv_grp, pv_i, pv_j (1-based term positions), pv_value.
postfit_ranef <- function(fit) {
  re <- lme4::ranef(fit, condVar = TRUE)
  df <- as.data.frame(re)
  pv <- list(grpvar = character(), grp = character(), i = integer(), j = integer(), value = numeric(),
             term_i = character(), term_j = character())
  for (g in names(re)) {
    arr <- attr(re[[g]], "postVar")
    terms <- colnames(re[[g]])
    levs <- rownames(re[[g]])
    q <- dim(arr)[1]
    for (k in seq_along(levs)) for (i in seq_len(q)) for (j in seq_len(q)) {
      pv$grpvar <- c(pv$grpvar, g); pv$grp <- c(pv$grp, levs[k]); pv$i <- c(pv$i, i); pv$j <- c(pv$j, j)
      pv$value <- c(pv$value, arr[i, j, k]); pv$term_i <- c(pv$term_i, terms[i]); pv$term_j <- c(pv$term_j, terms[j])
    }
  }
  list(grpvar = as.character(df$grpvar), term = as.character(df$term), grp = as.character(df$grp),
       condval = df$condval, condsd = df$condsd, pv_grpvar = pv$grpvar, pv_grp = pv$grp,
       pv_term_i = pv$term_i, pv_term_j = pv$term_j, pv_value = pv$value)
}

## lme4's coef(fit): per grouping factor, the groups and a column per coefficient.
postfit_coef <- function(fit) {
  cf <- stats::coef(fit)
  out <- list()
  for (g in names(cf)) {
    m <- as.matrix(cf[[g]])
    out[[g]] <- list(groups = rownames(m), terms = colnames(m), values = as.vector(m))
  }
  out
}

## fitted, residuals (response; Pearson scaled by sigma) and the population-level prediction
## on the fit's rows.
postfit_fitted <- function(fit) {
  list(fitted = unname(stats::fitted(fit)),
       response = unname(stats::residuals(fit, type = "response")),
       pearson = unname(stats::residuals(fit, type = "pearson", scaled = TRUE)),
       marginal = unname(stats::predict(fit, re.form = NA)))
}

## predict() on new data, with every random effect (new groups allowed) and without.
postfit_predict <- function(fit, newdata) {
  list(conditional = unname(stats::predict(fit, newdata = newdata, allow.new.levels = TRUE)),
       marginal = unname(stats::predict(fit, newdata = newdata, re.form = NA)))
}
