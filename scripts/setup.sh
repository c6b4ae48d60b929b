#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   - a virtual environment with torch, torchaudio, the pack's requirements and the test tools;
#   - a ComfyUI tree: 0.3.75 (.comfyui/, default) or 0.28 (.comfyui-0.28/, WANVOLUME_COMFY=0.28),
#     unless COMFYUI_DIR points at your own checkout.
# Environment: see scripts/env.sh (WANVOLUME_COMFY, COMFYUI_DIR, WANVOLUME_VENV, WANVOLUME_PYTHON,
# WANVOLUME_SHARED), and WITH_BROWSER=1 to also install Debian's chromium for the browser test (and fuse3
# for the FUSE volume tests, which skip without it).
# WANVOLUME_PYTHON (your own ComfyUI's interpreter) gets only the pack's runtime requirements, through
# install.py (pip's plan first; torch and ComfyUI's own packages left alone): no test tools, no torch,
# no ComfyUI requirements. WANVOLUME_SETUP_DRY_RUN=1 prints what would be installed, changes nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

# torchaudio stays: ComfyUI 0.28 imports it at start (comfy/ldm/lightricks/vae/audio_vae.py)
TORCH_PIN=(torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1)

DRY="${WANVOLUME_SETUP_DRY_RUN:-0}"
run_() {   # a command that changes the environment; only printed under WANVOLUME_SETUP_DRY_RUN=1
  if [ "$DRY" = 1 ]; then echo "[setup] would run: $*"; else "$@"; fi
}
pip_() {   # pip, without the "Location ... is ignored" noise some machines' pip config causes
  run_ "$PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}

if [ -n "${WANVOLUME_PYTHON:-}" ]; then
  # your own ComfyUI: its interpreter already runs ComfyUI; add only what the pack needs at run time
  if [ ! -f "$COMFYUI_DIR/main.py" ]; then
    echo "[setup] COMFYUI_DIR=$COMFYUI_DIR has no main.py: set it to the ComfyUI that $PY runs" >&2
    exit 2
  fi
  if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] WANVOLUME_PYTHON=$PY has no torch: point it at the python your ComfyUI runs with" >&2
    exit 2
  fi
  echo "[setup] the pack's runtime requirements into $PY (install.py; test tools stay out)"
  if [ "$DRY" = 1 ]; then "$PY" install.py --dry-run; else "$PY" install.py; fi
else
  if [ ! -x "$VENV/bin/python" ]; then
    run_ python3 -m venv "$VENV"
  fi
  stamp="$VENV/.wanvolume-setup-$(cat requirements.txt requirements-dev.txt scripts/setup.sh | sha256sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    if ! "$PY" -c "import torch, torchvision, torchaudio" 2>/dev/null; then
      echo "[setup] installing ${TORCH_PIN[*]}"
      pip_ install "${TORCH_PIN[@]}"
    fi
    echo "[setup] installing the pack's requirements and test tools into $VENV"
    pip_ install -r requirements.txt -r requirements-dev.txt
    run_ touch "$stamp"
  fi

  run_ bash scripts/get_comfyui.sh   # the tree: unpacked once, left alone afterwards
  if [ "$DRY" != 1 ] && [ ! -f "$COMFYUI_DIR/main.py" ]; then
    echo "[setup] COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2
    exit 2
  fi

  # per interpreter, not per tree: two venvs (e.g. .venv and .venv-floors) may share one tree
  comfy_stamp="$VENV/.wanvolume-comfy-reqs-$( (echo "$COMFYUI_DIR"; cat "$COMFYUI_DIR/requirements.txt" 2>/dev/null) | sha256sum | cut -c1-12)"
  if [ ! -f "$comfy_stamp" ]; then
    echo "[setup] installing ComfyUI's requirements into $VENV (torch, torchvision, torchaudio kept as installed)"
    cons="$(mktemp)"
    "$PY" -c 'import torch, torchvision, torchaudio
for m in (torch, torchvision, torchaudio): print(f"{m.__name__}=={m.__version__.split(chr(43))[0]}")' > "$cons" \
      || [ "$DRY" = 1 ]
    pip_ install -r "$COMFYUI_DIR/requirements.txt" -c "$cons"
    rm -f "$cons"
    run_ touch "$comfy_stamp"
  fi
fi

if [ "${WITH_BROWSER:-0}" = "1" ] && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi wqy \
     || ! command -v fusermount3 >/dev/null || ! ldconfig -p 2>/dev/null | grep -q libfuse3.so.3; }; then
  # chromium for the browser test; a CJK font so Wan's (Chinese) negative prompt renders in screenshots;
  # fuse3 + libfuse3-3 for tests/throttlefs.py (the throttled FUSE volume of test_readers, test_throttlefs)
  echo "[setup] installing Debian's chromium, fonts-wqy-microhei, fuse3 and libfuse3-3 for the test suite"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  for attempt in 1 2 3; do   # the package mirror can blip; try again before giving up
    if "${SUDO[@]}" apt-get update -qq && \
       "${SUDO[@]}" apt-get install -y -qq chromium fonts-wqy-microhei fuse3 libfuse3-3 >/dev/null; then
      break
    fi
    [ "$attempt" = 3 ] && { echo "[setup] could not install chromium / fuse3" >&2; exit 1; }
    sleep $((attempt * 10))
  done
fi

echo "[setup] python: $PY"
echo "[setup] ComfyUI: $COMFYUI_DIR ($(grep -o "[0-9][0-9.]*" "$COMFYUI_DIR/comfyui_version.py" | head -1))"
