## Real data sets for hlmbridge's differential tests against R (issue 9), exported with
## their R column classes.
##
## Runs in R alone:  Rscript r/export_datasets.R OUTDIR
## For every data set NAME it writes
##   OUTDIR/NAME.csv   every value at full precision (17 significant digits, so every
##                     double round-trips exactly); NA as an empty field; logicals as
##                     TRUE/FALSE; factor values as their labels
##   OUTDIR/NAME.json  {"name", "source", "nrow", "columns": [{"name", "class",
##                     "levels"}]} with class one of numeric, integer, logical,
##                     character, factor, ordered; levels in R's order (factors only)
## plus OUTDIR/versions.json (R, lme4, nlme, mlmRev versions).
##
## Sourced (source("r/export_datasets.R")) it only defines the functions below; the
## differential reference (r/tests/differential_reference.R) calls
## hlmbridge_diff_datasets() to get the very same R data frames the CSVs are made from.
##
## The data come from the Debian packages r-cran-lme4, r-cran-nlme and r-cran-mlmrev.
## Where a data set lacks a kind of column R users make, a derived column is added
## (a logical, a character copy of a factor, an ordered factor, a column with NAs);
## every derived column is computed here, deterministically, from the package data.

hlmbridge_diff_datasets <- function() {
  for (p in c("lme4", "nlme", "mlmRev")) {
    if (!requireNamespace(p, quietly = TRUE)) {
      stop(sprintf("R package %s is missing (Debian: apt-get install r-cran-%s)", p, tolower(p)))
    }
  }
  plain <- function(d) {
    ## groupedData (nlme) and friends -> a plain data.frame with row names 1..n
    d <- as.data.frame(d)
    attr(d, "formula") <- NULL
    attr(d, "FUN") <- NULL
    attr(d, "order.groups") <- NULL
    attr(d, "labels") <- NULL
    attr(d, "units") <- NULL
    attr(d, "outer") <- NULL
    attr(d, "inner") <- NULL
    class(d) <- "data.frame"
    rownames(d) <- NULL
    d
  }
  out <- list()

  ## lme4
  ss <- plain(lme4::sleepstudy)
  ss$Days_int <- as.integer(ss$Days)
  ss$late <- ss$Days >= 5
  ss$subj <- as.character(ss$Subject)
  ss$phase <- cut(ss$Days, c(-1, 2, 6, 9), labels = c("early", "mid", "late"), ordered_result = TRUE)
  ss$Reaction_na <- ss$Reaction
  ss$Reaction_na[seq(7L, nrow(ss), by = 17L)] <- NA
  out$sleepstudy <- ss

  pen <- plain(lme4::Penicillin)
  out$Penicillin <- pen

  pas <- plain(lme4::Pastes)
  out$Pastes <- pas

  cake <- plain(lme4::cake)
  cake$recipe_chr <- as.character(cake$recipe)
  out$cake <- cake

  out$Dyestuff <- plain(lme4::Dyestuff)

  ie <- lme4::InstEval
  set.seed(20240509)
  ie <- ie[sort(sample.int(nrow(ie), 3000L)), ]
  ie <- droplevels(plain(ie))
  out$InstEval <- ie

  ## nlme
  orth <- plain(nlme::Orthodont)
  orth$male <- orth$Sex == "Male"
  out$Orthodont <- orth

  oats <- plain(nlme::Oats)
  oats$nitro_o <- factor(oats$nitro, ordered = TRUE)
  oats$Variety_chr <- as.character(oats$Variety)
  out$Oats <- oats

  mach <- plain(nlme::Machines)
  mach$machine_n <- as.integer(mach$Machine)
  mach$Machine_chr <- as.character(mach$Machine)
  mach$Worker_chr <- as.character(mach$Worker)
  out$Machines <- mach

  bw <- plain(nlme::BodyWeight)
  out$BodyWeight <- bw

  ## High School and Beyond: nlme's MathAchieve (students) with MathAchSchool (schools),
  ## in the columns of hlmbridge's bundled hsb.dta plus factor versions R users make.
  ma <- plain(nlme::MathAchieve)
  ms <- plain(nlme::MathAchSchool)
  sch <- ms[match(as.character(ma$School), as.character(ms$School)), ]
  hsb <- data.frame(
    id = factor(as.character(ma$School)),
    minority = as.integer(ma$Minority == "Yes"),
    female = as.integer(ma$Sex == "Female"),
    ses = ma$SES,
    mathach = ma$MathAch,
    size = sch$Size,
    sector = as.integer(sch$Sector == "Catholic"),
    pracad = sch$PRACAD,
    disclim = sch$DISCLIM,
    himinty = as.integer(as.character(sch$HIMINTY)),
    meanses = ma$MEANSES,
    stringsAsFactors = FALSE
  )
  hsb$cses <- hsb$ses - hsb$meanses
  hsb$Sector <- sch$Sector                      # factor: Public, Catholic
  hsb$Sex <- ma$Sex                             # factor: Male, Female
  hsb$Minority <- ma$Minority                   # factor: No, Yes
  hsb$catholic <- hsb$sector == 1L              # logical
  hsb$sector_chr <- as.character(sch$Sector)    # character
  hsb$ses_q <- cut(hsb$ses, stats::quantile(hsb$ses, 0:4 / 4), include.lowest = TRUE,
                   labels = c("Q1", "Q2", "Q3", "Q4"), ordered_result = TRUE)
  rownames(hsb) <- NULL
  out$hsb <- hsb

  ## mlmRev
  exam <- plain(mlmRev::Exam)
  exam$boys_school <- exam$schgend == "boys"
  exam$vr_ord <- factor(exam$vr, levels = levels(exam$vr), ordered = TRUE)
  exam$school_chr <- as.character(exam$school)
  exam$standLRT_na <- exam$standLRT
  exam$standLRT_na[seq(5L, nrow(exam), by = 41L)] <- NA
  out$Exam <- exam

  out$ScotsSec <- plain(mlmRev::ScotsSec)
  out
}

