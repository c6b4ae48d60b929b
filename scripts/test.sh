#!/usr/bin/env bash
# Quick start, command 2: set up (incl. Debian's chromium for the browser test), then run every test.
# Extra arguments go to pytest (e.g. -m "not browser", -k lora). WANVOLUME_COMFY=0.28 runs the same
# tests against ComfyUI 0.28 (its own tree and venv; see scripts/env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ -n "${WANVOLUME_PYTHON:-}" ] && ! "$PY" -c "import pytest, pytest_timeout, playwright" 2>/dev/null; then
  # test tools go only into the repo's own venv, never into your ComfyUI's interpreter
  echo "[test] WANVOLUME_PYTHON=$PY lacks the test tools (requirements-dev.txt): run without" \
       "WANVOLUME_PYTHON (the repo's own venv, with COMFYUI_DIR for your tree), or install them there" \
       "yourself: $PY -m pip install -r requirements-dev.txt" >&2
  exit 2
fi
WITH_BROWSER="${WITH_BROWSER:-1}" bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
