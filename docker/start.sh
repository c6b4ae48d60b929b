#!/usr/bin/env bash
# Container start: check the network volume in well under a second, optionally fill it, start ComfyUI.
#
# Environment:
#   WAN_VOLUME_MODELS_DIR / MODEL_CACHE_DIR  models dir (default: /workspace/models, else /runpod-volume/models)
#   WAN_VOLUME_PRELOAD="comfy-720p-bf16 kissing-lora distill-lora-720p"  profiles to fetch when check fails (Pods only;
#                                            needs HF_TOKEN for gated repos); empty = never download
#   WAN_VOLUME_REQUIRE_READY=1               exit instead of starting ComfyUI when the volume is not ready
#   COMFYUI_ARGS                             extra arguments for ComfyUI's main.py
#   WAN_VOLUME_NEXT                          run this instead of ComfyUI's main.py (Serverless: the
#                                            worker's own /start.sh, which starts ComfyUI and the handler)
#   COMFYUI_DIR (/comfyui), WAN_VOLUME_PACK_DIR ($COMFYUI_DIR/custom_nodes/ComfyUI-WanVolume),
#   WAN_VOLUME_PYTHON (python)              where things are; the images use the defaults
#                                            (tests/test_docker.py runs this script against other ones)
set -uo pipefail

COMFYUI_DIR="${COMFYUI_DIR:-/comfyui}"
PACK="${WAN_VOLUME_PACK_DIR:-$COMFYUI_DIR/custom_nodes/ComfyUI-WanVolume}"
PY="${WAN_VOLUME_PYTHON:-python}"
cd "$COMFYUI_DIR" || { echo "start.sh: COMFYUI_DIR=$COMFYUI_DIR does not exist" >&2; exit 1; }

"$PY" "$PACK/wanvolume.py" check
status=$?

if [ "$status" -ne 0 ] && [ -n "${WAN_VOLUME_PRELOAD:-}" ]; then
  for profile in $WAN_VOLUME_PRELOAD; do
    echo "start.sh: WAN_VOLUME_PRELOAD names $profile; fetching it" >&2
    "$PY" "$PACK/wanvolume.py" preload --profile "$profile" || exit $?
  done
  "$PY" "$PACK/wanvolume.py" check
  status=$?
fi

if [ "$status" -ne 0 ] && [ "${WAN_VOLUME_REQUIRE_READY:-0}" = "1" ]; then
  echo "start.sh: the volume is not ready (see above); WAN_VOLUME_REQUIRE_READY=1, so not starting ComfyUI" >&2
  exit "$status"
fi

if [ -n "${WAN_VOLUME_NEXT:-}" ]; then
  exec "$WAN_VOLUME_NEXT"
fi

# shellcheck disable=SC2086
exec "$PY" main.py --listen 0.0.0.0 --port 8188 \
  --extra-model-paths-config "$COMFYUI_DIR/extra_model_paths.yaml" ${COMFYUI_ARGS:-}
