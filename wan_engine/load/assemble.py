"""Load a model set into a ``WanImageToVideoPipeline`` and keep it resident.

Loading reads the volume once; later prompts reuse the resident pipeline. One set is resident at
a time: loading another set (or the same set in another precision/offload) releases the first.
Where the components live (GPU, RAM) is up to a ``Placement``: by default the engine puts them
on the device (or installs diffusers' offload hooks); the nodes pass one backed by ComfyUI's
memory manager, which may move them to RAM and back, or drop them (``LoadedPipeline.dropped``).
"""
from __future__ import annotations

import gc
import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .. import rules
from . import compat, fastload, readahead
from .layouts import LoadSpec, layout_named
from .layouts.build import ENV_FP8_STORAGE, ENV_TRUST_PTH, env_switch
from ..store import hf_verify
from ..store.modelset import ModelSet, files_under

log = logging.getLogger(__name__)

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
OFFLOAD_MODES = ("none", "model", "block", "sequential")
OFFLOAD_HELP = {
    "none": "keep every component on the GPU (fastest; ~40 GB+ VRAM for 14B in bf16)",
    "model": "move whole components to the GPU only while they run (diffusers model CPU offload)",
    "block": "stream the models block by block from CPU RAM, the next block copied while one runs "
             "(diffusers group offload with CUDA streams, the 'block swap' of other packs; for 24-48 GB "
             "cards; needs about twice the model size in CPU RAM)",
    "sequential": "stream layer by layer from CPU (lowest VRAM, slowest)",
}

@dataclass
class LoadedPipeline:
    """The resident pipeline and what is known about it."""

    key: tuple
    model_set: ModelSet
    pipe: object
    dtype: torch.dtype
    device: torch.device
    offload: str
    load_seconds: float
    lora: object | None = None   # the LoRA layer's LoraState (lora/state.py: its one owner)
    lock: threading.RLock = field(default_factory=threading.RLock)
    placement: "Placement | None" = None
    dropped: bool = False   # the placement freed the weights: the next load reads the volume again
    plan: object | None = None   # the memory plan (load/plan.py Plan) the nodes run it with
    # how the load's seconds split: hash (first use of an HF cache), read and convert (thread-
    # seconds, overlapping), to_device (the placement), read_bytes, seconds (wall)
    load_split: dict | None = None


class Placement(Protocol):
    """Moves a freshly built pipeline's components to where they compute, and forgets them again."""

    def attach(self, loaded: LoadedPipeline) -> None: ...

    def forget(self) -> None: ...


@dataclass
class DevicePlacement:
    """The engine's own placement (CLI, tests): everything on the device, or diffusers' hooks."""

    def attach(self, loaded: LoadedPipeline) -> None:
        place_on_device(loaded.pipe, loaded.device, loaded.offload)

    def forget(self) -> None:
        pass


_resident: LoadedPipeline | None = None
_resident_lock = threading.RLock()   # re-entrant: load() releases the previous set while holding it


def execution_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextmanager
def exclusive():
    """Hold the resident set for several steps (the warm-up: load, to the GPU, LoRAs); a load by
    anyone else (a prompt's loader) waits until they end, then finds the set resident."""
    with _resident_lock:
        yield


def check_load_args(precision: str, offload: str) -> torch.dtype:
    rules.choice("precision", precision, list(PRECISIONS))
    rules.choice("offload", offload, list(OFFLOAD_MODES))
    return PRECISIONS[precision]


