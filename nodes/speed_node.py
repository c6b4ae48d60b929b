"""WanVolumeSpeedSettings: diffusers' speed options for the sampler, as one small settings node."""
from __future__ import annotations

import re
from pathlib import Path

from comfy_api.latest import io

from . import validation
from .common import CATEGORY
from ..wan_engine.sample import speed

WanSpeed = io.Custom("WANVOLUME_SPEED")


def mag_ratios_file(set_name: str) -> Path:
    """Where `cache mag_calibrate` stores a set's MagCache ratios: ComfyUI's user folder."""
    import folder_paths

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", set_name)
    return Path(folder_paths.get_user_directory()) / "wanvolume" / "magcache" / f"{safe}.json"


class WanVolumeSpeedSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = speed.SpeedSettings()
        return io.Schema(
            node_id="WanVolumeSpeedSettings",
            display_name="Wan Speed Settings (volume)",
            category=CATEGORY,
            description=("Speed options for the Wan sampler: attention backend, regional torch.compile, "
                         "a step cache and fp8 matmuls. Connect to the sampler's `speed` input. The "
                         "defaults (native attention, no compile, no cache, no fp8 matmul) change "
                         "nothing; block-level offload is the loader's offload=block."),
            inputs=[
                io.Combo.Input("attention", options=list(speed.ATTENTION_CHOICES), default=d.attention,
                               tooltip="Attention kernel. native (default): PyTorch SDPA, the "
                                       "pipeline's reference. auto: the fastest installed for the "
                                       "device (sage, _flash_3, flash, _native_cudnn, native; the log says "
                                       "which); native on the CPU. A choice that is not installed is "
                                       "an error naming the package."),
                io.Boolean.Input("compile", default=d.compile,
                                 tooltip="torch.compile the 40 repeated DiT blocks (regional compile): "
                                         "the first prompt compiles (a minute or more), later prompts "
                                         "with the same sizes run faster; changing seed or prompt does "
                                         "not recompile, changing size, frames or LoRA strengths does. "
                                         "Not with a cache, nor with the loader's fp8_storage."),
                io.Combo.Input("cache", options=list(speed.CACHES), default=d.cache,
                               tooltip="; ".join(f"{k}: {v}" for k, v in speed.CACHE_HELP.items())
                                       + ". For the full (40-step) workflows; little gain at 4 steps."),
                io.Float.Input("cache_threshold", default=d.cache_threshold, min=0.0, max=1.0, step=0.01,
                               tooltip="first_block and mag: how much change may be skipped; higher "
                                       "is faster and less exact (0.05 is a safe start)."),
                io.Boolean.Input("fp8_matmul", default=d.fp8_matmul, optional=True,
                                 tooltip="With the loader's fp8_storage: run the DiT's Linear layers as "
                                         "fp8 matmuls (torch._scaled_mm) instead of upcasting each "
                                         "weight; activations are quantised to fp8 per tensor, so the "
                                         "video differs slightly. Needs a GPU of compute capability "
                                         "8.9+ (L4, L40S, RTX 4090, H100, H200); the CPU runs it slowly. "
                                         "Off (default): nothing changes."),
            ],
            outputs=[WanSpeed.Output("speed", tooltip="Connect to the sampler's `speed` input.")],
        )

    @classmethod
    def validate_inputs(cls, input_types: dict | None = None, **values) -> bool:
        """Every input against its declared rule at /prompt time (nodes/validation.py)."""
        known = validation.given_values(cls, values, input_types)
        validation.check_schema(cls, known)
        if known.get("compile") is True and isinstance(known.get("cache"), str):
            speed.check_combination(speed.SpeedSettings(compile=True, cache=known["cache"]), False)
        if isinstance(known.get("attention"), str):   # sage on a CPU: refused now, not after the load
            import comfy.model_management

            speed.resolve_attention(known["attention"], comfy.model_management.get_torch_device())
        return True

    @classmethod
    @validation.checked
    def execute(cls, attention: str, compile: bool, cache: str, cache_threshold: float,
                fp8_matmul: bool = False) -> io.NodeOutput:
        speed.check_names(attention, cache)
        options = speed.SpeedSettings(attention, bool(compile), cache, float(cache_threshold),
                                      bool(fp8_matmul))
        speed.check_combination(options, False)
        return io.NodeOutput(options)
