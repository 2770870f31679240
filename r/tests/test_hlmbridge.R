## Runs in R alone: Rscript r/tests/test_hlmbridge.R  (from the repository root)
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)])))
env <- new.env()
sys.source(file.path(here, "..", "hlmbridge.R"), envir = env)

data("sleepstudy", package = "lme4")
d <- env$hlmbridge_frame(list(
  Reaction = sleepstudy$Reaction, Days = sleepstudy$Days,
  Subject = env$hlmbridge_codes_factor(as.integer(sleepstudy$Subject) - 1L, levels(sleepstudy$Subject))
))
stopifnot(is.data.frame(d), nrow(d) == 180L, is.factor(d$Subject))

res <- env$hlmbridge_fit(d, "Reaction ~ 1 + Days + (1 + Days | Subject)", reml = TRUE, with_vcov = TRUE)
stopifnot(is.null(res$error), res$num[7] == 180)
## counts: 2 fixed effects, 1 block of size 2, no warnings/messages/convergence messages
stopifnot(identical(as.integer(res$counts), c(2L, 1L, 2L, 0L, 0L, 0L)))
stopifnot(identical(res$chr[2:6], c("(Intercept)", "Days", "Subject", "(Intercept)", "Days")))
ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = TRUE,
                  control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12)))
stopifnot(abs(res$num[1] - as.numeric(logLik(ref))) < 1e-7)
stopifnot(max(abs(res$num[8:9] - lme4::fixef(ref))) < 1e-6)
G <- unclass(lme4::VarCorr(ref))$Subject
stopifnot(max(abs(res$num[10:13] - as.numeric(G))) < 1e-3)
stopifnot(max(abs(res$num[14:17] - as.numeric(as.matrix(vcov(ref))))) < 1e-6)

## An lme4 error comes back as data, not as an R error; warnings are captured, not printed.
bad <- env$hlmbridge_fit(d, "Reaction ~ 1 + Days + (1 | nosuchgroup)", reml = TRUE)
stopifnot(is.character(bad$error), nchar(bad$error) > 0)

## Factor coding with an explicit base level.
d2 <- d
d2$hi <- as.numeric(sleepstudy$Days >= 5)
res2 <- env$hlmbridge_fit(d2, "Reaction ~ 1 + hi + (1 | Subject)", reml = FALSE, factors = list(hi = 1))
stopifnot(identical(res2$chr[2:3], c("(Intercept)", "hi0")))

## lmer's own weights=, offset= and subset= arguments, passed through unchanged.
w <- sleepstudy$Days + 1
off <- sleepstudy$Days / 10
rows <- which(sleepstudy$Days != 3)
res3 <- env$hlmbridge_fit(d, "Reaction ~ 1 + Days + (1 + Days | Subject)", reml = TRUE, rows = rows,
                          weights = w, offset = off)
ref3 <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = TRUE, weights = Days + 1,
                   offset = Days / 10, subset = Days != 3,
                   control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12)))
stopifnot(is.null(res3$error), res3$num[7] == length(rows))
stopifnot(abs(res3$num[1] - as.numeric(logLik(ref3))) < 1e-7)

## The design checksums: column sums, sums of squares and X'y of R's own model matrix.
X <- lme4::getME(ref3, "X")
stopifnot(max(abs(res3$design - c(colSums(X), colSums(X * X), crossprod(X, lme4::getME(ref3, "y"))))) < 1e-8)

