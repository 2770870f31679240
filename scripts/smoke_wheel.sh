#!/usr/bin/env bash
# Build hlmbridge's wheel, install it (not editable) into a fresh virtualenv outside the
# checkout, and from outside the checkout: import it (without R), read the bundled data, fit
# on both engines, and run `hlmbridge validate` on the bundled seed fixtures.
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
    if [ "${HLMBRIDGE_SMOKE_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
t0=$SECONDS

say "building the wheel"
"$BUILD_PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$TMP/dist" "$REPO" >"$TMP/build.log" 2>&1 ||
    { tail -30 "$TMP/build.log" >&2; die "building the wheel failed"; }
WHEEL="$(ls "$TMP"/dist/hlmbridge-*.whl)"

# rpy2 series for this R, as scripts/install.sh picks it (3.6 needs R >= 4.5).
R_VERSION="$(Rscript --vanilla -e 'cat(paste(R.version$major, R.version$minor, sep="."))' 2>/dev/null)" ||
    die "Rscript not found: run bash scripts/install.sh first"
R_MAJOR="${R_VERSION%%.*}"; R_MINOR="${R_VERSION#*.}"; R_MINOR="${R_MINOR%%.*}"
if [ "$R_MAJOR" -gt 4 ] || { [ "$R_MAJOR" -eq 4 ] && [ "$R_MINOR" -ge 5 ]; }; then
    RPY2_SPEC="rpy2>=3.6,<3.7"
else
    RPY2_SPEC="rpy2>=3.5.17,<3.6"
fi

say "installing $(basename "$WHEEL")[r] with $RPY2_SPEC into a fresh virtualenv in $TMP"
"$PYTHON" -m venv "$TMP/venv" || die "$PYTHON -m venv failed"
"$TMP/venv/bin/python" -m pip install --disable-pip-version-check -q "${WHEEL}[r]" "$RPY2_SPEC" \
    >"$TMP/pip.log" 2>&1 || { tail -30 "$TMP/pip.log" >&2; die "pip install of the wheel failed"; }

cd "$TMP"  # nothing of the checkout on sys.path from here on
say "smoke fits (both engines)"
"$TMP/venv/bin/python" - "$TMP/venv" <<'PY' || die "the smoke fits failed"
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
r = hlmbridge.fit("mixed mathach ses || id:", hsb, engine="lme4")
assert abs(sm.loglik - r.loglik) < 1e-4, (sm.loglik, r.loglik)
print(f"smoke_wheel: hlmbridge {where.parent}: statsmodels {sm.loglik:.4f}, lme4 {r.loglik:.4f}", file=sys.stderr)
PY

say "hlmbridge validate (bundled fixtures and data)"
"$TMP/venv/bin/hlmbridge" validate --quiet --out "$TMP/validate.txt" || {
    tail -20 "$TMP/validate.txt" >&2 || true
    die "hlmbridge validate failed in the installed wheel"
}
say "ok ($((SECONDS - t0))s)"
