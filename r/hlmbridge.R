## hlmbridge: the R side of the lme4 engine.
##
## Plain functions with no side effects on the global environment: they are loaded by
## Python into a private environment, and they also run from R alone, e.g.
##   source("r/hlmbridge.R")
##   d <- hlmbridge_frame(list(y = rnorm(20), g = gl(4, 5)))
##   str(hlmbridge_fit(d, "y ~ 1 + (1 | g)", reml = FALSE))
## Tests: Rscript r/tests/test_hlmbridge.R

## Tight optimizer settings: the defaults stop before the optimum (see STATA_PARITY.md).
hlmbridge_control <- function(rhoend = 1e-12, maxfun = 1e5) {
  lme4::lmerControl(
    optimizer = "bobyqa",
    optCtrl = list(rhoend = rhoend, maxfun = maxfun),
    calc.derivs = FALSE
  )
}

## Build a data frame from a named list of equal-length vectors without copying them.
hlmbridge_frame <- function(columns) {
  n <- if (length(columns)) length(columns[[1L]]) else 0L
  structure(columns, class = "data.frame", row.names = c(NA_integer_, -n))
}

## A factor from 0-based integer codes (NA allowed) and its level labels.
hlmbridge_codes_factor <- function(codes, levels) {
  structure(as.integer(codes) + 1L, levels = as.character(levels), class = "factor")
}

## Fit one model. `factors` is a named list: variable -> base level (NA = lowest level);
## `rows` are 1-based row numbers of the estimation sample (NULL = all rows).
## Returns a plain list; an lme4 error comes back as list(error = message), never as an R error.
hlmbridge_fit <- function(data, formula, reml, factors = list(), rows = NULL,
                          rhoend = 1e-12, maxfun = 1e5) {
  warns <- character()
  msgs <- character()
  d <- if (is.null(rows)) data else data[rows, , drop = FALSE]
  for (nm in names(factors)) {
    f <- factor(d[[nm]])
    base <- factors[[nm]]
    if (!is.na(base)) f <- stats::relevel(f, ref = as.character(base))
    d[[nm]] <- f
  }
  ctrl <- hlmbridge_control(rhoend = rhoend, maxfun = maxfun)
  t0 <- proc.time()[["elapsed"]]
  fit <- withCallingHandlers(
    tryCatch(
      lme4::lmer(stats::as.formula(formula), data = d, REML = reml, control = ctrl),
      error = function(e) e
    ),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, sub("\n$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
  elapsed <- proc.time()[["elapsed"]] - t0
  if (inherits(fit, "error")) {
    return(list(error = conditionMessage(fit), warnings = warns, messages = msgs))
  }
  hlmbridge_summarise(fit, warns, msgs, elapsed)
}

## Everything Python needs from a fitted merMod, as plain vectors and lists.
hlmbridge_summarise <- function(fit, warns = character(), msgs = character(), elapsed = NA_real_) {
  vc <- lme4::VarCorr(fit)
  re <- lapply(vc, function(m) {
    x <- unclass(m)
    attr(x, "stddev") <- NULL
    attr(x, "correlation") <- NULL
    x
  })
  opt <- fit@optinfo
  list(
    fixef = lme4::fixef(fit),
    vcov = as.matrix(stats::vcov(fit)),
    re = unname(re),
    re_groups = names(vc),
    re_terms = unname(lapply(re, rownames)),
    sigma2 = stats::sigma(fit)^2,
    loglik = as.numeric(stats::logLik(fit)),
    singular = lme4::isSingular(fit),
    nobs = stats::nobs(fit),
    optimizer = opt$optimizer,
    conv_code = if (is.null(opt$conv$opt)) 0L else as.integer(opt$conv$opt),
    conv_messages = as.character(unlist(opt$conv$lme4$messages)),
    feval = if (is.null(opt$feval)) NA_integer_ else as.integer(opt$feval),
    warnings = c(warns, as.character(unlist(opt$warnings))),
    messages = msgs,
    elapsed = elapsed
  )
}

## Versions recorded in every result.
hlmbridge_versions <- function() {
  c(
    R = paste(R.version$major, R.version$minor, sep = "."),
    lme4 = as.character(utils::packageVersion("lme4")),
    Matrix = as.character(utils::packageVersion("Matrix"))
  )
}
