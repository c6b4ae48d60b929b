#!/usr/bin/env bash
# Quick start, command 2: set up (incl. Debian's chromium for the browser test), then run every test.
# Extra arguments go to pytest (e.g. -m "not browser", -k lora). WANVOLUME_COMFY=0.28 runs the same
# tests against ComfyUI 0.28 (its own tree and venv; see scripts/env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
WITH_BROWSER="${WITH_BROWSER:-1}" bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
