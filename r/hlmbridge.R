## hlmbridge: the R side of the lme4 engine.
##
## Plain functions with no side effects on the global environment: they are loaded by
## Python into a private environment, and they also run from R alone, e.g.
##   source("r/hlmbridge.R")
##   d <- hlmbridge_frame(list(y = rnorm(20), g = gl(4, 5)))
##   str(hlmbridge_fit(d, "y ~ 1 + (1 | g)", reml = FALSE))
## Tests: Rscript r/tests/test_hlmbridge.R

## Optimizer settings. With `rhoend` (the tight settings): bobyqa to rhoend 1e-12, which
## reaches the optimum's last digits (lmer's defaults stop about 1e-5 short in the variance
## parameters; see STATA_PARITY.md). With rhoend = NULL: lmer's default optimizer
## (nloptwrap, its default tolerances), which the Python side then polishes with Newton steps
## on the analytic score (hlmbridge/inference/polish.py). calc.derivs = FALSE either way:
## hlmbridge computes the information itself.
## `rhobeg` (optional): bobyqa's first trust-region radius, small when it starts at an optimum.
## Each distinct control object is built once and reused: lmerControl() costs about 0.25 ms,
## 2% of a small fit. The key includes getOption("lmerControl"), which lmerControl() reads for
## its defaults, so a user's options() still take effect.
hlmbridge_control <- local({
  made <- list()
  function(rhoend = 1e-12, maxfun = 1e5, rhobeg = NULL) {
    key <- list(rhoend, maxfun, rhobeg, getOption("lmerControl"))
    for (m in made) if (identical(m$key, key)) return(m$ctrl)
    ctrl <- if (is.null(rhoend)) {
      lme4::lmerControl(calc.derivs = FALSE)
    } else {
      opt <- list(rhoend = rhoend, maxfun = maxfun)
      if (!is.null(rhobeg)) opt$rhobeg <- rhobeg
      lme4::lmerControl(optimizer = "bobyqa", optCtrl = opt, calc.derivs = FALSE)
    }
    if (length(made) < 8L) made[[length(made) + 1L]] <<- list(key = key, ctrl = ctrl)
    ctrl
  }
})

## bobyqa's first radius when it restarts from another optimizer's optimum: the default
## optimizer stops within about 1e-5 of the optimum in theta.
hlmbridge_restart_rhobeg <- 1e-3

## Build a data frame from a named list of equal-length vectors without copying them.
hlmbridge_frame <- function(columns) {
  n <- if (length(columns)) length(columns[[1L]]) else 0L
  structure(columns, class = "data.frame", row.names = c(NA_integer_, -n))
}

## A factor from 0-based integer codes (NA allowed) and its level labels.
hlmbridge_codes_factor <- function(codes, levels) {
  structure(as.integer(codes) + 1L, levels = as.character(levels), class = "factor")
}

## The same as an ordered factor (hlmbridge passes a pandas ordered Categorical this way).
hlmbridge_ordered <- function(f) {
  class(f) <- c("ordered", "factor")
  f
}

## The environment a formula is evaluated in: base R (factor, cut, interaction, mean, ...)
## plus the stats and splines functions hlmbridge's formulas may call; nothing from the
## global environment.
hlmbridge_formula_env <- function() {
  e <- new.env(parent = baseenv())
  for (fn in c("poly", "relevel", "offset", "sd", "median", "C", "contr.treatment", "contr.sum",
               "contr.helmert", "contr.poly", "contr.SAS"))
    assign(fn, get(fn, envir = asNamespace("stats")), envir = e)
  for (fn in c("ns", "bs")) assign(fn, get(fn, envir = asNamespace("splines")), envir = e)
  e
}

## The data and the call of one fit: `factors` (variable -> base level, NA = lowest) coded as
## factors, `rows` (1-based, NULL = all) given as `subset=`, `weights` and `offset` (per-row
## vectors over all rows, NULL = none) and `contrasts` (NULL = none) as the fitting function's
## own arguments. `call` is the fitting call with `data = d`; returns list(d, call).
hlmbridge_call_data <- function(data, call, factors = list(), rows = NULL, weights = NULL, offset = NULL,
                                contrasts = NULL) {
  d <- data
  for (nm in names(factors)) {
    x <- d[[nm]]
    ## Stata's factor values are whole numbers: label them as integers (200000, not R's
    ## 2e+05 for a double), as hlmbridge's design does.
    if (is.double(x) && all(x == round(x), na.rm = TRUE) && max(abs(x), 0, na.rm = TRUE) < .Machine$integer.max)
      x <- as.integer(round(x))
    f <- factor(x)
    base <- factors[[nm]]
    if (!is.na(base)) f <- stats::relevel(f, ref = if (is.integer(x)) as.character(as.integer(base)) else as.character(base))
    d[[nm]] <- f
  }
  if (length(contrasts)) call$contrasts <- contrasts
  if (!is.null(rows)) {
    keep <- logical(nrow(d))
    keep[rows] <- TRUE
    d[[".hlmbridge_keep"]] <- keep
    call$subset <- as.name(".hlmbridge_keep")
  }
  if (!is.null(weights)) {
    d[[".hlmbridge_weights"]] <- weights
    call$weights <- as.name(".hlmbridge_weights")
  }
  if (!is.null(offset)) {
    d[[".hlmbridge_offset"]] <- offset
    call$offset <- as.name(".hlmbridge_offset")
  }
  list(d = d, call = call)
}

