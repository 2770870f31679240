## The nlme engine's differential reference (tests/test_nlme_r.py): the data sets, built from
## nlme's own data frames, and nlme::lme fitted directly (not through hlmbridge's R code).
## Runs in R alone:
##   source("r/tests/nlme_reference.R"); d <- hb_nlme_data()$orth
##   hb_nlme_direct(d, "nlme::lme(distance ~ age, random = ~ 1 | id, method = 'ML', data = d, control = ctl)",
##                  "c(nlme::getVarCov(fit)[1, 1], fit$sigma^2)")

## Plain data frames with whole-number ids (Stata's grouping variables are numbers) and the
## derived columns the Stata commands use.
hb_nlme_data <- function() {
  o <- as.data.frame(nlme::Orthodont)
  orth <- data.frame(distance = o$distance, age = o$age, id = as.integer(factor(as.character(o$Subject))),
                     male = as.integer(o$Sex == "Male"), occ = (o$age - 8) / 2 + 1)
  b <- as.data.frame(nlme::BodyWeight)
  bw <- data.frame(weight = b$weight, Time = b$Time, rat = as.integer(as.character(b$Rat)),
                   diet = as.integer(as.character(b$Diet)))
  v <- as.data.frame(nlme::Ovary)
  mare <- as.integer(as.character(v$Mare))
  ovary <- data.frame(follicles = v$follicles, Time = v$Time, mare = mare, s = sin(2 * pi * v$Time),
                      c = cos(2 * pi * v$Time), idx = stats::ave(v$Time, mare, FUN = seq_along))
  ## Ovary without every fourth day (idx 2, 6, 10, ...): AR(1) with gaps in the times
  list(orth = orth, bw = bw, ovary = ovary, ovary_gaps = ovary[ovary$idx %% 4 != 2, ])
}

## Write the data sets as CSV at full precision (17 significant digits) into `dir`.
hb_nlme_export <- function(dir) {
  for (nm in names(dd <- hb_nlme_data())) {
    x <- dd[[nm]]
    for (col in names(x)) if (is.double(x[[col]])) x[[col]] <- sprintf("%.17g", x[[col]])
    utils::write.csv(x, file.path(dir, paste0(nm, ".csv")), row.names = FALSE, quote = FALSE)
  }
  invisible(names(dd))
}

## nlme's tight settings (the same tolerances as the engine's r/hlmbridge_nlme.R).
ctl <- nlme::lmeControl(maxIter = 500, msMaxIter = 1000, niterEM = 25, tolerance = 1e-10, msTol = 1e-12,
                        opt = "nlminb", msMaxEval = 2000, sing.tol = 1e-20)

## Fit `call` (R code using `d` and `ctl`) and return the log likelihood, the fixed effects and
## `params`, R code over `fit` giving the variance parameters on Stata's scale in Stata's order.
hb_nlme_direct <- function(d, call, params) {
  fit <- eval(parse(text = call))
  list(loglik = as.numeric(stats::logLik(fit)), fixef = nlme::fixef(fit),
       se = sqrt(diag(stats::vcov(fit))),
       params = as.numeric(eval(parse(text = params))))
}
