## The optimum every R reference of the test suite sits at (sourced before the reference
## scripts: differential_reference.R, postfit_reference.R, df_reference.R, profile_reference.R).
##
## lmer with bobyqa to rhoend 1e-12 can stop a few 1e-11 of log likelihood short of the optimum
## on a flat likelihood (BodyWeight's (Time | Rat): 4e-6 relative in the variance parameters),
## while hlmbridge's lme4 engine polishes lmer's optimum with Newton steps on the analytic score
## (hlmbridge/inference/polish.py) and gets the last digits. reference_polish() runs lmer once
## more from the fit's optimum with nloptwrap's BOBYQA at relative tolerances of 1e-15 (no
## absolute ones) and keeps that run only when it raises the log likelihood by more than 1e-12.
##   source("r/tests/reference_fit.R")
##   fit <- lme4::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, control = reference_tight_control())
##   fit <- reference_polish(fit)

reference_tight_control <- function(check_rank = TRUE) {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5), calc.derivs = FALSE,
                    check.rankX = if (check_rank) "message+drop.cols" else "ignore")
}

reference_polish_control <- function() {
  lme4::lmerControl(optimizer = "nloptwrap",
                    optCtrl = list(xtol_abs = 0, ftol_abs = 0, xtol_rel = 1e-15, ftol_rel = 1e-15, maxeval = 1e5),
                    calc.derivs = FALSE)
}

## `refit(control, start)` refits the same model with another control and start values
## (default: update() of the fit's own call).
reference_polish <- function(fit, refit = NULL) {
  if (is.null(refit)) refit <- function(control, start) stats::update(fit, control = control, start = start)
  again <- tryCatch(suppressWarnings(suppressMessages(
    refit(reference_polish_control(), list(theta = lme4::getME(fit, "theta"))))), error = function(e) NULL)
  if (!is.null(again) && as.numeric(stats::logLik(again)) > as.numeric(stats::logLik(fit)) + 1e-12) again else fit
}
