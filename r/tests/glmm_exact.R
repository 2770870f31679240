## The exact Laplace/AGQ optimum of a glmer fit, for the R references of the GLMM tests
## (r/tests/glmm_reference.R, glmm_differential_reference.R, compare_reference.R). Plain R: source it.
## Written apart from r/hlmbridge.R (hlmbridge_glmer_restart), which the lme4 engine uses.

## glmer's deviance function (update(m, devFunOnly = TRUE)) starts its inner iterations (PIRLS)
## at every evaluation from the linear predictor of glmer's first stage, and PIRLS stops short
## of its fixpoint, so its value depends on that start (VerbAgg: 7.5e-4 in the deviance at
## glmer's optimum, 2e-3 in an SE). The exact Laplace/AGQ deviance restarts PIRLS at the point
## itself: the linear predictor of an evaluation at p (X beta + Z Lambda u, without the offset)
## becomes the start, and p is evaluated again until the deviance no longer changes. Written
## here apart from r/hlmbridge.R (hlmbridge_glmer_restart), which the engine uses.
exact_devfun <- function(dev) {
  rho <- environment(dev)
  function(p) {
    value <- dev(p)
    for (i in 1:6) {
      rho$lp0 <- as.numeric(rho$resp$eta - rho$baseOffset)
      last <- value
      value <- dev(p)
      if (abs(value - last) <= 1e-14 * abs(value)) break
    }
    value
  }
}

## The exact optimum from glmer's: Newton steps with numDeriv's gradient and (once, at glmer's
## optimum) Hessian of the exact deviance, until no parameter moves by 1e-6 of its SE (an error after 20); then
## numDeriv's Hessian there. Returns list(par, value, hessian, steps).
exact_optimum <- function(f, x) {
  args <- list(d = 0.01, r = 4)
  H <- numDeriv::hessian(f, x, method.args = args)
  se <- sqrt(diag(2 * solve(H)))
  for (k in 1:20) {
    step <- solve(H, numDeriv::grad(f, x, method.args = list(r = 4)))
    x <- x - step
    if (max(abs(step) / se) <= 1e-6) break
  }
  if (k == 20L) stop("the Newton steps on the exact deviance did not converge")
  list(par = x, value = f(x), hessian = numDeriv::hessian(f, x, method.args = args), steps = k)
}

## A glmer fit's exact optimum: list(par, value (the deviance), hessian, steps, loglik).
exact_fit <- function(m) {
  f <- exact_devfun(stats::update(m, devFunOnly = TRUE))
  out <- exact_optimum(f, c(lme4::getME(m, "theta"), lme4::fixef(m)))
  out$loglik <- -out$value / 2
  out
}