## Evaluates `call` in `env`; an error comes back as the condition object, and R's warnings and
## messages are kept (muffled) instead of printed: list(value, warnings, messages).
hlmbridge_collect <- function(call, env) {
  warns <- character()
  msgs <- character()
  value <- withCallingHandlers(
    tryCatch(eval(call, env), error = function(e) e),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, sub("\n$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
  list(value = value, warnings = warns, messages = msgs)
}

## Fit one model. `factors` is a named list: variable -> base level (NA = lowest level);
## `rows` are 1-based row numbers of the estimation sample (NULL = all rows); `weights` and
## `offset` are per-row vectors over all rows of `data` (NULL = none), passed to lmer as its
## own `weights=` and `offset=` arguments. The rows are given to lmer as `subset=`, so R
## evaluates the formula's variables on the whole data as R itself would. `contrasts`
## (NULL = none) is lmer's own `contrasts=` list (names of contrast functions or matrices).
## Optimizer: `rhoend` NULL means lmer's default optimizer, followed (only when that ends on
## a boundary, and `boundary_restart` is TRUE) by tight bobyqa restarted from its optimum; a
## number means bobyqa to that tolerance from lmer's usual start. (hlmbridge's Python side
## first polishes a boundary fit itself, and asks for the restart only where that fails.)
## The result also holds lme4's `theta` and `feval_before`, the evaluations spent before the
## final optimizer run.
## Returns a plain list; an lme4 error comes back as list(error = message), never as an R error.
hlmbridge_fit <- function(data, formula, reml, factors = list(), rows = NULL,
                          rhoend = 1e-12, maxfun = 1e5, with_vcov = FALSE,
                          weights = NULL, offset = NULL, boundary_restart = TRUE, contrasts = NULL) {
  warns <- character()
  msgs <- character()
  prep <- hlmbridge_call_data(data, quote(lme4::lmer(form, data = d, REML = reml, control = ctrl)),
                              factors, rows, weights, offset, contrasts)
  d <- prep$d
  call <- prep$call
  form <- stats::as.formula(formula, env = hlmbridge_formula_env())
  run <- function(ctrl, start) {
    cl <- call
    if (!is.null(start)) cl$start <- list(theta = start)
    got <- hlmbridge_collect(cl, environment())
    warns <<- c(warns, got$warnings)
    msgs <<- c(msgs, got$messages)
    got$value
  }
  t0 <- proc.time()[["elapsed"]]
  fit <- run(hlmbridge_control(rhoend = rhoend, maxfun = maxfun), NULL)
  feval_before <- 0
  ## lmer's default optimizer ended on a boundary (a zero variance or a correlation of +-1),
  ## where hlmbridge's Newton polish cannot work: finish with tight bobyqa from that optimum.
  if (boundary_restart && is.null(rhoend) && !inherits(fit, "error") && lme4::isSingular(fit)) {
    feval_before <- fit@optinfo$feval
    warns <- character()
    msgs <- character()
    fit <- run(hlmbridge_control(rhoend = 1e-12, maxfun = maxfun, rhobeg = hlmbridge_restart_rhobeg),
               lme4::getME(fit, "theta"))
  }
  elapsed <- proc.time()[["elapsed"]] - t0
  if (inherits(fit, "error")) {
    return(list(error = conditionMessage(fit), warnings = warns, messages = msgs))
  }
  out <- hlmbridge_summarise(fit, warns, msgs, elapsed, with_vcov)
  out$theta <- lme4::getME(fit, "theta")
  ## The fixed-effect columns lme4 dropped as rank deficient (chkRank.drop.cols).
  out$dropped <- as.character(names(attr(lme4::getME(fit, "X"), "col.dropped")))
  out$feval_before <- feval_before
  out
}

## What a GLMM fit (glmer, glmer.nb) adds to hlmbridge_summarise's answer about its random
## part: vc_jacobian, d(VarCorr entries)/d(theta) at `theta` (the entries are quadratic in theta,
## so the central difference with step 1 is exact), and glmer's conditional modes and
## conditional SDs (ranef(condVar = TRUE)) in long form, ranef_chr and ranef_num.
hlmbridge_glmm_random_parts <- function(out, fit, theta) {
  vc_of <- function(th) {
    vc <- lme4:::mkVarCorr(1, fit@cnms, lengths(fit@cnms), th,
                           names(fit@flist)[attr(fit@flist, "assign")])
    unlist(lapply(vc, function(m) as.numeric(unclass(m)[seq_len(nrow(m)), seq_len(nrow(m))])), use.names = FALSE)
  }
  out$vc_jacobian <- as.numeric(vapply(seq_along(theta), function(j) {
    e <- numeric(length(theta))
    e[j] <- 1
    (vc_of(theta + e) - vc_of(theta - e)) / 2
  }, numeric(length(vc_of(theta)))))
  re <- as.data.frame(lme4::ranef(fit, condVar = TRUE))
  out$ranef_chr <- c(as.character(re$grpvar), as.character(re$term), as.character(re$grp))
  out$ranef_num <- c(re$condval, re$condsd)
  out
}

## Fit one generalized linear mixed model with glmer: `family` "binomial" or "poisson" (its
## canonical link), `nagq` glmer's nAGQ (1 = Laplace; k > 1 = adaptive Gauss-Hermite
## quadrature at the conditional modes, k points, for one scalar random effect). Other
## arguments as hlmbridge_fit (no weights or offset yet). The estimates are the optimum to the
## digits Stata prints: with `rhoend` NULL, glmer's default optimizers finished by Newton steps
## (hlmbridge_glmer_default; where those cannot finish, the tight settings instead); with a
## number, the tight settings: bobyqa in both stages to that rhoend. PIRLS to tolPwrss 1e-10.
## `polish_steps`: the Newton steps taken (0: the tight settings' optimum).
## `vcov_full` = 2 H^-1, the covariance of the estimates from the full observed information,
## with H the Hessian of glmer's deviance function in c(theta, beta) by hlmbridge_hessian
## (Richardson-extrapolated central differences): at the optimum on the tight path
## (update(fit, devFunOnly = TRUE)), at the point before the last Newton step (at most 1e-4
## standard errors from the optimum) on the polished one.
## glmer's own vcov(fit, use.hessian = TRUE) uses lme4's deriv12 (central differences, step
## 1e-4), which is 1e-5 to 3e-5 relative off on the hospital data (Stata's SEs agree with the
## extrapolated Hessian to 1e-6); so calc.derivs = FALSE, and glmer's gradient check is made
## here on the extrapolated gradient, with lme4's rule and wording (scaled gradient > 0.002). `vc_jacobian`: d VarCorr entries / d theta (central differences,
## exact: the entries are quadratic in theta). `loglik_fixed`: the fixed-only GLM's log
## likelihood (for the LR test). `loglik_constant`: what to add to logLik(fit) for the full
## log likelihood. With nAGQ > 1 glmer's deviance is the sum of deviance residuals, i.e. it
## leaves out the saturated model's log likelihood: 0 for a 0/1 binomial response, but
## sum(dpois(y, y, log = TRUE)) for a Poisson one (grouseticks: -465.5); Laplace (nAGQ = 1)
## includes it. Returns a plain list; an error comes back as list(error =).
## `link`: the binomial family's link (logit, probit, cloglog; NULL: the family's canonical
## link); `weights`: glmer's prior weights (a binomial proportion's numbers of trials) and
## `offset`: an offset= vector, both for the rows of `data` (a cbind() response and
## offset() terms stay in the formula, where glmer reads them).
hlmbridge_glmer <- function(data, formula, family, nagq, factors = list(), rows = NULL, contrasts = NULL,
                            rhoend = 1e-10, maxfun = 1e5, link = NULL, weights = NULL, offset = NULL) {
  warns <- character()
  msgs <- character()
  fam <- switch(family,
                binomial = stats::binomial(link = if (is.null(link)) "logit" else link),
                poisson = stats::poisson(link = if (is.null(link)) "log" else link),
                stop("unknown family ", family))
  ctrl <- hlmbridge_glmer_control(rhoend, maxfun)
  prep <- hlmbridge_call_data(data, quote(lme4::glmer(form, data = d, family = fam, nAGQ = nagq, control = ctrl)),
                              factors, rows, weights, offset, contrasts)
  d <- prep$d
  form <- stats::as.formula(formula, env = hlmbridge_formula_env())
  t0 <- proc.time()[["elapsed"]]
  derivs <- NULL
  polish_steps <- 0L
  if (is.null(rhoend)) {
    ## glmer's default optimizers, finished by Newton steps (hlmbridge_glmer_default); where
    ## they cannot finish it (a warning, a boundary fit, no convergence), the tight refit.
    derivs <- hlmbridge_glmer_default(prep$call, environment(), nagq)
    if (is.null(derivs)) {
      ctrl <- hlmbridge_glmer_control(hlmbridge_glmer_rhoend, maxfun)
    } else {
      fit <- derivs$fit
      polish_steps <- derivs$steps
    }
  }
  if (is.null(derivs)) {
    got <- hlmbridge_collect(prep$call, environment())
    fit <- got$value
    warns <- got$warnings
    msgs <- got$messages
  }
  elapsed <- proc.time()[["elapsed"]] - t0
  if (inherits(fit, "error")) {
    return(list(error = conditionMessage(fit), warnings = warns, messages = msgs))
  }
  tight_steps <- 0L
  if (is.null(derivs)) {
    ## the tight path: glmer's bobyqa optimum is the optimum of its deviance with PIRLS started
    ## from the first stage's linear predictor; restarted at the optimum's own (the exact
    ## Laplace/AGQ deviance, hlmbridge_glmer_restart) and finished by Newton steps there,
    ## except on the boundary, where only the Hessian is taken at glmer's optimum.
    devfun <- stats::update(fit, devFunOnly = TRUE)
    x <- c(lme4::getME(fit, "theta"), lme4::fixef(fit))
    hlmbridge_glmer_restart(devfun, x)
    polished <- if (lme4::isSingular(fit)) NULL else hlmbridge_glmer_polish(devfun, x)
    if (is.null(polished)) {
      derivs <- hlmbridge_hessian(function(p) hlmbridge_glmer_restart(devfun, p), x)
      hlmbridge_glmer_restart(devfun, x)  # the state (conditional modes) at x, exact
      fit <- hlmbridge_glmer_mermod(prep$call, environment(), environment(devfun), x, derivs$value,
                                    fit@optinfo, 0L, "glmer's bobyqa optimum, PIRLS restarted there")
    } else {
      derivs <- polished
      tight_steps <- polished$steps
      fit <- hlmbridge_glmer_mermod(prep$call, environment(), environment(devfun), polished$x, polished$value,
                                    fit@optinfo, polished$evals,
                                    sprintf("bobyqa, then %d Newton step(s) on the exact deviance", polished$steps))
    }
    if (inherits(fit, "error")) return(list(error = conditionMessage(fit), warnings = warns, messages = msgs))
  }
  theta <- lme4::getME(fit, "theta")
  H <- derivs$hessian
  ## lme4 skips these checks on a boundary (singular) fit, which it reports itself
  if (!lme4::isSingular(fit)) warns <- c(warns, hlmbridge_check_conv(derivs$gradient, H))
  out <- hlmbridge_summarise(fit, warns, msgs, elapsed, FALSE)
  out$theta <- theta
  out$dropped <- as.character(names(attr(lme4::getME(fit, "X"), "col.dropped")))
  out$feval_before <- 0
  out$vcov_full <- tryCatch(as.numeric(2 * solve(H)), error = function(e) rep(NA_real_, length(H)))
  out <- hlmbridge_glmm_random_parts(out, fit, theta)
  X <- lme4::getME(fit, "X")
  y <- lme4::getME(fit, "y")
  pw <- fit@resp$weights  # prior weights: a binomial proportion's trials (1 for a 0/1 response)
  g <- stats::glm.fit(X, y, weights = pw, offset = fit@resp$offset, family = fam,
                      control = list(epsilon = 1e-12, maxit = 100))
  out$loglik_fixed <- -(g$aic - 2 * g$rank) / 2
  ## glmer's nAGQ > 1 deviance is relative to the saturated model (sums of deviance residuals):
  ## the saturated log likelihood comes back here (0 for a 0/1 response; with trials it holds
  ## the log binomial coefficients, which glmer's Laplace log likelihood includes).
  out$loglik_constant <- if (nagq <= 1) 0 else if (family == "poisson") sum(stats::dpois(y, y, log = TRUE)) else
    sum(stats::dbinom(round(pw * y), round(pw), y, log = TRUE))
  out$prior_weights_sum <- sum(pw)
  out$offset_sum <- sum(fit@resp$offset)
  out$nagq <- nagq
  ## 0: the tight optimizer's optimum (rhoend given, or the polish refused); k > 0: glmer's
  ## default optimizers and k Newton steps
  out$polish_steps <- polish_steps
  ## Newton steps after the tight optimizer (0: none, the boundary or the polish refused)
  out$tight_steps <- tight_steps
  out
}

## glmer's control for hlmbridge_glmer: bobyqa in both stages to `rhoend` (the tight settings),
## or with rhoend = NULL glmer's own default optimizers (bobyqa, then Nelder-Mead), whose
## optimum hlmbridge_glmer_polish finishes. PIRLS to tolPwrss 1e-10 in every stage (glmer's
## default, 1e-7, leaves evaluation noise the finite differences would magnify, and a looser
## first stage moves the point the second stage's inner iterations start from, which moves the
## deviance itself by up to 1e-4: the standard errors then differ from the tight settings' by
## more than 1e-5). calc.derivs = FALSE either way (hlmbridge_hessian computes the derivatives).
hlmbridge_glmer_control <- function(rhoend, maxfun) {
  opt <- list(maxfun = maxfun)
  if (is.null(rhoend))
    return(lme4::glmerControl(optCtrl = opt, tolPwrss = hlmbridge_glmer_tolpwrss, calc.derivs = FALSE))
  lme4::glmerControl(optimizer = c("bobyqa", "bobyqa"), optCtrl = c(list(rhoend = rhoend), opt),
                     tolPwrss = hlmbridge_glmer_tolpwrss, calc.derivs = FALSE)
}

## The tight settings' rhoend, which the polish falls back to, and PIRLS's tolerance for the
## tight settings and the polish.
hlmbridge_glmer_rhoend <- 1e-10
hlmbridge_glmer_tolpwrss <- 1e-10

## glmer with its default optimizers, run as glmer runs them, then finished by Newton steps
## (hlmbridge_glmer_polish). `call` is hlmbridge_glmer's glmer call (its model-building
## arguments whatever they are), evaluated in `env`. Steps as in lme4::glmer: the call with
## devFunOnly = TRUE (glFormula, the first stage, nAGQ = 0, and the second stage's deviance
## function), the second stage by lme4::optimizeGlmer from the first stage's theta, and the
## merMod by lme4::mkMerMod, with the model frame and random-effects terms of lme4::glFormula
## on the same call. Run so rather than as glmer() and then update(fit, devFunOnly = TRUE)
## because that update repeats the first stage (half of glmer's time on Contraception's
## random slope) and a deviance function made without it starts its inner iterations
## (PIRLS) elsewhere, which moves the deviance by 1e-4. NULL, for the caller's tight refit,
## where a step gave an error, a warning or a message, the optimum is on the boundary (lme4's
## isSingular rule: a diagonal element of a relative covariance factor below 1e-4), or the
## polish cannot finish; else hlmbridge_glmer_polish's list with `fit`, the merMod at the
## polished optimum.
hlmbridge_glmer_default <- function(call, env, nagq) {
  quiet <- function(got) !inherits(got$value, "error") && !length(got$warnings) && !length(got$messages)
  dcall <- call
  dcall$devFunOnly <- TRUE
  got <- hlmbridge_collect(dcall, env)
  if (!quiet(got)) return(NULL)
  devfun <- got$value
  gcall <- call
  gcall[[1L]] <- quote(lme4::glFormula)
  got <- hlmbridge_collect(gcall, env)
  if (!quiet(got)) return(NULL)
  glmod <- got$value
  ctrl <- eval(call$control, env)
  rho <- environment(devfun)
  stage2 <- list(devfun = devfun, ctrl = ctrl, nagq = nagq, theta = rho$pp$theta + 0)
  got <- hlmbridge_collect(quote(lme4::optimizeGlmer(
    devfun, optimizer = ctrl$optimizer[[2L]], restart_edge = ctrl$restart_edge, boundary.tol = ctrl$boundary.tol,
    control = ctrl$optCtrl, start = list(theta = theta), nAGQ = nagq, stage = 2, calc.derivs = FALSE,
    use.last.params = ctrl$use.last.params)), list2env(stage2, parent = environment()))
  if (!quiet(got)) return(NULL)
  opt <- got$value
  lower <- rho$lower[seq_along(rho$pp$theta)]
  if (any(opt$par[seq_along(lower)][lower == 0] < 1e-4)) return(NULL)
  hlmbridge_glmer_restart(devfun, opt$par)
  out <- hlmbridge_glmer_polish(devfun, opt$par)
  if (is.null(out)) return(NULL)
  ## the deviance function's state is at the polished optimum (its last evaluation)
  rho$resp$setOffset(rho$baseOffset)
  polished <- list(par = out$x, fval = out$value, conv = 0L, feval = opt$feval + out$evals,
                   message = sprintf("glmer's default optimizers, then %d Newton step(s)", out$steps))
  for (a in c("optimizer", "control", "warnings")) attr(polished, a) <- attr(opt, a)
  mc <- match.call(lme4::glmer, call)
  mc$formula <- glmod$formula
  out$fit <- lme4::mkMerMod(rho, polished, glmod$reTrms, fr = glmod$fr, mc = mc)
  out
}

## The merMod of a glmer fit whose deviance function (environment `rho`, its state at `x`, the
## last evaluation) hlmbridge has finished: lme4::mkMerMod with the model frame and terms of
## lme4::glFormula on glmer's `call` (evaluated in `env`), `optinfo` the fit's own (its
## optimizer and evaluation count, plus `evals`), `value` the deviance at x. An error object
## where glFormula fails.
hlmbridge_glmer_mermod <- function(call, env, rho, x, value, optinfo, evals, message) {
  gcall <- call
  gcall[[1L]] <- quote(lme4::glFormula)
  gcall$start <- NULL
  glmod <- tryCatch(eval(gcall, env), error = function(e) e)
  if (inherits(glmod, "error")) return(glmod)
  rho$resp$setOffset(rho$baseOffset)
  opt <- list(par = x, fval = value, conv = 0L, feval = optinfo$feval + evals, message = message)
  attr(opt, "optimizer") <- optinfo$optimizer
  attr(opt, "control") <- optinfo$control
  attr(opt, "warnings") <- optinfo$warnings
  mc <- match.call(lme4::glmer, call)
  mc$formula <- glmod$formula
  lme4::mkMerMod(rho, opt, glmod$reTrms, fr = glmod$fr, mc = mc)
}

## glmer's deviance function evaluates at every point from the same start of its inner
## iterations (PIRLS): the linear predictor `lp0` of the end of glmer's first stage. PIRLS stops
## short of its fixpoint (tolPwrss is relative to the penalized weighted RSS), and where it
## stops depends on that start: on VerbAgg's crossed Laplace fit the deviance at glmer's
## optimum is 8151.400478 from the first stage's start and 8151.399729 at the fixpoint, which
## moves the standard errors by 2e-3 relative. This points the start at `x`'s own linear
## predictor (X beta + Z Lambda u at x's conditional modes, offset excluded), re-evaluating
## until the deviance no longer changes (1e-14 relative, `max_rounds` at most; one restart
## from a nearby start is the rule, so two evaluations): the deviance at x is then the exact
## Laplace (or AGQ) deviance, PIRLS's fixpoint, reproducible to rounding, which the Hessian's
## differences need (with the first stage's start, or a neighbour's, PIRLS's stopping error,
## 1e-9 and more, is not small against the second differences, 1e-6: SEs 2e-3 off). Used as
## the deviance of the polish and of every Hessian; costs twice glmer's evaluations. Returns
## the deviance at x, with devfun's state (conditional modes, lp0) left at x.
hlmbridge_glmer_restart <- function(devfun, x, max_rounds = 6L) {
  rho <- environment(devfun)
  value <- devfun(x)
  for (i in seq_len(max_rounds)) {
    rho$lp0 <- as.numeric(rho$resp$eta - rho$baseOffset)
    last <- value
    value <- devfun(x)
    if (abs(value - last) <= 1e-14 * abs(value)) break
  }
  value
}

## Newton's method on glmer's deviance in c(theta, beta) (`devfun`, the second stage's) from
## `x` (the optimum of glmer's default optimizers, which stop about 5e-5 standard errors short
## of it on the hospital data; bobyqa to rhoend 1e-10 takes 2-3 times as many deviance
## evaluations to get there). Each step takes the gradient and Hessian of hlmbridge_hessian
## (the Hessian the standard errors need anyway), so a fit costs one or two of them (2n(n + 1)
## + 1 evaluations each, n parameters) instead of glmer's own deriv12 (2n^2 + 1). Converged
## when a step moves no parameter by more than `settle` of its standard error (the deviance is
## then within its evaluation noise of the optimum: 1e-10); the last step is taken with the
## Hessian before it (over a move of 1e-4 standard errors the Hessian changes by about 1e-4 /
## sqrt(n) relative, below the 1e-5 the standard errors are checked to; glmer's defaults stop
## 2e-5 to 5e-5 standard errors short on the hospital data, so one step is the rule).
## NULL when the Hessian is not positive definite, a step leaves the parameter space or raises
## the deviance even when quartered, or `max_steps` do not converge; else list(x, value = the
## deviance at x, gradient (at x, for lme4's convergence check), hessian (at the point before
## the last step), steps, evals), with devfun's state left at x (its last evaluation).
hlmbridge_glmer_polish <- function(devfun, x, max_steps = 4L, settle = 1e-4) {
  rho <- environment(devfun)
  lower <- rho$lower
  evals <- 0L
  f <- function(p) {
    evals <<- evals + 1L
    hlmbridge_glmer_restart(devfun, p)  # the exact deviance (PIRLS restarted at p itself)
  }
  for (k in seq_len(max_steps)) {
    d <- hlmbridge_hessian(f, x)
    R <- tryCatch(chol(d$hessian), error = function(e) NULL)
    if (is.null(R) || !all(is.finite(d$gradient))) return(NULL)
    step <- backsolve(R, forwardsolve(t(R), d$gradient))
    se <- sqrt(2 * diag(chol2inv(R)))
    accepted <- FALSE
    for (t in c(1, 0.5, 0.25)) {
      xn <- x - t * step
      if (any(xn < lower)) next
      fn <- f(xn)
      if (is.finite(fn) && fn <= d$value + 1e-12 * abs(d$value)) {
        accepted <- TRUE
        break
      }
    }
    if (!accepted) return(NULL)
    x <- xn
    if (t == 1 && max(abs(step) / se) <= settle) {
      ## the gradient for the convergence check is the polished point's own (central
      ## differences, step 1e-3 relative: its error is far below lme4's tolerance, 0.002)
      h <- 1e-3 * pmax(abs(x), 0.1)
      gradient <- vapply(seq_along(x), function(i) {
        ei <- replace(numeric(length(x)), i, h[i])
        (f(x + ei) - f(x - ei)) / (2 * h[i])
      }, 0)
      value <- f(x)
      return(list(x = x, value = value, gradient = gradient, hessian = d$hessian, steps = k, evals = evals))
    }
  }
  NULL
}

## lme4's convergence checks (lme4:::checkConv and checkHess with glmerControl's defaults:
## scaled gradient tol 0.002, Hessian tol 1e-6), on hlmbridge's gradient and Hessian of the
## deviance, with lme4's messages; glmer itself skips them when calc.derivs = FALSE.
hlmbridge_check_conv <- function(gradient, H, tol_grad = 0.002, tol_hess = 1e-6) {
  out <- character()
  scgrad <- tryCatch(solve(chol(H), gradient), error = function(e) NULL)
  if (is.null(scgrad)) {
    scgrad <- gradient  # lme4: unscaled gradient when the Hessian has no Cholesky factor
  }
  if (max(abs(scgrad)) > tol_grad)
    out <- c(out, sprintf("Model failed to converge with max|grad| = %g (tol = %g, component %d)",
                          max(abs(scgrad)), tol_grad, which.max(abs(scgrad))))
  ev <- tryCatch(eigen(H, symmetric = TRUE, only.values = TRUE)$values, error = function(e) NULL)
  if (is.null(ev)) return(c(out, "Problem with Hessian check (infinite or missing values?)"))
  if (sum(ev < -tol_hess)) {
    out <- c(out, sprintf("Model failed to converge: degenerate  Hessian with %d negative eigenvalues",
                          sum(ev < -tol_hess)))
  } else if (sum(abs(ev) < tol_hess) || inherits(tryCatch(chol(H), error = function(e) e), "error")) {
    out <- c(out, " Hessian is numerically singular: parameters are not uniquely determined")
  } else {
    if (max(ev) * tol_hess > 1)
      out <- c(out, "Model is nearly unidentifiable: very large eigenvalue\n - Rescale variables?")
    if (min(ev) / max(ev) < tol_hess)
      out <- c(out, "Model is nearly unidentifiable: large eigenvalue ratio\n - Rescale variables?")
  }
  out
}

## Gradient and Hessian of `f` at `x` by central differences with steps h and h/2 (h = step *
## max(|x|, 0.1) per coordinate), Richardson-extrapolated (error O(h^4)). A mixed second
## derivative takes the two diagonal points x +- (h_i e_i + h_j e_j) and reuses the points
## x +- h_i e_i of the diagonal and the gradient (f(x + u) + f(x - u) - 2 f(x) is even in the
## step, so the extrapolation applies): 2n(n + 1) + 1 evaluations of f, where the four-point
## formula took 4n^2 + 1 (the two agree to 1e-8 relative on the hospital data's standard
## errors). Used on glmer's deviance, whose evaluation noise (PIRLS to tolPwrss 1e-10) is far
## below the O(h^2) error of a single step. Returns list(gradient, hessian, value = f(x)).
hlmbridge_hessian <- function(f, x, step = 2e-3) {
  n <- length(x)
  f0 <- f(x)
  one <- function(h) {
    fp <- fm <- numeric(n)
    for (i in seq_len(n)) {
      ei <- replace(numeric(n), i, h[i])
      fp[i] <- f(x + ei)
      fm[i] <- f(x - ei)
    }
    H <- diag((fp - 2 * f0 + fm) / h^2, n)
    for (i in seq_len(n - 1L)) for (j in (i + 1L):n) {
      e <- replace(numeric(n), c(i, j), h[c(i, j)])
      H[i, j] <- H[j, i] <- (f(x + e) - fp[i] - fp[j] + 2 * f0 - fm[i] - fm[j] + f(x - e)) / (2 * h[i] * h[j])
    }
    list(g = (fp - fm) / (2 * h), H = H)
  }
  h <- step * pmax(abs(x), 0.1)
  a <- one(h)
  b <- one(h / 2)
  list(gradient = (4 * b$g - a$g) / 3, hessian = (4 * b$H - a$H) / 3, value = f0)
}

## Checksums of R's fixed-effects model matrix, to compare with hlmbridge's own design:
## column sums, sums of squares and X'y (y the response, before any offset).
hlmbridge_design_check <- function(fit) {
  X <- lme4::getME(fit, "X")
  y <- lme4::getME(fit, "y")
  c(colSums(X), colSums(X * X), as.numeric(crossprod(X, y)))
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
    design = hlmbridge_design_check(fit),
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

## A negative binomial GLMM (lme4::glmer.nb, log link; Stata's menbreg with mean dispersion).
## glmer.nb (Laplace; see below for nAGQ > 1) alternates glmer fits at a fixed NB theta with a 1-D search on theta that stops
## loosely (its tol 5e-5 on log theta; the joint gradient is left near 1e-2), so its estimates
## are polished here: bobyqa on the joint deviance of (lme4 theta, beta, log alpha) from
## glmer.nb's optimum (alpha = 1 / NB theta, set through the response module's setTheta), then
## the merMod is built at the polished (theta, beta) for the polished alpha (glmer's deviance
## function for that family, lme4::mkMerMod), so that every quantity taken from the fit
## (VarCorr, ranef, logLik) belongs to the joint optimum. The joint deviance is the exact one
## (PIRLS restarted at each point, hlmbridge_glmer_restart). The
## covariance of (theta, beta, log alpha) is twice the inverse Hessian of that joint deviance
## (hlmbridge_hessian). With nAGQ > 1 glmer's deviance leaves out the saturated log likelihood,
## which depends on alpha: it is added inside the joint deviance and returned as loglik_constant.
hlmbridge_glmer_nb <- function(data, formula, nagq, factors = list(), rows = NULL, contrasts = NULL,
                               rhoend = 1e-10, maxfun = 1e5, offset = NULL) {
  ctrl <- lme4::glmerControl(optimizer = c("bobyqa", "bobyqa"), optCtrl = list(rhoend = rhoend, maxfun = maxfun),
                             tolPwrss = 1e-10, calc.derivs = FALSE)
  ## glmer.nb's own search runs at bobyqa's and PIRLS' default tolerances (with rhoend = 1e-10
  ## its quadrature fits on grouseticks fail, "pwrssUpdate did not converge"); the polish and
  ## the refit below use ctrl.
  ctrl0 <- lme4::glmerControl(optimizer = c("bobyqa", "bobyqa"), calc.derivs = FALSE)
  ## With nAGQ > 1 glmer.nb's search on theta maximizes glmer's quadrature log likelihood, which
  ## leaves out the saturated term, and that term depends on theta: on grouseticks it ends at
  ## log alpha = 1.25 where the joint optimum is -1.19 (log likelihood -1016.7 against -889.6).
  ## glmer.nb is therefore run with Laplace (nAGQ = 1), a start near the optimum, and the
  ## quadrature deviance is polished from there.
  prep <- hlmbridge_call_data(data, quote(lme4::glmer.nb(form, data = d, nAGQ = 1L, control = ctrl0)),
                              factors, rows, NULL, offset, contrasts)
  d <- prep$d
  form <- stats::as.formula(formula, env = hlmbridge_formula_env())
  t0 <- proc.time()[["elapsed"]]
  got <- hlmbridge_collect(prep$call, environment())
  fit0 <- got$value
  if (inherits(fit0, "error")) {
    return(list(error = conditionMessage(fit0), warnings = got$warnings, messages = got$messages))
  }
  y <- lme4::getME(fit0, "y")
  nt <- length(lme4::getME(fit0, "theta"))
  nb <- length(lme4::fixef(fit0))
  devfun <- stats::update(fit0, devFunOnly = TRUE, control = ctrl, nAGQ = nagq)
  rho <- environment(devfun)
  saturated <- function(size) if (nagq <= 1) 0 else sum(stats::dnbinom(y, size = size, mu = y, log = TRUE))
  joint <- function(p) {
    size <- exp(-p[nt + nb + 1L])
    rho$resp$setTheta(size)
    ## the exact deviance: PIRLS restarted at p (hlmbridge_glmer_restart)
    hlmbridge_glmer_restart(devfun, p[seq_len(nt + nb)]) - 2 * saturated(size)
  }
  p0 <- c(lme4::getME(fit0, "theta"), lme4::fixef(fit0), -log(lme4::getME(fit0, "glmer.nb.theta")))
  dev0 <- joint(p0)
  opt <- minqa::bobyqa(p0, joint, lower = c(fit0@lower, rep(-Inf, nb + 1L)),
                       control = list(rhobeg = 1e-3, rhoend = rhoend, maxfun = maxfun))
  p1 <- if (opt$fval <= dev0) opt$par else p0
  size <- exp(-p1[nt + nb + 1L])
  ## the merMod at the polished (theta, beta) for the polished alpha: glmer's deviance function
  ## for that family (devFunOnly = TRUE), evaluated there with PIRLS restarted, and
  ## lme4::mkMerMod (a glmer refit from p1 would move to the optimum of glmer's own deviance,
  ## whose PIRLS starts from its first stage)
  refit <- quote(lme4::glmer(form, data = d, family = MASS::negative.binomial(theta = size), nAGQ = nagq,
                             control = ctrl, start = list(theta = p1[seq_len(nt)], fixef = p1[nt + seq_len(nb)])))
  prep2 <- hlmbridge_call_data(data, refit, factors, rows, NULL, offset, contrasts)
  dcall <- prep2$call
  dcall$devFunOnly <- TRUE
  got2 <- hlmbridge_collect(dcall, environment())
  fit <- got2$value
  warns <- c(got$warnings, got2$warnings)
  msgs <- c(got$messages, got2$messages)
  if (!inherits(fit, "error")) {
    x1 <- p1[seq_len(nt + nb)]
    value1 <- hlmbridge_glmer_restart(fit, x1)
    info <- list(feval = opt$feval, optimizer = "bobyqa", control = list(rhoend = rhoend), warnings = list())
    fit <- hlmbridge_glmer_mermod(prep2$call, environment(), environment(fit), x1, value1, info, 0L,
                                  "glmer.nb, then bobyqa on the joint deviance with PIRLS restarted")
  }
  elapsed <- proc.time()[["elapsed"]] - t0
  if (inherits(fit, "error")) {
    return(list(error = paste("glmer at glmer.nb's polished dispersion:", conditionMessage(fit)),
                warnings = warns, messages = msgs))
  }
  theta <- lme4::getME(fit, "theta")
  p <- c(theta, lme4::fixef(fit), p1[nt + nb + 1L])
  derivs <- hlmbridge_hessian(joint, p)
  H <- derivs$hessian
  if (!lme4::isSingular(fit)) warns <- c(warns, hlmbridge_check_conv(derivs$gradient, H))
  out <- hlmbridge_summarise(fit, warns, msgs, elapsed, FALSE)
  out$theta <- theta
  out$dropped <- as.character(names(attr(lme4::getME(fit, "X"), "col.dropped")))
  out$feval_before <- 0
  out$vcov_full <- tryCatch(as.numeric(2 * solve(H)), error = function(e) rep(NA_real_, length(H)))
  out$lnalpha <- p1[nt + nb + 1L]
  out$nb_polish <- c(glmer.nb = -dev0 / 2, polished = -joint(p) / 2, evaluations = opt$feval,
                     glmer_nb_lnalpha = p0[nt + nb + 1L], max_abs_gradient = max(abs(derivs$gradient)))
  out <- hlmbridge_glmm_random_parts(out, fit, theta)
  ## Stata's comparison model: the negative binomial regression without random effects
  X <- lme4::getME(fit, "X")
  off <- fit@resp$offset
  fm <- stats::as.formula("y ~ X - 1 + offset(off)",
                          env = list2env(list(y = y, X = X, off = off), parent = asNamespace("stats")))
  g <- hlmbridge_collect(quote(MASS::glm.nb(fm, control = stats::glm.control(epsilon = 1e-12, maxit = 100))),
                         environment())
  out$loglik_fixed_error <- if (inherits(g$value, "error")) conditionMessage(g$value) else ""
  g <- g$value
  out$loglik_fixed <- if (inherits(g, "error")) NA_real_ else as.numeric(stats::logLik(g))
  out$loglik_constant <- saturated(size)
  out$prior_weights_sum <- sum(fit@resp$weights)
  out$offset_sum <- sum(off)
  out$nagq <- nagq
  out
}
