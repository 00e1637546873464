#!/usr/bin/env bash
# The test command of the README, and what .ci/run calls: make sure the environment exists
# (idempotent, seconds when it does), then run the whole pytest suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${RINGMOE_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
