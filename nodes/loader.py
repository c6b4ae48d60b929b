"""WanVolumeModelLoader: pick a model set on the volume; it loads once and stays resident."""
from __future__ import annotations

from comfy_api.latest import io

from . import run_record, validation
from .common import CATEGORY, PipeHandle, Progress, WanPipe, extra_set_dirs
from ..wan_engine.load import assemble, warmup
from ..wan_engine.store import auto_set, damage, find as volume
from ..wan_engine.store.scan import comfy_files, wan22
from ..wan_engine import rules
from ..wan_engine.errors import InvalidInput
from ..wan_engine.load.layouts.build import ENV_TRUST_PTH

OFFLOAD_CHOICES = ("auto",) + assemble.OFFLOAD_MODES
OFFLOAD_HELP = {"auto": "the memory plan for this GPU: everything resident where it fits, else the "
                        "encoders swapped per phase, fp8 DiT storage, block or sequential offload "
                        "(`python wanvolume.py plan`; docs/memory.md)", **assemble.OFFLOAD_HELP}
REFETCH = damage.SET_FIX


def set_options() -> list[str]:
    """The automatic choices (always, first), then the complete sets whose safetensors headers fit
    their files; damaged ones are logged, not offered."""
    names = list(auto_set.VALUES)
    for found in volume.find_model_sets(extra_set_dirs()):
        if found.complete:
            try:
                check_files(found)
            except InvalidInput as exc:
                validation.warn_once(f"model set left out of the list: {exc}")
                continue
            names.append(found.name)
    return names


def check_model_set(name: object, choices: dict | None = None) -> volume.ModelSet:
    """The set exists, is complete (with the explicit file choices, if any), and its safetensors
    headers fit (no hashing)."""
    rules.text("model_set", name)
    found = comfy_files.with_choices(volume.get_model_set(name, extra_set_dirs()), choices or {})
    if found.missing:
        raise InvalidInput(f"with the files chosen, the set misses {', '.join(found.missing)}",
                           field="text_encoder", value=found.components.get("text_encoder"),
                           fix=f"pick {comfy_files.AUTO} or a umt5 file that carries its tokenizer")
    check_files(found)
    return found


def choices_of(values: dict) -> dict[str, object]:
    """The loader's explicit file choices by component (``auto`` or absent: the stated rule)."""
    return {comp: values.get(field) for comp, field in comfy_files.CHOICE_INPUTS.items()}


def pairing_note() -> str:
    """For the tooltip: which files each ComfyUI-files set pairs its DiT with (``auto``)."""
    sets = [s for s in volume.find_model_sets(extra_set_dirs()) if s.complete and s.layout == comfy_files.LAYOUT]
    if not sets:
        return ""
    return (" ComfyUI files, paired automatically: " + "; ".join(f"{s.name}: {s.label}" for s in sets)
            + f". When several files fit: {comfy_files.RULE}.")


def choice_inputs() -> list:
    """Optional dropdowns of the umt5 / CLIP vision / VAE files on the volume that fit a set."""
    sets = [s for s in volume.find_model_sets(extra_set_dirs()) if s.complete]
    options = comfy_files.choice_options(sets)
    what = {"text_encoder": "umt5 text encoder", "image_encoder": "CLIP vision (ViT-H)", "vae": "VAE"}
    return [io.Combo.Input(field, options=options[comp], default=comfy_files.AUTO, optional=True,
                           tooltip=f"ComfyUI-files sets only: which {what[comp]} file to use. {comfy_files.AUTO}: "
                                   f"the best that fits the DiT ({comfy_files.RULE}).")
            for comp, field in comfy_files.CHOICE_INPUTS.items()]


