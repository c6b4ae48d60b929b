#!/usr/bin/env bash
# Quick start, command 2: set up (incl. Debian's chromium for the browser test), then run every test.
# Extra arguments go to pytest (e.g. -m "not browser", -k lora).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WITH_BROWSER="${WITH_BROWSER:-1}" bash "$ROOT/scripts/setup.sh"
PY="${WANVOLUME_PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PY" -m pytest "$@"
