"""ComfyUI's own scaled-fp8 Linear, as the reference for the engine's fp8 upcast.

Run in a subprocess (it imports ComfyUI's ``comfy`` package, which the test process must not):
``python tests/comfy_fp8_oracle.py SCALED.safetensors DTYPE OUT.safetensors``. For every
``<layer>.scale_weight`` of SCALED (a ComfyUI fp8_scaled file), OUT gets ``<layer>.weight``: the
weight ``comfy.ops.scaled_fp8_ops().Linear`` computes with in DTYPE (bfloat16, float16 or
float32), read back through its forward on an identity matrix (each output is one weight times
one, so nothing is rounded on the way).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def upcast(scaled: str, dtype_name: str, out: str) -> int:
    sys.path.insert(0, str(REPO / "scripts"))
    import comfy_headless

    comfy_headless.import_comfyui(front=True)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.ops
    import torch
    from safetensors.torch import load_file, save_file

    dtype = getattr(torch, dtype_name)
    sd = load_file(scaled)
    ops = comfy.ops.scaled_fp8_ops()
    weights = {}
    for key in [k for k in sd if k.endswith(".scale_weight")]:
        layer_name = key[: -len(".scale_weight")]
        weight = sd[f"{layer_name}.weight"]
        layer = ops.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        layer.weight = torch.nn.Parameter(weight, requires_grad=False)
        layer.scale_weight = torch.nn.Parameter(sd[key], requires_grad=False)
        with torch.no_grad():
            weights[f"{layer_name}.weight"] = layer(torch.eye(weight.shape[1], dtype=dtype)).T.contiguous()
    save_file(weights, out)
    return len(weights)


if __name__ == "__main__":
    print(f"upcast {upcast(sys.argv[1], sys.argv[2], sys.argv[3])} layers")
