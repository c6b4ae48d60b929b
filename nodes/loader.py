"""WanVolumeModelLoader: pick a model set on the volume; it loads once and stays resident."""
from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, PipeHandle, Progress, WanPipe, extra_set_dirs
from .engine import assemble, volume
from .engine.errors import WanVolumeError

NO_SETS = "(no model set found: see the node's tooltip)"


def set_options() -> list[str]:
    names = volume.complete_set_names(extra_set_dirs())
    return names or [NO_SETS]


class WanVolumeModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanVolumeModelLoader",
            display_name="Wan2.1 I2V Loader (volume)",
            category=CATEGORY,
            description=(
                "Loads a Wan2.1 image-to-video model set from the network volume "
                "(WAN_VOLUME_MODELS_DIR, MODEL_CACHE_DIR, /workspace/models, /runpod-volume/models, "
                "and ComfyUI's diffusers folder). Reads the volume once; the model stays resident "
                "across prompts."),
            inputs=[
                io.Combo.Input("model_set", options=set_options(),
                               tooltip="Complete model sets found on the volume. Fill the volume with "
                                       "`python wanvolume.py preload --profile ...`."),
                io.Combo.Input("precision", options=list(assemble.PRECISIONS), default="bf16",
                               tooltip="Weights of the 14B transformer and text encoder. bf16: best "
                                       "speed/quality on H100/A100; fp16 for older GPUs; fp32 for checks. "
                                       "VAE and image encoder stay fp32."),
                io.Combo.Input("offload", options=list(assemble.OFFLOAD_MODES), default="none",
                               tooltip="; ".join(f"{k}: {v}" for k, v in assemble.OFFLOAD_HELP.items())),
            ],
            outputs=[WanPipe.Output("pipe", tooltip="The loaded model set; connect to a LoRA or the sampler.")],
        )

    @classmethod
    def validate_inputs(cls, model_set: str) -> bool | str:
        """Replaces ComfyUI's "value not in list" with what was searched and how to fix it."""
        try:
            volume.get_model_set(model_set, extra_set_dirs())
        except WanVolumeError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model_set: str, precision: str, offload: str) -> io.NodeOutput:
        found = volume.get_model_set(model_set, extra_set_dirs())
        bar = Progress(1)   # bytes read from the volume; the total comes with the first update
        assemble.load(found, precision, offload, on_progress=bar.update)
        return io.NodeOutput(PipeHandle(found, found.name, precision, offload))
