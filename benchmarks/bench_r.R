## Pure-R baseline for benchmarks/run.py: lme4::lmer timed by R itself.
##
## Usage: Rscript benchmarks/bench_r.R <dir> <reps> [controls]
## <dir> holds the data as raw little-endian float64 columns (<name>.f64, NaN = NA), a
## file `columns` (name<TAB>kind, kind "num" or "group": group columns are 0-based codes
## made into a factor before timing), and `models` (name<TAB>formula<TAB>reml<TAB>factors,
## factors "var=base;var=NA" or "-"). Each model is fitted once untimed (warm-up), then
## <reps> times under system.time; prints name<TAB>median<TAB>min<TAB>times<TAB>peak-MB
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

cols <- read.delim(file.path(dir, "columns"), header = FALSE, col.names = c("name", "kind"),
                   stringsAsFactors = FALSE)
read_col <- function(name) {
  path <- file.path(dir, paste0(name, ".f64"))
  n <- file.size(path) / 8
  readBin(path, what = "double", n = n, size = 8, endian = "little")
}
data <- lapply(seq_len(nrow(cols)), function(i) {
  x <- read_col(cols$name[i])
  if (cols$kind[i] == "group") factor(as.integer(x)) else x
})
names(data) <- cols$name
data <- as.data.frame(data)

models <- read.delim(file.path(dir, "models"), header = FALSE, quote = "",
                     col.names = c("name", "formula", "reml", "factors"), stringsAsFactors = FALSE)
for (ctl in controls) for (i in seq_len(nrow(models))) {
  ctrl <- switch(ctl, hlmbridge = hb$hlmbridge_control(), default = lme4::lmerControl(),
                 stop("unknown control ", ctl))
  label <- if (ctl == "hlmbridge") models$name[i] else paste0(models$name[i], "@", ctl)
  d <- data
  if (models$factors[i] != "-") {
    for (pair in strsplit(models$factors[i], ";", fixed = TRUE)[[1L]]) {
      kv <- strsplit(pair, "=", fixed = TRUE)[[1L]]
      f <- factor(d[[kv[1L]]])
      if (kv[2L] != "NA") f <- stats::relevel(f, ref = kv[2L])
      d[[kv[1L]]] <- f
    }
  }
  form <- stats::as.formula(models$formula[i])
  reml <- as.logical(models$reml[i])
  fit1 <- suppressWarnings(suppressMessages(lmer(form, data = d, REML = reml, control = ctrl)))
  rm(fit1)
  invisible(gc(reset = TRUE))
  times <- vapply(seq_len(reps), function(r) {
    system.time(suppressWarnings(suppressMessages(lmer(form, data = d, REML = reml, control = ctrl))),
                gcFirst = FALSE)[["elapsed"]]
  }, numeric(1))
  g <- gc()
  peak <- sum(g[, ncol(g)])  # "max used" (Mb) of Ncells and Vcells
  cat(label, "\t", stats::median(times), "\t", min(times), "\t",
      paste(format(times, digits = 6), collapse = ","), "\t", peak, "\n", sep = "")
}
status <- readLines("/proc/self/status")
cat("VmHWM\t", gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE)), "\n", sep = "")
