# Export the High School and Beyond data (nlme) and lme4's sleepstudy as CSV.
#
# Runs in R alone:  Rscript r/export_hsb.R OUTDIR
# Writes OUTDIR/students.csv, OUTDIR/schools.csv, OUTDIR/sleepstudy.csv and
# OUTDIR/versions.csv (R, nlme, lme4 versions), all values at full precision.
# scripts/make_hsb_data.py calls this and turns the CSVs into Stata .dta files.
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) stop("usage: Rscript r/export_hsb.R OUTDIR")
outdir <- args[[1L]]
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)

suppressPackageStartupMessages({
  library(nlme)
  library(lme4)
})

write_plain <- function(df, name) {
  # 17 significant digits: every double round-trips exactly.
  old <- options(digits = 17)
  on.exit(options(old))
  utils::write.csv(df, file.path(outdir, name), row.names = FALSE)
}

ma <- MathAchieve  # nlme's row order: schools ascending by id, students in nlme's order
students <- data.frame(
  School   = as.character(ma$School),
  Minority = as.character(ma$Minority),
  Sex      = as.character(ma$Sex),
  SES      = ma$SES,
  MathAch  = ma$MathAch,
  MEANSES  = ma$MEANSES,
  stringsAsFactors = FALSE
)
ms <- MathAchSchool
schools <- data.frame(
  School  = as.character(ms$School),
  Size    = ms$Size,
  Sector  = as.character(ms$Sector),
  PRACAD  = ms$PRACAD,
  DISCLIM = ms$DISCLIM,
  HIMINTY = as.character(ms$HIMINTY),
  MEANSES = ms$MEANSES,
  stringsAsFactors = FALSE
)
ss <- lme4::sleepstudy
sleep <- data.frame(
  Reaction = ss$Reaction,
  Days     = ss$Days,
  Subject  = as.character(ss$Subject),
  stringsAsFactors = FALSE
)
versions <- data.frame(
  package = c("R", "nlme", "lme4"),
  version = c(paste(R.version$major, R.version$minor, sep = "."),
              as.character(packageVersion("nlme")),
              as.character(packageVersion("lme4")))
)
write_plain(students, "students.csv")
write_plain(schools, "schools.csv")
write_plain(sleep, "sleepstudy.csv")
write_plain(versions, "versions.csv")
