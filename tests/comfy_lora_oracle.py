"""ComfyUI's own LoRA merge, as the reference for the engine's LoRA semantics.

Run in a subprocess (it imports ComfyUI's ``comfy`` package, which the test process must not):
``python tests/comfy_lora_oracle.py BASE.safetensors LORA.safetensors STRENGTH OUT.safetensors``.
BASE holds a Wan DiT in ComfyUI's key names (``diffusion_model.`` prefix); OUT gets every weight
after ``comfy.lora.load_lora`` + ``comfy.lora.calculate_weight``, exactly as ComfyUI patches a model.
The last line printed is ``NOT_LOADED <json list>``: the LoRA keys ComfyUI left unloaded (it logs
"lora key not loaded" for each). ``comfy_merge`` runs it from a test.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def merge(base: str, lora: str, strength: float, out: str) -> int:
    sys.path.insert(0, str(REPO / "scripts"))
    import comfy_headless

    comfy_headless.import_comfyui(front=True)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.lora
    from safetensors.torch import load_file, save_file

    model = load_file(base)
    # ComfyUI's generic key map for a DiT (model_lora_keys_unet): "<key minus .weight>" -> key
    key_map = {(k[: -len(".weight")] if k.endswith(".weight") else k): k for k in model}
    not_loaded: list[str] = []
    catcher = logging.Handler()
    catcher.emit = lambda r: not_loaded.append(r.getMessage().split(": ", 1)[1]) \
        if r.getMessage().startswith("lora key not loaded: ") else None
    logging.getLogger().addHandler(catcher)
    patches = comfy.lora.load_lora(load_file(lora), key_map)
    logging.getLogger().removeHandler(catcher)
    merged = {}
    for key, weight in model.items():
        if key in patches:
            weight = comfy.lora.calculate_weight([(strength, patches[key], 1.0, None, None)],
                                                 weight.clone().float(), key)
        merged[key] = weight.contiguous()
    save_file(merged, out)
    print(f"patched {len(patches)} weights")
    print("NOT_LOADED " + json.dumps(sorted(not_loaded)))
    return len(patches)


def comfy_merge(base: dict, lora: Path, strength: float, tmp: Path) -> tuple[dict, list[str]]:
    """ComfyUI's merge of ``lora`` into ``base`` (Wan key names, no prefix), run in a subprocess:
    (the merged weights in Wan key names, the LoRA keys ComfyUI did not load)."""
    from safetensors.torch import load_file, save_file

    base_file, out_file = tmp / "comfy_base.safetensors", tmp / "comfy_merged.safetensors"
    save_file({PREFIX + k: v.contiguous() for k, v in base.items()}, str(base_file))
    done = subprocess.run([sys.executable, str(Path(__file__)), str(base_file), str(lora), str(strength),
                           str(out_file)], check=True, capture_output=True, text=True, cwd=REPO)
    last = done.stdout.strip().splitlines()[-1]
    merged = {k.removeprefix(PREFIX): v for k, v in load_file(str(out_file)).items()}
    return merged, json.loads(last.removeprefix("NOT_LOADED "))


PREFIX = "diffusion_model."


if __name__ == "__main__":
    merge(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
