#!/usr/bin/env bash
# Build hlmbridge's wheel and install it as a user would, into a fresh virtualenv outside the
# checkout, with the commands the README's "Install with pip" gives:
#
#   pip install 'dist/hlmbridge-<version>-py3-none-any.whl[r]'
#   # R older than 4.5 only (rpy2 3.6 needs R >= 4.5); hlmbridge names this command on first use:
#   python -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && python -m pip install 'rpy2>=3.5.17,<3.6'
#
# On R < 4.5 it first checks that the lme4 engine refuses the rpy2 3.6 that [r] installed with an
# error naming exactly that command, then runs it. From outside the checkout it then imports
# hlmbridge (without R), reads the bundled data, fits on both engines (Python and
# `hlmbridge fit ... --data hsb`) and runs `hlmbridge validate` on the bundled seed fixtures.
#
#   bash scripts/smoke_wheel.sh          # run by scripts/test.sh after pytest
#
# Exit status 0 when every step worked. The temporary folder is removed afterwards
# (HLMBRIDGE_SMOKE_KEEP=1 keeps it and prints where it is).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILD_PY="$REPO/.venv/bin/python"
[ -x "$BUILD_PY" ] || BUILD_PY="$PYTHON"

say() { printf 'smoke_wheel: %s\n' "$*" >&2; }
die() { printf 'smoke_wheel: ERROR: %s\n' "$*" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/hlmbridge-wheel.XXXXXX")"
case "$TMP" in "$REPO"/*) die "the temporary folder $TMP is inside the checkout";; esac
cleanup() {
    if [ "${HLMBRIDGE_SMOKE_KEEP:-0}" = 1 ]; then
        say "kept $TMP"
    else
        local t=$SECONDS
        rm -rf "$TMP"
        say "removed the temporary folder in $((SECONDS - t))s"
    fi
}
trap cleanup EXIT
t0=$SECONDS
# A user's shell: nothing of the checkout's environment (an R started by a caller may have left
# R_HOME and an LD_LIBRARY_PATH that puts the system's libssl before Python's own).
unset PYTHONPATH R_HOME LD_LIBRARY_PATH

say "building the wheel"
"$BUILD_PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$TMP/dist" "$REPO" >"$TMP/build.log" 2>&1 ||
    { tail -30 "$TMP/build.log" >&2; die "building the wheel failed"; }
WHEEL="$(ls "$TMP"/dist/hlmbridge-*.whl)"

R_VERSION="$(Rscript --vanilla -e 'cat(paste(R.version$major, R.version$minor, sep="."))' 2>/dev/null)" ||
    die "Rscript not found: run bash scripts/install.sh first"
R_MAJOR="${R_VERSION%%.*}"; R_MINOR="${R_VERSION#*.}"; R_MINOR="${R_MINOR%%.*}"

"$PYTHON" -m venv "$TMP/venv" || die "$PYTHON -m venv failed"
cd "$TMP"  # nothing of the checkout on sys.path from here on
export PATH="$TMP/venv/bin:$PATH"  # as `. venv/bin/activate` does: `python` and `pip` are the venv's
VENV_PY="$TMP/venv/bin/python"
t1=$SECONDS
say "pip install '$(basename "$WHEEL")[r]' (R $R_VERSION)"
pip install --disable-pip-version-check -q "${WHEEL}[r]" >"$TMP/pip.log" 2>&1 ||
    { tail -30 "$TMP/pip.log" >&2; die "pip install of the wheel failed"; }

if [ "$R_MAJOR" -lt 4 ] || { [ "$R_MAJOR" -eq 4 ] && [ "$R_MINOR" -lt 5 ]; }; then
    # The README's repair step for R < 4.5, as the user types it (python = the venv's).
    REPAIR="python -m pip uninstall -y rpy2 rpy2-rinterface rpy2-robjects && python -m pip install 'rpy2>=3.5.17,<3.6'"
    say "R $R_VERSION < 4.5: the lme4 engine must refuse rpy2 $(python -c 'from importlib.metadata import version; print(version("rpy2"))') naming the repair"
    SAID="$(python - <<'PY'
import hlmbridge
from hlmbridge.errors import EngineUnavailableError
try:
    hlmbridge.fit("mixed mathach ses || id:", hlmbridge.datasets.hsb(), engine="lme4")
except EngineUnavailableError as exc:
    print(exc)
else:
    print("no error")
PY
)" || die "the first use of the lme4 engine crashed instead of naming the repair"
    WANT="${REPAIR//python -m/$VENV_PY -m}"
    case "$SAID" in
        *"with: $WANT") say "it does: ${SAID%%. Install*}";;
        *) die "expected an EngineUnavailableError ending with: $WANT; got: $SAID";;
    esac
    t2=$SECONDS
    say "repair: $REPAIR"
    bash -c "$REPAIR" >"$TMP/repair.log" 2>&1 || { tail -30 "$TMP/repair.log" >&2; die "the repair command failed"; }
    say "repaired in $((SECONDS - t2))s"
fi
say "installed in $((SECONDS - t1))s: $(pip list 2>/dev/null | grep -Ei '^rpy2' | tr -s ' ' | paste -sd, -)"

say "smoke fits (both engines)"
python - "$TMP/venv" <<'PY' || die "the smoke fits failed"
import sys
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
import hlmbridge

where = Path(hlmbridge.__file__).resolve()
assert venv in where.parents, f"hlmbridge imported from {where}, not from the fresh venv"
assert "rpy2" not in sys.modules, "import hlmbridge imported rpy2"
from hlmbridge import datasets
from hlmbridge.engines.lme4 import r_source_path
from hlmbridge.reference.fixtures import FIXTURE_ROOT

for path in (datasets.hsb_path(), datasets.sleepstudy_path(), r_source_path(), FIXTURE_ROOT):
    assert venv in path.resolve().parents, f"{path} is not inside the installed package"
hsb = datasets.hsb()
assert hsb.shape == (7185, 11), hsb.shape
sm = hlmbridge.fit("mixed mathach ses || id:", hsb, engine="statsmodels")
r = hlmbridge.fit("mixed mathach ses || id:", hsb)  # the default engine: lme4
assert r.engine == "lme4", r.engine
assert abs(sm.loglik - r.loglik) < 1e-4, (sm.loglik, r.loglik)
print(f"smoke_wheel: hlmbridge {where.parent}: statsmodels {sm.loglik:.4f}, lme4 {r.loglik:.4f}", file=sys.stderr)
PY

say "hlmbridge fit ... --data hsb (both engines)"
hlmbridge fit "mixed mathach ses || id:" --data hsb >"$TMP/fit.txt" 2>&1 || { tail -20 "$TMP/fit.txt" >&2; die "hlmbridge fit --data hsb failed"; }
grep -q '^== lme4 ==' "$TMP/fit.txt" && grep -q '^== statsmodels ==' "$TMP/fit.txt" ||
    die "hlmbridge fit did not fit on both engines: $(head -5 "$TMP/fit.txt")"

say "hlmbridge validate (bundled fixtures and data)"
hlmbridge validate --quiet --out "$TMP/validate.txt" || {
    tail -20 "$TMP/validate.txt" >&2 || true
    die "hlmbridge validate failed in the installed wheel"
}
say "ok ($((SECONDS - t0))s)"