## rhoend = NULL: lmer's default optimizer (nloptwrap); on a boundary it finishes with tight
## bobyqa from that optimum, which reaches the same optimum as tight bobyqa from lmer's start.
res4 <- env$hlmbridge_fit(d, "Reaction ~ 1 + Days + (1 + Days | Subject)", reml = TRUE, rhoend = NULL)
stopifnot(res4$chr[1] == "nloptwrap", res4$feval_before == 0)
stopifnot(abs(res4$num[1] - as.numeric(logLik(ref))) < 1e-6)
set.seed(1)
d5 <- env$hlmbridge_frame(list(y = rnorm(120), x = rnorm(120), g = gl(12, 10)))
res5 <- env$hlmbridge_fit(d5, "y ~ 1 + x + (1 + x | g)", reml = FALSE, rhoend = NULL)
ref5 <- lme4::lmer(y ~ x + (x | g), d5, REML = FALSE, control = env$hlmbridge_control())
stopifnot(lme4::isSingular(ref5), res5$feval_before > 0, res5$chr[1] == "bobyqa")
stopifnot(abs(res5$num[1] - as.numeric(logLik(ref5))) < 1e-8)
## The covariance matrix (not lme4's theta: with a zero intercept variance the correlation
## is not identified, and theta may sit anywhere on that ridge).
G5 <- unclass(lme4::VarCorr(ref5))$g
stopifnot(max(abs(res5$num[10:13] - as.numeric(G5))) < 1e-6 * max(abs(G5)))

## Control objects are built once and reused, and equal lmerControl()'s; a user's
## options(lmerControl = ...) still reaches them.
stopifnot(identical(env$hlmbridge_control(NULL), lme4::lmerControl(calc.derivs = FALSE)))
stopifnot(identical(env$hlmbridge_control(1e-12, 1e5),
                    lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                                      calc.derivs = FALSE)))
stopifnot(identical(env$hlmbridge_control(1e-12, 1e5, 1e-3)$optCtrl, list(rhoend = 1e-12, maxfun = 1e5, rhobeg = 1e-3)))
old_opt <- options(lmerControl = list(check.nlev.gtr.1 = "warning"))
stopifnot(env$hlmbridge_control(NULL)$checkControl$check.nlev.gtr.1 == "warning")
options(old_opt)
stopifnot(env$hlmbridge_control(NULL)$checkControl$check.nlev.gtr.1 == "stop")

## hlmbridge_collect: warnings and messages kept in order (muffled), an error returned, the
## call evaluated in the environment given.
got <- env$hlmbridge_collect(quote({ warning("w1"); message("m1"); warning("w2"); x + 1 }),
                             list2env(list(x = 41)))
stopifnot(identical(got$value, 42), identical(got$warnings, c("w1", "w2")), identical(got$messages, "m1"))
got <- env$hlmbridge_collect(quote(stop("boom")), new.env())
stopifnot(inherits(got$value, "error"), identical(conditionMessage(got$value), "boom"))

## hlmbridge_hessian: 2n(n + 1) + 1 evaluations (the diagonal points reused by the mixed
## derivatives), Richardson-extrapolated: exact to rounding on a quartic, whose O(h^2) term the
## extrapolation removes (a single central-difference step is off by h^2 there).
calls <- 0L
quartic <- function(p) {
  calls <<- calls + 1L
  p[1]^4 + 3 * p[1]^2 * p[2] + p[2]^2 * p[3] - 2 * p[3]^3 + p[1] * p[3]
}
x0 <- c(0.7, -1.3, 2.1)
got <- env$hlmbridge_hessian(quartic, x0)
want_g <- c(4 * x0[1]^3 + 6 * x0[1] * x0[2] + x0[3], 3 * x0[1]^2 + 2 * x0[2] * x0[3], x0[2]^2 - 6 * x0[3]^2 + x0[1])
want_H <- matrix(c(12 * x0[1]^2 + 6 * x0[2], 6 * x0[1], 1,
                   6 * x0[1], 2 * x0[3], 2 * x0[2],
                   1, 2 * x0[2], -12 * x0[3]), 3, 3)
stopifnot(calls == 2L * 3L * (3L + 1L) + 1L, isTRUE(all.equal(got$value, quartic(x0))),
          max(abs(got$gradient - want_g)) < 1e-8, max(abs(got$hessian - want_H)) < 1e-7)

## The global environment is untouched.
stopifnot(!exists("hlmbridge_fit", envir = globalenv(), inherits = FALSE))
cat("r/tests/test_hlmbridge.R: all checks passed\n")
