#!/usr/bin/env bash
# Idempotent set-up of the project's virtual environment (.venv in the repo root).
#
# Installs the pinned stack of ../shared/design/stack.md (route 2: mmcv 2.1.0 + mmdet 3.3.0),
# building mmcv 2.1.0 with CPU ops once per machine. The built wheel is kept outside the clone,
# keyed by the Python and torch versions, so fresh clones (CI) reuse it:
#   ${RINGMOE_CACHE:-~/.cache/ringmoe-bench}/wheels/<python>-torch<version>/mmcv-2.1.0-*.whl
# A stamp file records a hash of the pins; when it matches, the script returns in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${RINGMOE_VENV:-$ROOT/.venv}"
CACHE="${RINGMOE_CACHE:-$HOME/.cache/ringmoe-bench}"
PY="${PYTHON:-python3.11}"
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

stamp_hash() {
  cat "$ROOT/requirements/pins.txt" "$ROOT/requirements/constraints.txt" "$ROOT/pyproject.toml" \
      "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16
}

STAMP="$VENV/.ringmoe-setup-$(stamp_hash)"
if [[ -f "$STAMP" ]]; then
  log "environment up to date ($VENV)"
  exit 0
fi

command -v "$PY" >/dev/null || { echo "setup: $PY not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)
CONSTRAINTS=(-c "$ROOT/requirements/constraints.txt")

log "installing torch $TORCH_VERSION (CPU) and build tools"
# setuptools<82: mmcv's setup.py and mmengine's is_installed import pkg_resources (stack.md).
"${PIP[@]}" "${CONSTRAINTS[@]}" "torch==$TORCH_VERSION" "numpy==1.26.4" "setuptools==81.0.0" \
  wheel ninja psutil packaging

TORCH_TAG=$("$VPY" -c 'import sys, torch; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}")')
WHEELS="$CACHE/wheels/$TORCH_TAG"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with CPU ops (20-40 minutes, once per machine) into $WHEELS"
  BUILD=$(mktemp -d)
  # --no-build-isolation: an isolated build has no torch and silently drops the ops (stack.md).
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    "$VPY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
    "mmcv==$MMCV_VERSION" -w "$BUILD"
  mv "$BUILD"/mmcv-*.whl "$WHEELS"/   # same filesystem rename after a complete build only
  rm -rf "$BUILD"
else
  log "reusing built mmcv wheel from $WHEELS"
fi

log "installing the pinned stack and the project (editable)"
"${PIP[@]}" "${CONSTRAINTS[@]}" --find-links "$WHEELS" -r "$ROOT/requirements/pins.txt"
"${PIP[@]}" "${CONSTRAINTS[@]}" --find-links "$WHEELS" --no-deps -e "$ROOT"

log "checking the environment"
"$VPY" - <<'EOF'
import importlib
import mmcv._ext  # noqa: F401  an ops-less mmcv build must never pass silently
from benchmarks import compat
compat.apply()
for name in ("torch", "numpy", "mindspore", "mmengine", "mmcv", "mmpretrain", "mmseg", "mmdet", "mmrotate",
             "trackeval", "lap"):
    mod = importlib.import_module(name)
    print(f"  {name:12s} {getattr(mod, '__version__', '?')}")
EOF
rm -f "$VENV"/.ringmoe-setup-*
touch "$STAMP"
log "done"
