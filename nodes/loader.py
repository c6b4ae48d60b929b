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
                io.Boolean.Input("fp8_storage", default=False, optional=True,
                                 tooltip="Keeps the DiT's Linear weights in fp8 in memory (read straight "
                                         "into fp8 from any file: bf16, fp16, fp32 or fp8) and upcasts each "
                                         "one while its layer runs: about half the DiT memory, lower peak RAM "
                                         "while loading, slightly slower steps. Same output for fp8_e4m3fn "
                                         "files; 16/32-bit files round to fp8 (small difference). Works "
                                         "with LoRAs (they stay in the chosen precision)."),
                io.Boolean.Input("trust_pth", default=False, optional=True,
                                 tooltip="Original Wan-AI layout only: its T5 and CLIP files are pickles "
                                         "(.pth). They load only with weights_only=True and only when their "
                                         "SHA-256 matches the manifest written by `wanvolume.py preload`. "
                                         "Turn on only for files you fetched yourself and trust."),
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
    def execute(cls, model_set: str, precision: str, offload: str, fp8_storage: bool = False,
                trust_pth: bool = False) -> io.NodeOutput:
        assemble.check_load_args(precision, offload)
        found = volume.get_model_set(model_set, extra_set_dirs())
        handle = PipeHandle(found, found.name, precision, offload, trust_pth=bool(trust_pth),
                            fp8_storage=bool(fp8_storage))
        handle.load(on_progress=Progress(1).update)   # bytes read; the total comes with the first update
        return io.NodeOutput(handle)
