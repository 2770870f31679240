#!/usr/bin/env bash
# Install (no-op when up to date), the wheel smoke test (scripts/smoke_wheel.sh, about a
# minute, full runs only), then the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh -q -k data
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/install.sh
# The installed wheel (not the checkout) works: build it, install it into a fresh venv
# outside the checkout, fit on both engines, validate. Runs first on a full run (CI's), so
# that pytest's summary is the last line; a run with pytest arguments skips it and says so.
if [ "$#" -eq 0 ]; then
    bash scripts/smoke_wheel.sh
else
    echo "test: wheel smoke test not run (pytest arguments given); run: bash scripts/smoke_wheel.sh" >&2
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test: ERROR: pytest collected no tests (exit 5) - check the arguments or tests/" >&2
    exit 1
fi
exit "$status"