def load(model_set: ModelSet, precision: str = "bf16", offload: str = "none",
         on_progress: Callable[[int, int], None] | None = None, trust_pth: bool = False,
         fp8_storage: bool = False, device: torch.device | None = None,
         placement: Placement | None = None) -> LoadedPipeline:
    """The resident pipeline for ``model_set``, loading it only if it is not resident yet.

    ``on_progress(bytes_done, bytes_total)`` is called as components are read from the volume.
    ``trust_pth`` loads original-layout ``.pth`` files without a manifest hash match;
    ``fp8_storage`` keeps fp8 DiT weights in fp8 in memory (upcast per layer while computing).
    ``device`` is where it computes (ComfyUI's device in the nodes; default: CUDA if present).
    ``placement`` moves the components after the build (default: ``DevicePlacement``).
    """
    global _resident

    dtype = check_load_args(precision, offload)
    device = torch.device(device) if device is not None else execution_device()
    key = (str(model_set.root), model_set.name, precision, offload, trust_pth, fp8_storage,
           str(device), tuple(sorted((k, str(v)) for k, v in model_set.components.items())))
    with _resident_lock:
        if _resident is not None and _resident.key == key and not _resident.dropped:
            return _resident
        release()
        start = time.perf_counter()
        files = readahead.load_order(model_set)
        progress = _LoadProgress(max(1, sum(f.stat().st_size for f in files)), on_progress)
        spec = LoadSpec(dtype, fp8_storage=fp8_storage or env_switch(ENV_FP8_STORAGE),
                        trust_pth=trust_pth or env_switch(ENV_TRUST_PTH),
                        on_bytes=progress.add, on_grow=progress.grow)
        hashed = hf_verify.unhashed(files)
        spec.grow(sum(f.stat().st_size for f in hashed))
        with fastload.clocked() as clock, readahead.ReadAhead(
                files, hashed, consumed=lambda: max(clock.read_bytes, progress.loaded),
                on_hash_bytes=lambda n: spec.read(n, "hash"), enabled=readahead.setting()) as ahead:
            pipe = layout_named(model_set.layout).build(model_set, spec)
            try:
                ahead.finish()
            except BaseException:
                free_weights(pipe)
                raise
        loaded = LoadedPipeline(key=key, model_set=model_set, pipe=pipe, dtype=dtype, device=device,
                                offload=offload, load_seconds=time.perf_counter() - start,
                                placement=placement or DevicePlacement())
        placing = time.perf_counter()
        try:
            loaded.placement.attach(loaded)
        except BaseException:
            loaded.placement.forget()
            raise
        done = time.perf_counter()
        loaded.load_split = {"hash": round(ahead.hash_seconds, 6), "read": round(clock.read_s, 6),
                             "convert": round(clock.convert_s, 6), "to_device": round(done - placing, 6),
                             "read_bytes": clock.read_bytes, "seconds": round(done - start, 6)}
        _resident = loaded
        log.info("loaded model set %s (%s, %s, offload=%s) in %.1f s", model_set.name,
                 model_set.layout, precision, offload, _resident.load_seconds)
        return _resident


def release(wait: bool = True) -> bool:
    """Drop the resident pipeline and free its memory; True if one was released.

    Takes the resident lock and the pipeline's lock, so it never pulls the weights from under a
    running prompt. ``wait=False``: give up (False) instead of waiting when a load or a prompt
    holds a lock.
    """
    global _resident
    if not _resident_lock.acquire(blocking=wait):
        return False
    try:
        loaded = _resident
        if loaded is None:
            return False
        if not loaded.lock.acquire(blocking=wait):
            return False
        try:
            log.info("releasing model set %s", loaded.model_set.name)
            loaded.placement.forget()
            free_weights(loaded.pipe)
        finally:
            _resident = None
            loaded.lock.release()
    finally:
        _resident_lock.release()
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


PIPE_MODULES = ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae")


def free_weights(pipe) -> None:
    """Offload hooks off and every component's tensors to ``meta``, so whatever still references
    a module (a traceback kept by the caller, a compiled graph, another node's hook) no longer
    holds its VRAM or RAM. Group offloading's hooks keep their own CPU copies: they go too."""
    remove = getattr(pipe, "remove_all_hooks", None)
    if callable(remove):
        try:
            remove()
        except Exception:   # noqa: BLE001 - best effort: the meta move below frees the weights anyway
            log.debug("remove_all_hooks failed", exc_info=True)
    for name in PIPE_MODULES:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for sub in module.modules():
            registry = getattr(sub, "_diffusers_hook", None)
            for hook in list(getattr(registry, "hooks", {})):
                try:
                    registry.remove_hook(hook, recurse=False)
                except Exception:   # noqa: BLE001 - a hook that cannot undo itself still lets go below
                    log.debug("could not remove hook %s", hook, exc_info=True)
        try:
            module.to("meta")
        except (AssertionError, RuntimeError, TypeError):   # e.g. GGUF's quantised parameters
            _drop_tensors(module)


