"""The tiny volume plus damaged files, as users' copies leave them: a set whose DiT is cut in half,
a set whose DiT is another model (an SDXL UNet), a LoRA missing its last 100 bytes and an SDXL LoRA.

Shared by tests/test_bad_inputs.py (refused at /prompt), tests/test_damaged_status.py (the status
document, route, panel and badge) and tests/test_status.py (the CLI).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_engine import tiny_model

TRUNCATED_SET = "Wan2.1-I2V-truncated-Diffusers"
WRONGARCH_SET = "Wan2.1-I2V-wrongarch-Diffusers"
DIT = Path("transformer") / "diffusion_pytorch_model.safetensors"
TRUNCATED_LORA = "loras/truncated_lora.safetensors"
SDXL_LORA = "loras/sdxl_style_lora.safetensors"


def damage(vol: Path) -> Path:
    """Add the damaged sets and LoRAs to a copy of the tiny volume at ``vol``."""
    good = vol / tiny_model.TINY_SET_NAME
    for name in (TRUNCATED_SET, WRONGARCH_SET):
        shutil.copytree(good, vol / name)
    data = (good / DIT).read_bytes()
    (vol / TRUNCATED_SET / DIT).write_bytes(data[: len(data) // 2])
    save_file({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(4, 4, 3, 3)},
              str(vol / WRONGARCH_SET / DIT))
    lora = (vol / "loras" / "tiny_kissing_style_lora.safetensors").read_bytes()
    (vol / TRUNCATED_LORA).write_bytes(lora[: len(lora) - 100])
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)},
              str(vol / SDXL_LORA))
    return vol


def damaged_copy(template: Path, vol: Path) -> Path:
    shutil.copytree(template, vol)
    return damage(vol)
