#!/usr/bin/env bash
# Install (no-op when up to date), then run the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh -q -k data
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/install.sh
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test: ERROR: pytest collected no tests (exit 5) - check the arguments or tests/" >&2
    exit 1
fi
exit "$status"
