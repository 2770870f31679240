## R's reference for Stata's margins after a GLMM (tests/test_margins_glmm.py), run as
##   Rscript r/tests/margins_glmm_reference.R OUTDIR
## Two glmer fits: the hospital births (fixtures/glmm/hospital.dat, logit, nAGQ = 12) and
## lme4::grouseticks (Poisson, nAGQ = 9, HEIGHT standardized as H). For each it writes the data
## (CSV) and, in one JSON, glmer's estimates (fixef, the random-intercept variance), the
## covariance of (variance, beta) from glmer's Hessian of the deviance in (theta, beta) (what
## vcov() takes its beta block from), and, computed here without any quadrature rule of
## hlmbridge's:
##  * the margins with the random effect integrated out (Stata's predict(mu marginal)): each
##    row's mean E[linkinv(eta + s z)], z ~ N(0, 1), by integrate(); a covariate's average
##    derivative as the mean of E[mu.eta(eta + s z)] * d eta / dx, also by integrate();
##  * their Jacobian in (beta, variance) by central finite differences of those integrals, and
##    the delta-method SEs with the covariance's block diagonal (beta block, variance block)
##    and with the full covariance (cross terms included, as Stata's e(V));
##  * (grouseticks) emmeans on the response scale for the fixed-only prediction:
##    emmeans(m, ~ YEAR, counterfactuals = "YEAR") and its trt.vs.ctrl contrasts (Stata's
##    margins YEAR / margins, dydx(YEAR) with predict(mu conditional(fixedonly))).
suppressPackageStartupMessages({
  library(lme4)
  library(emmeans)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[[1]] else tempdir()
repo <- normalizePath(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
                                "..", ".."))

source(file.path(repo, "r", "tests", "glmm_data.R"))
hosp <- glmm_hospital(repo)
grouse <- glmm_grouseticks()[c("TICKS", "YEAR", "H", "BROOD")]
write.csv(hosp, file.path(out, "hospital.csv"), row.names = FALSE)
write.csv(grouse, file.path(out, "grouse.csv"), row.names = FALSE)

ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-10,
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))

## covariance of (variance, beta): glmer's Hessian of the deviance in (theta, beta), as vcov.merMod
## inverts it (solve(H / 2)), with theta mapped to the variance theta^2 (sigma = 1) by the delta method
full_vcov <- function(m) {
  H <- m@optinfo$derivs$Hessian
  V <- solve(H / 2)
  theta <- getME(m, "theta")
  J <- diag(c(2 * theta, rep(1, length(fixef(m)))))
  J %*% V %*% t(J)
}

## E[f(eta + s z)] by integrate(), z ~ N(0, 1)
expect <- function(f, eta, s) {
  integrand <- function(e) function(z) {
    d <- dnorm(z)
    ifelse(d > 0, f(e + s * z) * d, 0)  # exp(eta + s z) overflows where the normal density is 0
  }
  vapply(eta, function(e) integrate(integrand(e), -Inf, Inf, rel.tol = 1e-12, abs.tol = 0,
                                    subdivisions = 1000L)$value, 0.0)
}

## a margin from (beta, variance): list(kind = "mean", X = rows) or list(kind = "slope", X = rows, dX = d eta / dx rows);
## pieces combine with coefficients (a discrete change: +1 and -1)
margin_value <- function(pieces, family, beta, variance) {
  s <- sqrt(variance)
  sum(vapply(pieces, function(p) {
    eta <- drop(p$X %*% beta)
    if (p$kind == "mean") p$coef * mean(expect(family$linkinv, eta, s))
    else p$coef * mean(expect(family$mu.eta, eta, s) * drop(p$dX %*% beta))
  }, 0.0))
}

reference <- function(m, family, margins) {
  beta <- fixef(m)
  variance <- as.numeric(VarCorr(m)[[1]])
  par <- c(variance, beta)
  value <- function(q) vapply(margins, function(pc) margin_value(pc, family, q[-1], q[1]), 0.0)
  est <- value(par)
  J <- matrix(0, length(margins), length(par))
  for (j in seq_along(par)) {
    h <- 1e-4 * max(1, abs(par[j]))
    up <- par
    down <- par
    up[j] <- up[j] + h
    down[j] <- down[j] - h
    J[, j] <- (value(up) - value(down)) / (2 * h)
  }
  V <- full_vcov(m)
  Vb <- V
  Vb[1, -1] <- 0
  Vb[-1, 1] <- 0
  list(estimate = est, se_block = sqrt(rowSums((J %*% Vb) * J)), se_full = sqrt(rowSums((J %*% V) * J)),
       jacobian = J)
}

