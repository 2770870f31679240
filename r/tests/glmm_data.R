## The data sets of the GLMM tests' R references, built one way for all of them (plain R:
## source it). Each function returns every column any reference uses; a script keeps the ones
## its cases need.
##   hospital: fixtures/glmm/hospital.dat (Lillard & Panis; see fixtures/glmm/README.md)
##   grouseticks: lme4::grouseticks (Elston et al. 2001), HEIGHT standardized as H
##   contraception: mlmRev::Contraception (use and urban as 0/1)
glmm_hospital <- function(repo) {
  utils::read.table(file.path(repo, "fixtures", "glmm", "hospital.dat"),
                    col.names = c("hosp", "loginc", "distance", "dropout", "college", "mother"))
}

glmm_grouseticks <- function() {
  gt <- lme4::grouseticks
  data.frame(TICKS = gt$TICKS, YEAR = as.character(gt$YEAR), H = as.numeric(scale(gt$HEIGHT)), HEIGHT = gt$HEIGHT,
             BROOD = as.character(gt$BROOD), INDEX = as.character(gt$INDEX), LOCATION = as.character(gt$LOCATION))
}

glmm_contraception <- function() {
  cn <- mlmRev::Contraception
  data.frame(use = as.integer(cn$use == "Y"), urban = as.integer(cn$urban == "Y"), age = cn$age,
             livch = as.character(cn$livch), district = as.character(cn$district))
}
