#!/usr/bin/env bash
# The declared minimum versions, proven: the lowest versions requirements*.txt allow
# (uv --resolution lowest-direct) in their own venv (.venv-floors), torch pinned as setup.sh pins it,
# ComfyUI's requirements added without lifting any of them, then the engine tests and one server test.
# Extra arguments go to pytest (default: the floors selection below).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WANVOLUME_VENV="${WANVOLUME_VENV:-$ROOT/.venv-floors}"
unset WANVOLUME_PYTHON   # the floors live in their own venv, never in an interpreter you passed
source "$ROOT/scripts/env.sh"
cd "$ROOT"

TORCH_PIN="$(grep -o 'TORCH_PIN=([^)]*)' scripts/setup.sh | sed 's/TORCH_PIN=(//; s/)//')"   # one pin, in setup.sh
[ -x "$PY" ] || python3 -m venv "$VENV"
if ! "$PY" -c "import torch, torchvision, torchaudio" 2>/dev/null; then
  echo "[floors] installing $TORCH_PIN"
  # shellcheck disable=SC2086   # the pin is a list of words
  "$PY" -m pip --disable-pip-version-check -q install $TORCH_PIN 2> >(grep -v "^WARNING: Location '" >&2)
fi
"$PY" -m pip --disable-pip-version-check -q install "uv>=0.9" 2> >(grep -v "^WARNING: Location '" >&2)
UV=("$PY" -m uv)

# uv does not read pip's config: hand it the same extra indexes / local wheel folders, if any
pip_cfg() { "$PY" -m pip config get "global.$1" 2>/dev/null || true; }
export UV_EXTRA_INDEX_URL="${UV_EXTRA_INDEX_URL:-$(pip_cfg extra-index-url | tr '\n' ' ')}"
export UV_FIND_LINKS="${UV_FIND_LINKS:-$(pip_cfg find-links | tr '\n' ',' | sed 's/,$//')}"
export UV_INDEX_STRATEGY=unsafe-best-match   # lowest across all indexes, not the first that has a name

pins="$(mktemp)"
"$PY" -c 'import torch, torchvision, torchaudio
for m in (torch, torchvision, torchaudio): print(f"{m.__name__}=={m.__version__.split(chr(43))[0]}")' > "$pins"
echo "[floors] installing the lowest versions requirements.txt and requirements-dev.txt allow"
# --upgrade: what torch's install brought (numpy, pillow) must not stand in for our floors
"${UV[@]}" pip install -q --python "$PY" --resolution lowest-direct --upgrade -c "$pins" \
  -r requirements.txt -r requirements-dev.txt

bash scripts/get_comfyui.sh   # the ComfyUI tree (0.3.75 unless WANVOLUME_COMFY says otherwise)
# ComfyUI's requirements must fit around the floors: a package ComfyUI needs newer than our floor
# fails here, naming it (then raise that floor: the pack never runs outside ComfyUI)
direct="$(sed -E 's/#.*//; s/[<>=!~ ;\[].*//' requirements.txt requirements-dev.txt | grep . | sed 's/[-_]/[-_]/g' | paste -sd'|')"
"$PY" -m pip freeze --exclude-editable | grep -iE "^($direct|torch|torchvision|torchaudio)==" > "$pins"
echo "[floors] adding ComfyUI's requirements with the floors held"
"${UV[@]}" pip install -q --python "$PY" -c "$pins" -r "$COMFYUI_DIR/requirements.txt"
rm -f "$pins"

echo "[floors] versions under test:"
"$PY" -m pip list 2>/dev/null | grep -iE '^(diffusers|transformers|tokenizers|huggingface.hub|peft|accelerate|safetensors|numpy|pillow|aiohttp|sentencepiece|protobuf|imageio-ffmpeg|tqdm|ftfy|pytest|torch) '
if [ "$#" -gt 0 ]; then
  exec "$PY" -m pytest "$@"
fi
# the engine tests (incl. the in-process ones against ComfyUI's model management), then one
# server test that runs loader -> LoRA -> sampler -> video through a real ComfyUI on the floors
# (not the full-size simulations: minutes of CPU each, and the same torch as the main job)
"$PY" -m pytest -q -m "not server and not browser and not simulation" tests/
exec "$PY" -m pytest -q "tests/test_server.py::test_lora_strength_changes_video_and_zero_equals_no_lora"