def check_files(found: volume.ModelSet) -> None:
    """Headers only (no hashing): every safetensors file whole, the DiT a Wan DiT (wan_engine/store/damage.py,
    the check the status document shows)."""
    bad = damage.set_damage(found)
    if bad:
        raise InvalidInput(bad.message, field="model_set", value=found.name, fix=bad.fix)
    expert = wan22.expert_problem(found)
    if expert:
        raise InvalidInput(f"the file {expert[0]} is {expert[1]}", field="model_set", value=found.name,
                           fix=expert[2])


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
                "across prompts. Original Wan-AI .pth files load only when their SHA-256 is the "
                "published one (preload manifest or hf download's records); only the server's "
                f"operator can skip that check ({ENV_TRUST_PTH}=1)."),
            inputs=[
                io.Combo.Input("model_set", options=set_options(),
                               tooltip="auto: the best complete set of that family and resolution on the "
                                       f"volume ({auto_set.RULE}); or a complete model set found on the "
                                       "volume, by name. Fill the volume with "
                                       "`python wanvolume.py preload --profile ...`." + pairing_note()),
                io.Combo.Input("precision", options=list(assemble.PRECISIONS), default="bf16",
                               tooltip="Weights of the 14B transformer and text encoder. bf16: best "
                                       "speed/quality on H100/A100; fp16 for older GPUs; fp32 for checks. "
                                       "VAE and image encoder stay fp32."),
                io.Combo.Input("offload", options=list(OFFLOAD_CHOICES), default="auto",
                               tooltip="; ".join(f"{k}: {v}" for k, v in OFFLOAD_HELP.items())),
                io.Boolean.Input("fp8_storage", default=False, optional=True,
                                 tooltip="Keeps the DiT's Linear weights in fp8 in memory (read straight "
                                         "into fp8 from any file: bf16, fp16, fp32 or fp8) and upcasts each "
                                         "one while its layer runs: about half the DiT memory, lower peak RAM "
                                         "while loading, slightly slower steps. Same output for fp8_e4m3fn "
                                         "files; 16/32-bit files round to fp8 (small difference). Works "
                                         "with LoRAs (they stay in the chosen precision)."),
                *choice_inputs(),
            ],
            outputs=[WanPipe.Output("pipe", tooltip="The loaded model set; connect to a LoRA or the sampler.")],
        )

    @classmethod
    def validate_inputs(cls, input_types: dict | None = None, **values) -> bool:
        """The set and its files first (naming a damaged file), then every input's own rule."""
        known = validation.given_values(cls, values, input_types)
        validation.check_schema(cls, {k: v for k, v in known.items()     # text_encoder={}: named
                                      if k in comfy_files.CHOICE_INPUTS.values()})
        if "model_set" in known:
            check_model_set(known["model_set"], choices_of(known))
        validation.check_schema(cls, known)
        return True

    @classmethod
    @validation.checked
    def execute(cls, model_set: str, precision: str, offload: str, fp8_storage: bool = False,
                text_encoder: str = comfy_files.AUTO, clip_vision: str = comfy_files.AUTO,
                vae: str = comfy_files.AUTO) -> io.NodeOutput:
        # Prompts of older versions may still carry ``trust_pth``: ComfyUI drops inputs that are
        # not in the schema, so it cannot switch the .pth check off (only ENV_TRUST_PTH can).
        rules.choice("offload", offload, list(OFFLOAD_CHOICES))
        assemble.check_load_args(precision, "none" if offload == "auto" else offload)
        found = check_model_set(model_set, choices_of(
            {"text_encoder": text_encoder, "clip_vision": clip_vision, "vae": vae}))
        handle = PipeHandle(found, found.name, precision, offload, fp8_storage=bool(fp8_storage),
                            asked=model_set if model_set != found.name else "")
        record = run_record.current()
        warmup.wait()          # WAN_VOLUME_WARMUP still loading this set: wait, do not read it twice
        before = assemble.resident()
        with record.phase("load"):   # the run report: reading the volume (or reusing the set)
            loaded = handle.load(on_progress=Progress(1).update)   # bytes read; total with the first update
        record.use_device(loaded.device)
        record.note_load(read_volume=loaded is not before, split=loaded.load_split)
        return io.NodeOutput(handle)