setting <- function(d, ...) {
  v <- list(...)
  for (n in names(v)) d[[n]] <- v[[n]]
  d
}

res <- list()

## ---- hospital: logit, nAGQ = 12 -------------------------------------------------------
mh <- glmer(hosp ~ loginc + distance + dropout + college + (1 | mother), hosp, family = binomial, nAGQ = 12,
            control = ctrl)
fh <- hosp ~ loginc + distance + dropout + college
Xh <- function(d) model.matrix(fh, d)
dX_distance <- Xh(setting(hosp, distance = 1)) - Xh(setting(hosp, distance = 0))  # d eta / d distance rows
hosp_margins <- list(
  overall = list(list(kind = "mean", coef = 1, X = Xh(hosp))),
  college0 = list(list(kind = "mean", coef = 1, X = Xh(setting(hosp, college = 0)))),
  college1 = list(list(kind = "mean", coef = 1, X = Xh(setting(hosp, college = 1)))),
  dydx_distance = list(list(kind = "slope", coef = 1, X = Xh(hosp), dX = dX_distance)),
  college1_dropout1 = list(list(kind = "mean", coef = 1, X = Xh(setting(hosp, college = 1, dropout = 1)))),
  ## margins, dydx(distance) atmeans: the derivative at the mean row (the link applied after averaging)
  dydx_distance_atmeans = list(list(kind = "slope", coef = 1, X = t(colMeans(Xh(hosp))), dX = t(colMeans(dX_distance))))
)
res$hospital <- c(list(fixef = as.list(fixef(mh)), variance = as.numeric(VarCorr(mh)[[1]]),
                       vcov_full = full_vcov(mh), names = names(hosp_margins)),
                  reference(mh, binomial(), hosp_margins))

## ---- grouseticks: Poisson, nAGQ = 9 ---------------------------------------------------
gr <- grouse
gr$YEAR <- factor(gr$YEAR)
mg <- glmer(TICKS ~ YEAR + H + (1 | BROOD), gr, family = poisson, nAGQ = 9, control = ctrl)
fg <- ~ YEAR + H
Xg <- function(d) model.matrix(fg, d)
dX_H <- Xg(setting(gr, H = 1)) - Xg(setting(gr, H = 0))
yr <- function(y) factor(rep(y, nrow(gr)), levels = levels(gr$YEAR))
grouse_margins <- list(
  YEAR95 = list(list(kind = "mean", coef = 1, X = Xg(setting(gr, YEAR = yr("95"))))),
  YEAR96 = list(list(kind = "mean", coef = 1, X = Xg(setting(gr, YEAR = yr("96"))))),
  YEAR97 = list(list(kind = "mean", coef = 1, X = Xg(setting(gr, YEAR = yr("97"))))),
  dydx_H = list(list(kind = "slope", coef = 1, X = Xg(gr), dX = dX_H)),
  dydx_YEAR96 = list(list(kind = "mean", coef = 1, X = Xg(setting(gr, YEAR = yr("96")))),
                     list(kind = "mean", coef = -1, X = Xg(setting(gr, YEAR = yr("95"))))),
  dydx_YEAR97 = list(list(kind = "mean", coef = 1, X = Xg(setting(gr, YEAR = yr("97")))),
                     list(kind = "mean", coef = -1, X = Xg(setting(gr, YEAR = yr("95")))))
)
## margins, dydx(H) over(YEAR): the average derivative within each year's rows
for (y in levels(gr$YEAR)) {
  rows <- gr$YEAR == y
  grouse_margins[[paste0("dydx_H_over_YEAR", y)]] <- list(list(kind = "slope", coef = 1, X = Xg(gr)[rows, , drop = FALSE],
                                                               dX = dX_H[rows, , drop = FALSE]))
}
em <- emmeans(mg, ~ YEAR, counterfactuals = "YEAR", df = Inf)
emm <- as.data.frame(summary(em))
con <- as.data.frame(summary(contrast(em, "trt.vs.ctrl", adjust = "none")))
res$grouse <- c(list(fixef = as.list(fixef(mg)), variance = as.numeric(VarCorr(mg)[[1]]),
                     vcov_full = full_vcov(mg), names = names(grouse_margins),
                     emmeans = list(level = as.character(emm$YEAR), estimate = emm$rate, se = emm$SE,
                                    lower = emm$asymp.LCL, upper = emm$asymp.UCL),
                     contrast = list(estimate = con$estimate, se = con$SE, z = con$z.ratio, p = con$p.value)),
                reference(mg, poisson(), grouse_margins))

writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"),
           file.path(out, "margins_glmm_reference.json"))
