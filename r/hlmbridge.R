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
                          rhoend = 1e-12, maxfun = 1e5, with_vcov = FALSE) {
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
  hlmbridge_summarise(fit, warns, msgs, elapsed, with_vcov)
}

## Everything Python needs from a fitted merMod, flattened into four plain vectors so that
## the Python side reads it with a handful of buffer copies (no per-element R calls):
##   num    double: loglik, sigma^2, isSingular, optimizer code, fevals, lmer seconds, nobs,
##          then the fixed effects, then each random-effects block's covariance (column-major),
##          then (with_vcov) the fixed-effects covariance (column-major)
##   chr    character: optimizer name, fixed-effect names, block group names, block term names,
##          warnings, messages, optimizer convergence messages
##   counts integer: n fixed, n blocks, the size of each block, n warnings, n messages, n conv
hlmbridge_summarise <- function(fit, warns = character(), msgs = character(), elapsed = NA_real_,
                                with_vcov = FALSE) {
  vc <- lme4::VarCorr(fit)
  blocks <- lapply(vc, function(m) {
    x <- unclass(m)
    attr(x, "stddev") <- NULL
    attr(x, "correlation") <- NULL
    x
  })
  opt <- fit@optinfo
  beta <- lme4::fixef(fit)
  conv <- as.character(unlist(opt$conv$lme4$messages))
  warns <- c(warns, as.character(unlist(opt$warnings)))
  list(
    num = c(
      as.numeric(stats::logLik(fit)), stats::sigma(fit)^2, as.numeric(lme4::isSingular(fit)),
      if (is.null(opt$conv$opt)) 0 else as.numeric(opt$conv$opt),
      if (is.null(opt$feval)) NA_real_ else as.numeric(opt$feval),
      elapsed, stats::nobs(fit), unname(beta),
      unlist(lapply(blocks, as.numeric), use.names = FALSE),
      if (with_vcov) as.numeric(as.matrix(stats::vcov(fit))) else numeric()
    ),
    chr = c(
      as.character(opt$optimizer), names(beta), names(vc),
      unlist(lapply(blocks, rownames), use.names = FALSE), warns, msgs, conv
    ),
    counts = c(
      length(beta), length(blocks), vapply(blocks, nrow, 1L, USE.NAMES = FALSE),
      length(warns), length(msgs), length(conv)
    )
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