def _drop_tensors(module: torch.nn.Module) -> None:
    """Replace every parameter and buffer with an empty meta tensor (the module is being let go)."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(torch.empty(0, device="meta"), requires_grad=False)
        for name, buf in list(sub._buffers.items()):
            if buf is not None:
                sub._buffers[name] = torch.empty(0, device="meta")


def resident() -> LoadedPipeline | None:
    return _resident


def build_diffusers(model_set: ModelSet, dtype: torch.dtype, load_spec: LoadSpec | None = None):
    """Diffusers layout through ``from_pretrained`` (the reference the fast reader is held to),
    one component at a time so progress can be reported in bytes.

    The DiT and text encoder load in ``dtype``; the VAE and image encoder stay fp32 as Wan
    expects (they are small and lose quality in half precision).
    """
    import importlib

    from diffusers import WanImageToVideoPipeline

    index = json.loads((model_set.root / "model_index.json").read_text())
    parts = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library, class_name = spec
        if library is None:
            parts[name] = None
            continue
        cls = getattr(importlib.import_module(library), class_name)
        kwargs = {"local_files_only": True}
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            kwargs.update(compat.dtype_kwargs(cls, dtype if name in HALF_COMPONENTS else torch.float32))
        parts[name] = cls.from_pretrained(str(model_set.root / name), **kwargs)
        if load_spec is not None:
            load_spec.loaded(files_under(model_set.root / name), name)
    return WanImageToVideoPipeline(**parts)


HALF_COMPONENTS = ("transformer", "transformer_2", "text_encoder")


@dataclass
class _LoadProgress:
    total: int
    callback: Callable[[int, int], None] | None
    done: int = 0
    loaded: int = 0         # bytes of the components built so far (the read-ahead's window)

    def add(self, nbytes: int, what: str) -> None:
        self.done = min(self.total, self.done + nbytes)
        if what != "hash":
            self.loaded += nbytes
        log.debug("loaded %s (%d bytes)", what, nbytes)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def grow(self, nbytes: int) -> None:
        """Extra reads not in the set's size (a .pth hashed once) count on the bar too."""
        self.total += nbytes


def stream_transformer(transformer, device: torch.device, resident_blocks: int = 0,
                       kept_on: torch.device | None = None) -> None:
    """The DiT streamed block by block from RAM (diffusers group offload with CUDA streams), its
    first ``resident_blocks`` blocks kept on ``device`` (the memory plan's count: the room beside
    the two blocks in flight), or parked on ``kept_on`` until ``bring_kept_blocks`` (Wan2.2's
    second expert); the other components are placed by the caller. On the CPU it simply stays
    there."""
    if device.type == "cpu":
        transformer.to(device)
        return
    transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                     offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    keep_blocks(transformer, kept_on or device, resident_blocks)


def keep_blocks(transformer, device: torch.device, count: int) -> int:
    """Take the first ``count`` DiT blocks out of group offloading and put them on ``device``
    (the prefetch chain is built on the first forward from the blocks that still have hooks)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    kept = 0
    for block in list(transformer.blocks)[:max(0, count)]:
        HookRegistry.check_if_exists_or_initialize(block).remove_hook(_GROUP_OFFLOADING, recurse=True)
        block.to(device)
        block.wan_kept = True        # kept_blocks() finds it
        kept += 1
    if kept:
        log.info("DiT: %d of %d blocks kept on %s, the rest streamed", kept, len(transformer.blocks), device)
    return kept


def kept_blocks(transformer) -> list[torch.nn.Module]:
    """The blocks ``keep_blocks`` took out of streaming (they stay wherever they are put)."""
    return [b for b in getattr(transformer, "blocks", ()) if getattr(b, "wan_kept", False)]


def bring_kept_blocks(pipe, expert: str, device: torch.device, move=None) -> int:
    """Wan2.2 streamed block by block: each expert keeps the plan's resident blocks out of
    streaming, but the plan counts them once (the running expert's), so entering an expert's
    phase sends the other expert's kept blocks to RAM first and brings this one's to ``device``.
    ``move(module, device)`` defaults to ``module.to``. Returns the blocks brought."""
    move = move or (lambda module, where: module.to(where))
    other = "transformer_2" if expert == "transformer" else "transformer"
    for block in kept_blocks(getattr(pipe, other, None)):
        move(block, torch.device("cpu"))
    mine = kept_blocks(getattr(pipe, expert, None))
    for block in mine:
        move(block, device)
    return len(mine)


def place_on_device(pipe, device: torch.device, offload: str) -> None:
    """Everything on ``device``, or diffusers' model/sequential CPU offload hooks."""
    if device.type == "cpu":
        if offload != "none":
            log.warning("offload=%s needs a GPU; running on the CPU without offload", offload)
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "block":
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=True)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
