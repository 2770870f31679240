#!/usr/bin/env bash
# Install (no-op when up to date), then check both engines against the seed's Stata numbers:
#   bash scripts/validate.sh [hlmbridge validate options, e.g. --format markdown]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/install.sh
exec .venv/bin/hlmbridge validate "$@"