hlmbridge_diff_source <- function(name) {
  switch(name,
    sleepstudy = , Penicillin = , Pastes = , cake = , Dyestuff = "lme4",
    InstEval = "lme4 (3000 rows sampled with set.seed(20240509), droplevels)",
    Orthodont = , Oats = , Machines = , BodyWeight = "nlme",
    hsb = "nlme (MathAchieve with MathAchSchool)",
    Exam = , ScotsSec = "mlmRev",
    "derived"
  )
}

hlmbridge_diff_column_class <- function(x) {
  if (is.ordered(x)) return("ordered")
  if (is.factor(x)) return("factor")
  if (is.logical(x)) return("logical")
  if (is.integer(x)) return("integer")
  if (is.double(x)) return("numeric")
  if (is.character(x)) return("character")
  stop(sprintf("unsupported column class %s", paste(class(x), collapse = "/")))
}

hlmbridge_diff_export <- function(outdir) {
  dir.create(outdir, showWarnings = FALSE, recursive = TRUE)
  sets <- hlmbridge_diff_datasets()
  old <- options(digits = 17, scipen = 0)
  on.exit(options(old))
  for (name in names(sets)) {
    d <- sets[[name]]
    cols <- lapply(names(d), function(nm) {
      x <- d[[nm]]
      cls <- hlmbridge_diff_column_class(x)
      entry <- list(name = nm, class = cls)
      if (cls %in% c("factor", "ordered")) entry$levels <- levels(x)
      entry
    })
    meta <- list(name = name, source = hlmbridge_diff_source(name), nrow = nrow(d), columns = cols)
    ## write.csv with digits = 17 writes doubles with 17 significant digits
    csv <- d
    for (nm in names(csv)) if (is.double(csv[[nm]])) {
      csv[[nm]] <- ifelse(is.na(csv[[nm]]), NA, sprintf("%.17g", csv[[nm]]))
    }
    quote <- which(vapply(d, function(x) is.character(x) || is.factor(x), TRUE))
    utils::write.csv(csv, file.path(outdir, paste0(name, ".csv")), row.names = FALSE, na = "",
                     quote = if (length(quote)) unname(quote) else FALSE)
    writeLines(jsonlite::toJSON(meta, auto_unbox = TRUE, pretty = TRUE),
               file.path(outdir, paste0(name, ".json")))
  }
  versions <- list(
    R = paste(R.version$major, R.version$minor, sep = "."),
    lme4 = as.character(utils::packageVersion("lme4")),
    nlme = as.character(utils::packageVersion("nlme")),
    mlmRev = as.character(utils::packageVersion("mlmRev"))
  )
  writeLines(jsonlite::toJSON(versions, auto_unbox = TRUE, pretty = TRUE), file.path(outdir, "versions.json"))
  invisible(names(sets))
}

if (sys.nframe() == 0L) {
  args <- commandArgs(trailingOnly = TRUE)
  if (length(args) != 1L) stop("usage: Rscript r/export_datasets.R OUTDIR")
  if (!requireNamespace("jsonlite", quietly = TRUE)) {
    stop("R package jsonlite is missing (Debian: apt-get install r-cran-jsonlite)")
  }
  written <- hlmbridge_diff_export(args[[1L]])
  cat(sprintf("wrote %d data sets to %s: %s\n", length(written), args[[1L]], paste(written, collapse = ", ")))
}
