"""ComfyUI's own LoRA merge, as the reference for the engine's LoRA semantics.

Run in a subprocess (it imports ComfyUI's ``comfy`` package, which the test process must not):
``python tests/comfy_lora_oracle.py BASE.safetensors LORA.safetensors STRENGTH OUT.safetensors``.
BASE holds a Wan DiT in ComfyUI's key names (``diffusion_model.`` prefix); OUT gets every weight
after ``comfy.lora.load_lora`` + ``comfy.lora.calculate_weight``, exactly as ComfyUI patches a model.
"""
from __future__ import annotations

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
    key_map = {(k[: -len(".weight")] if k.endswith(".weight") else k): k for k in model}
    patches = comfy.lora.load_lora(load_file(lora), key_map)
    merged = {}
    for key, weight in model.items():
        if key in patches:
            weight = comfy.lora.calculate_weight([(strength, patches[key], 1.0, None, None)],
                                                 weight.clone().float(), key)
        merged[key] = weight.contiguous()
    save_file(merged, out)
    return len(patches)


if __name__ == "__main__":
    n = merge(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
    print(f"patched {n} weights")
