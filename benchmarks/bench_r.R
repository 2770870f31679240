## Pure-R baseline for benchmarks/run.py: lme4::lmer timed by R itself.
##
## Usage: Rscript benchmarks/bench_r.R <dir> <reps> [controls]
## <dir> holds the data and models as benchmarks/bench_data.R describes (read by it). Each
## model is fitted once untimed (warm-up), then timed <reps> times (wall clock); prints name<TAB>median<TAB>min<TAB>times<TAB>peak-MB
## (peak-MB: R's gc "max used" since the warm-up, Ncells + Vcells) and finally a line
## "VmHWM<TAB><kB>" (the process's peak resident memory).
## `controls` (default "hlmbridge") is a comma-separated list of optimizer settings to time
## each model with: "hlmbridge" = hlmbridge_control() from r/hlmbridge.R (what the lme4
## engine uses), "default" = lmer's own defaults (lmerControl()). A model is reported as
## name (hlmbridge) and name@default (default).

args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1L]]
reps <- as.integer(args[[2L]])
controls <- if (length(args) >= 3L) strsplit(args[[3L]], ",", fixed = TRUE)[[1L]] else "hlmbridge"
script_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
hb <- new.env()
sys.source(file.path(script_dir, "..", "r", "hlmbridge.R"), envir = hb)
suppressPackageStartupMessages(library(lme4))

sys.source(file.path(script_dir, "bench_data.R"), envir = environment())
data <- bench_read_data(dir)
models <- bench_read_models(dir)
for (ctl in controls) for (i in seq_len(nrow(models))) {
  ctrl <- switch(ctl, hlmbridge = hb$hlmbridge_control(), default = lme4::lmerControl(),
                 stop("unknown control ", ctl))
  label <- if (ctl == "hlmbridge") models$name[i] else paste0(models$name[i], "@", ctl)
  d <- bench_model_data(data, models$factors[i])
  form <- stats::as.formula(models$formula[i])
  reml <- as.logical(models$reml[i])
  fit1 <- suppressWarnings(suppressMessages(lmer(form, data = d, REML = reml, control = ctrl)))
  rm(fit1)
  invisible(gc(reset = TRUE))
  ## Wall time from Sys.time() (microseconds): system.time()'s "elapsed" is rounded to 1 ms,
  ## which is 10% of a sleepstudy fit.
  times <- vapply(seq_len(reps), function(r) {
    t0 <- Sys.time()
    suppressWarnings(suppressMessages(lmer(form, data = d, REML = reml, control = ctrl)))
    as.double(Sys.time()) - as.double(t0)
  }, numeric(1))
  g <- gc()
  peak <- sum(g[, ncol(g)])  # "max used" (Mb) of Ncells and Vcells
  cat(label, "\t", stats::median(times), "\t", min(times), "\t",
      paste(format(times, digits = 6), collapse = ","), "\t", peak, "\n", sep = "")
}
status <- readLines("/proc/self/status")
cat("VmHWM\t", gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE)), "\n", sep = "")
