#!/usr/bin/env bash
# Install everything hlmbridge needs, idempotently: R with lme4 (Debian/Ubuntu: apt),
# a virtualenv in .venv, and the package itself (editable) with the [r,test] extras.
#
#   bash scripts/install.sh          # fast no-op when nothing changed (stamp in .venv)
#   HLMBRIDGE_FORCE_INSTALL=1 bash scripts/install.sh   # reinstall regardless of the stamp
#
# Exit status: 0 ready; 2 R/lme4 missing and this machine has no apt (message says what to
# install); 1 anything else failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
STAMP="$VENV/.hlmbridge-install-stamp"
PYTHON="${PYTHON:-python3}"

say() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# One quick Rscript call: prints "R_VERSION LME4_VERSION" when lme4 is installed, fails
# otherwise. (packageVersion reads lme4's DESCRIPTION without loading it; that R really
# loads lme4 is checked through rpy2 after every (re)install, below.)
r_probe() {
    command -v Rscript >/dev/null 2>&1 &&
        Rscript --vanilla -e 'cat(paste(R.version$major, R.version$minor, sep="."), as.character(packageVersion("lme4")))' 2>/dev/null
}

# ---------------------------------------------------------------- R with lme4
if ! PROBE="$(r_probe)"; then
    if command -v apt-get >/dev/null 2>&1; then
        say "R with lme4 not found; installing it with apt-get (Debian/Ubuntu packages)"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update
        # r-base-dev, python3-dev and gcc let pip build rpy2's compiled interface.
        # r-cran-mlmrev, r-cran-jsonlite, r-cran-lmertest, r-cran-pbkrtest and r-cran-emmeans are test
        # dependencies (see R_TEST_PACKAGES below).
        as_root apt-get install -y r-base-core r-base-dev r-cran-lme4 r-cran-nlme \
            r-cran-mlmrev r-cran-jsonlite r-cran-lmertest r-cran-pbkrtest r-cran-emmeans python3-venv python3-dev gcc
        PROBE="$(r_probe)" || die "apt-get finished but Rscript still cannot load lme4"
    else
        echo "hlmbridge needs R >= 4.2 with the lme4 package (install R from https://cran.r-project.org, then in R: install.packages('lme4')), and then rerun: bash scripts/install.sh" >&2
        exit 2
    fi
fi

# ---------------------------------------------------------------- R test dependencies
# The differential tests against R (tests/test_differential_r.py) export real data sets
# from nlme and mlmRev with jsonlite (r/export_datasets.R). Checked with one quick Rscript
# call; installed with apt-get when missing (a no-op when present). lmerTest and pbkrtest
# are the references of the df-method tests (tests/test_df_methods.py, r/tests/df_reference.R);
# emmeans is the reference of the marginal-means tests.
R_TEST_PACKAGES="nlme mlmRev jsonlite lmerTest pbkrtest emmeans"
r_test_probe() {
    Rscript --vanilla -e 'p <- c("nlme", "mlmRev", "jsonlite", "lmerTest", "pbkrtest", "emmeans"); cat(paste0(p, "=", sapply(p, function(x) as.character(packageVersion(x)))))' 2>/dev/null
}
if ! TEST_PROBE="$(r_test_probe)"; then
    if command -v apt-get >/dev/null 2>&1; then
        say "R test packages ($R_TEST_PACKAGES) not all found; installing them with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get install -y r-cran-nlme r-cran-mlmrev r-cran-jsonlite r-cran-lmertest r-cran-pbkrtest r-cran-emmeans ||
            { as_root apt-get update &&
              as_root apt-get install -y r-cran-nlme r-cran-mlmrev r-cran-jsonlite r-cran-lmertest r-cran-pbkrtest r-cran-emmeans; }
        TEST_PROBE="$(r_test_probe)" || die "apt-get finished but R still lacks one of: $R_TEST_PACKAGES"
    else
        say "warning: R lacks one of the test packages ($R_TEST_PACKAGES); install them in R with install.packages() or the differential tests fail"
        TEST_PROBE="missing"
    fi
fi

R_VERSION="${PROBE%% *}"
LME4_VERSION="${PROBE#* }"
R_MAJOR="${R_VERSION%%.*}"
R_MINOR="${R_VERSION#*.}"; R_MINOR="${R_MINOR%%.*}"
if [ "$R_MAJOR" -lt 4 ] || { [ "$R_MAJOR" -eq 4 ] && [ "$R_MINOR" -lt 2 ]; }; then
    die "R $R_VERSION is too old; hlmbridge needs R >= 4.2"
fi
# rpy2 3.6 calls R_getVar, which R added in 4.5.0 (older R: "undefined symbol R_getVar");
# rpy2 3.5.x does not work with R >= 4.5. Pick the series that matches this R.
if [ "$R_MAJOR" -gt 4 ] || { [ "$R_MAJOR" -eq 4 ] && [ "$R_MINOR" -ge 5 ]; }; then
    RPY2_SPEC="rpy2>=3.6,<3.7"
else
    RPY2_SPEC="rpy2>=3.5.17,<3.6"
fi

# ---------------------------------------------------------------- virtualenv
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if command -v apt-get >/dev/null 2>&1; then
            say "python3 -m venv failed; installing python3-venv"
            as_root apt-get install -y python3-venv
            "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed"
        else
            die "$PYTHON -m venv failed; install Python >= 3.10 with the venv module"
        fi
    fi
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "the virtualenv's Python is older than 3.10; remove .venv and set PYTHON=python3.x"

# ---------------------------------------------------------------- the package
# The package's bytecode, written here once: an editable install leaves hlmbridge's own
# modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set Python never writes it, so every
# `hlmbridge` run would compile them again (about 0.1 s of a 2 s cold fit). Stale files are
# recompiled here and ignored by Python anyway (it checks each source's time and size).
compile_package() {
    "$VENV/bin/python" -m compileall -q hlmbridge >/dev/null || say "note: could not write hlmbridge's bytecode"
}

WANT="$( { sha256sum pyproject.toml; echo "R $R_VERSION lme4 $LME4_VERSION"; echo "$RPY2_SPEC"; echo "$TEST_PROBE";
           "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ "${HLMBRIDGE_FORCE_INSTALL:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
    "$VENV/bin/python" -c 'import hlmbridge' >/dev/null 2>&1; then
    compile_package
    say "up to date (R $R_VERSION, lme4 $LME4_VERSION; $RPY2_SPEC)"
    exit 0
fi

say "installing hlmbridge[r,test] with $RPY2_SPEC (R $R_VERSION, lme4 $LME4_VERSION)"
rm -f "$STAMP"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[r,test]" "$RPY2_SPEC" ||
    die "pip install failed"

# ---------------------------------------------------------------- verify
if ! "$VENV/bin/python" -c '
import rpy2.robjects as ro
ro.r("suppressPackageStartupMessages(library(lme4))")
from importlib.metadata import version  # rpy2 3.6 is a namespace package without a version attribute
print("rpy2 %s loads lme4 %s in R %s" % (version("rpy2"),
      ro.r("as.character(packageVersion(\"lme4\"))")[0], ro.r("R.version.string")[0]))
' >&2; then
    die "rpy2 cannot load lme4 (see the error above); R $R_VERSION with $RPY2_SPEC"
fi
"$VENV/bin/python" -c 'import hlmbridge' || die "import hlmbridge failed"

compile_package
echo "$WANT" >"$STAMP"
say "ready: $VENV"
