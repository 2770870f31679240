## Shared by benchmarks/bench_r.R (lmer in a fresh Rscript) and benchmarks/run.py (lmer in
## hlmbridge's embedded R, interleaved with hlmbridge's fits): the benchmark data and models,
## read the same way in both.
##
## <dir> holds the data as raw little-endian float64 columns (<name>.f64, NaN = NA), a file
## `columns` (name<TAB>kind, kind "num" or "group": group columns are 0-based codes made into a
## factor) and `models` (name<TAB>formula<TAB>reml<TAB>factors, factors "var=base;var=NA" or "-").

bench_read_data <- function(dir) {
  cols <- utils::read.delim(file.path(dir, "columns"), header = FALSE, col.names = c("name", "kind"),
                            stringsAsFactors = FALSE)
  read_col <- function(name) {
    path <- file.path(dir, paste0(name, ".f64"))
    readBin(path, what = "double", n = file.size(path) / 8, size = 8, endian = "little")
  }
  data <- lapply(seq_len(nrow(cols)), function(i) {
    x <- read_col(cols$name[i])
    if (cols$kind[i] == "group") factor(as.integer(x)) else x
  })
  names(data) <- cols$name
  as.data.frame(data)
}

bench_read_models <- function(dir) {
  utils::read.delim(file.path(dir, "models"), header = FALSE, quote = "",
                    col.names = c("name", "formula", "reml", "factors"), stringsAsFactors = FALSE)
}

## The data with a model's factor variables made factors (and their base levels set).
bench_model_data <- function(data, factors) {
  if (factors != "-") {
    for (pair in strsplit(factors, ";", fixed = TRUE)[[1L]]) {
      kv <- strsplit(pair, "=", fixed = TRUE)[[1L]]
      f <- factor(data[[kv[1L]]])
      if (kv[2L] != "NA") f <- stats::relevel(f, ref = kv[2L])
      data[[kv[1L]]] <- f
    }
  }
  data
}

## One fit of model `i` of `models` with lmer's default settings, returned as a function of no
## arguments (so that only the fit itself is timed).
bench_default_fit <- function(dir, i) {
  models <- bench_read_models(dir)
  d <- bench_model_data(bench_read_data(dir), models$factors[i])
  form <- stats::as.formula(models$formula[i])
  reml <- as.logical(models$reml[i])
  function() invisible(suppressWarnings(suppressMessages(lme4::lmer(form, data = d, REML = reml))))
}

## The same with glmer's defaults (`family` "binomial" or "poisson" with its canonical link,
## `nagq` its nAGQ; the models file's reml column is not read): the GLMM baseline.
bench_default_glmer_fit <- function(dir, i, family, nagq) {
  models <- bench_read_models(dir)
  d <- bench_model_data(bench_read_data(dir), models$factors[i])
  form <- stats::as.formula(models$formula[i])
  fam <- switch(family, binomial = stats::binomial(), poisson = stats::poisson(), stop("unknown family ", family))
  function() suppressWarnings(suppressMessages(lme4::glmer(form, data = d, family = fam, nAGQ = nagq)))
}
