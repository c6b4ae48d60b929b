#!/usr/bin/env bash
# Quick start, command 1: set up, then run the main job (shipped API workflow through a real,
# headless ComfyUI; a tiny demo model set when the volume has no real one). Prints the MP4 path.
# Extra arguments go to scripts/demo.py (e.g. --resolution 720p --tiny --steps 8).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$ROOT/scripts/setup.sh" >&2
exec "$PY" "$ROOT/scripts/demo.py" "$@"
