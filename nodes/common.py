"""What the pack's nodes share: the pipe type, ComfyUI's extra model folders, errors, progress."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from comfy_api.latest import io

from ..wan_engine.load import assemble
from ..wan_engine.load.assemble import LoadedPipeline
from ..wan_engine.lora.apply import LoraUse
from ..wan_engine.store.modelset import COMFY_KINDS, ModelSet, SearchDirs

log = logging.getLogger("wanvolume")

CATEGORY = "WanVolume"
WanPipe = io.Custom("WANVOLUME_PIPE")


@dataclass(frozen=True)
class PipeHandle:
    """What flows through a ``pipe`` link: which set, how it is loaded, and the LoRA chain.

    The pipeline itself stays resident in the engine; the handle is cheap, so changing a LoRA
    strength re-runs the LoRA node and the sampler without reloading the base model.
    """

    model_set: ModelSet = field(compare=False)
    set_name: str
    precision: str
    offload: str
    fp8_storage: bool = False
    loras: tuple[LoraUse, ...] = ()
    asked: str = ""       # the loader's model_set value when it was an auto value ("" otherwise)

    def with_lora(self, use: LoraUse) -> "PipeHandle":
        return replace(self, loras=self.loras + (use,))

    def load(self, on_progress=None, room_for: tuple[int, int, int] | None = None) -> LoadedPipeline:
        """The resident pipeline (loads only if another set was loaded meanwhile, or it was dropped).

        Its components are handed to ComfyUI's memory manager (``nodes/memory.py``).
        ``room_for=(width, height, frames)``: ask ComfyUI for room to sample that size first and
        bring the components to the GPU (from RAM if ComfyUI moved them there).
        """
        import comfy.model_management

        from . import memory, memory_plan

        offload, fp8, plan = memory_plan.choose(self.model_set, self.precision, self.offload,
                                                self.fp8_storage, room_for)
        loaded = assemble.load(self.model_set, self.precision, memory.effective_offload(offload),
                               on_progress=on_progress, fp8_storage=fp8,
                               device=comfy.model_management.get_torch_device(),
                               placement=memory.ComfyPlacement(plan))
        if loaded.plan is None:
            loaded.plan = plan
            log.info("Wan set %s loaded with offload=%s%s: %s", self.set_name, offload,
                     ", fp8 storage" if fp8 else "", plan.summary())
        if room_for is not None:
            memory.make_room(loaded, *room_for)
        return loaded


def extra_set_dirs() -> SearchDirs:
    """ComfyUI's own model folders searched for model sets besides the volume.

    Its models dir and ``diffusers`` folders are searched like a models dir; the per-kind lists
    (``diffusion_models``, ``text_encoders``, ``clip_vision``, ``vae``, including the paths of
    ``extra_model_paths.yaml``) let a ComfyUI-files set combine files from several folders.
    """
    import folder_paths

    dirs = [Path(folder_paths.models_dir)]
    dirs += [Path(p) for p in folder_paths.get_folder_paths("diffusers")]
    kinds = {k: [Path(p) for p in folder_paths.get_folder_paths(k)] for k in COMFY_KINDS}
    return SearchDirs.from_kinds(dirs, kinds)


def extra_lora_dirs() -> list[Path]:
    import folder_paths

    return [Path(p) for p in folder_paths.get_folder_paths("loras")]


class Progress:
    """ComfyUI's progress bar for one node, plus the interrupt check between steps."""

    def __init__(self, total: int) -> None:
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(total)

    def update(self, value: int, total: int, preview=None) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update_absolute(value, total, preview)


def watch_posts(paths: tuple[str, ...], on_body) -> None:
    """A middleware on ComfyUI's server: ``on_body(json_body)`` sees each POST to ``paths`` (with and
    without the ``/api`` prefix) before ComfyUI does; a response it returns answers instead."""
    from aiohttp import web
    from server import PromptServer

    wanted = set(paths) | {"/api" + p for p in paths}

    @web.middleware
    async def watch(request, handler):
        if request.method == "POST" and request.path in wanted:
            try:
                body = await request.json()
            except ValueError:
                body = None
            answer = on_body(body)
            if answer is not None:
                return answer
        return await handler(request)

    PromptServer.instance.app.middlewares.append(watch)
