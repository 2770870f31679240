## Reference numbers for hlmbridge's df methods (tests/test_df_methods.py), computed by
## lmerTest (Satterthwaite) and pbkrtest (Kenward-Roger) on an lmer fit, evaluated at the
## variance components hlmbridge estimated (lmer with optimizer = NULL), so that both work at
## the same point, a stationary one.
##
## Sourced into a private environment through rpy2; nothing is written to R's global
## environment. Needs lme4, lmerTest and pbkrtest (r-cran-lmertest, r-cran-pbkrtest).

df_reference_control <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                    calc.derivs = FALSE)
}

## lme4's theta (per random-effects term, the lower triangle of the Cholesky factor of its
## covariance over the residual variance, column by column) for the fit's model at the
## variance components `at` (see df_reference_fit), matched by grouping factor and term name.
df_reference_theta <- function(fit, at) {
  s2 <- at$estimate[at$group == "Residual"]
  cnms <- lme4::getME(fit, "cnms")
  unlist(lapply(seq_along(cnms), function(i) {
    cn <- cnms[[i]]
    rows <- at[at$group == names(cnms)[i], , drop = FALSE]
    G <- matrix(NA_real_, length(cn), length(cn), dimnames = list(cn, cn))
    for (k in seq_len(nrow(rows))) {
      a <- rows$term1[k]
      b <- if (rows$kind[k] == "var") a else rows$term2[k]
      G[a, b] <- G[b, a] <- rows$estimate[k]
    }
    if (anyNA(G)) stop("no variance component given for every term of ", names(cnms)[i])
    L <- df_reference_psd_chol(G / s2)
    L[lower.tri(L, diag = TRUE)]
  }))
}

## The lower Cholesky factor of a positive semi-definite matrix, as lme4's theta holds it at a
## singular fit: a zero pivot (a variance at 0, a correlation at +/-1) gives a zero column
## below it (chol() refuses such a matrix); a pivot below 0 by rounding counts as 0.
df_reference_psd_chol <- function(G) {
  q <- nrow(G)
  L <- matrix(0, q, q)
  tiny <- 1e-14 * max(abs(diag(G)), 1e-300)
  for (j in seq_len(q)) {
    before <- seq_len(j - 1)
    d <- G[j, j] - sum(L[j, before]^2)
    if (d <= tiny) next
    L[j, j] <- sqrt(d)
    if (j < q) {
      below <- (j + 1):q
      L[below, j] <- (G[below, j] - L[below, before, drop = FALSE] %*% L[j, before]) / L[j, j]
    }
  }
  L
}

## The lme4 example data sets the tests use, as plain data frames.
df_reference_data <- function(name) {
  e <- new.env()
  utils::data(list = name, package = "lme4", envir = e)
  as.data.frame(get(name, envir = e))
}

## One fit and everything lmerTest and pbkrtest say about it.
##   data     a data frame
##   formula  an lme4 formula (string)
##   reml     TRUE/FALSE
##   Ls       a list of contrast matrices (each with one column per fixed effect)
## Returns a named list of numeric vectors/matrices (matrices keep their dim).
##   at       NULL (lmer's own optimum, tight bobyqa) or the variance components to evaluate
##            at, with lmer not optimizing (optimizer = NULL): a data frame with columns group
##            (lme4's grouping factor, "Residual" for the residual), kind ("var"/"cov"), term1,
##            term2 and estimate, as hlmbridge's FitResult.random gives them.
df_reference_fit <- function(data, formula, reml = TRUE, Ls = list(), at = NULL) {
  fit <- lmerTest::lmer(stats::as.formula(formula), data = data, REML = reml,
                        control = df_reference_control())
  if (!is.null(at)) {
    fit <- lmerTest::lmer(stats::as.formula(formula), data = data, REML = reml,
                          start = list(theta = df_reference_theta(fit, at)),
                          control = lme4::lmerControl(optimizer = NULL))
  }
  p <- length(lme4::fixef(fit))
  vc <- as.data.frame(lme4::VarCorr(fit), order = "lower.tri")
  out <- list(
    beta = unname(lme4::fixef(fit)),
    names = names(lme4::fixef(fit)),
    vcov = unname(as.matrix(stats::vcov(fit))),
    varcomp = vc$vcov,
    singular = as.numeric(lme4::isSingular(fit)),
    loglik = as.numeric(stats::logLik(fit))
  )
  ## Satterthwaite (lmerTest): coefficient table and type III F tests.
  co <- summary(fit, ddf = "Satterthwaite")$coefficients
  out$satt_df <- unname(co[, "df"])
  out$satt_t <- unname(co[, "t value"])
  out$satt_p <- unname(co[, "Pr(>|t|)"])
  av <- stats::anova(fit, type = 3, ddf = "Satterthwaite")
  out$satt_anova_terms <- rownames(av)
  out$satt_anova <- unname(as.matrix(av[, c("F value", "NumDF", "DenDF", "Pr(>F)")]))
  out$satt_L <- do.call(rbind, lapply(Ls, function(L) {
    r <- lmerTest::contest(fit, L, ddf = "Satterthwaite", joint = TRUE)
    c(r[["F value"]], r[["NumDF"]], r[["DenDF"]], r[["Pr(>F)"]])
  }))
  if (reml) {
    ## Kenward-Roger (pbkrtest): adjusted covariance, per-coefficient df, F tests.
    adj <- pbkrtest::vcovAdj(fit)
    out$kr_vcov <- unname(as.matrix(adj))
    out$kr_df <- vapply(seq_len(p), function(j) {
      L <- matrix(0, 1, p); L[1, j] <- 1
      pbkrtest::Lb_ddf(L, stats::vcov(fit), adj)
    }, numeric(1))
    co <- summary(fit, ddf = "Kenward-Roger")$coefficients
    out$kr_t <- unname(co[, "t value"])
    out$kr_p <- unname(co[, "Pr(>|t|)"])
    out$kr_L <- do.call(rbind, lapply(Ls, function(L) {
      kr <- pbkrtest::KRmodcomp(fit, L)
      s <- kr$stats
      c(s$Fstat, s$ndf, s$ddf, s$p.value, s$F.scaling)
    }))
    av <- stats::anova(fit, type = 3, ddf = "Kenward-Roger")
    out$kr_anova <- unname(as.matrix(av[, c("F value", "NumDF", "DenDF", "Pr(>F)")]))
  }
  out
}
