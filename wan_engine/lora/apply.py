"""Apply LoRAs to the resident pipeline: peft adapters for low-rank layers, patches for the rest.

A LoRA file is read once per version (path, size, mtime, inode) and loaded once into the
resident pipeline: its low-rank pairs on Linear layers as a named peft adapter, everything else
(full ``.diff``/``.diff_b`` deltas, DoRA, low-rank pairs on non-Linear layers) as weight patches
(lora_patches.py). Strength is the adapter weight and the patch factor: changing it calls
``set_adapters`` and recomputes the patched weights, and reads nothing. Only adapters with a
non-zero strength are active; with none, peft is switched off, so no adapter code runs and the
output equals the base model's exactly. A file replaced on disk gets a new adapter.
"""
from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import rules
from ..store import stfile
from ..load.assemble import LoadedPipeline
from ..errors import LoraMismatch, WanVolumeError
from .formats import LoraReport, split_lora
from .patches import WeightPatcher

log = logging.getLogger(__name__)

STRENGTH_MIN, STRENGTH_MAX = -2.0, 2.0
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

_file_cache: dict[tuple, dict[str, torch.Tensor]] = {}
read_count = 0   # LoRA files read from disk in this process (for tests)


@dataclass(frozen=True)
class LoraUse:
    """One LoRA in a chain: the file, its strength, and whether to fuse it for the run."""

    path: str
    strength: float
    fuse: bool = False


@dataclass
class _State:
    """What is applied to one resident pipeline."""

    patcher: WeightPatcher
    peft: set[str] = field(default_factory=set)      # adapters with a peft part
    key: tuple | None = None                         # (active weights, fused) applied now
    fused: bool = False


def check_strength(strength: float) -> None:
    rules.number("strength", strength, lo=STRENGTH_MIN, hi=STRENGTH_MAX, example=1.0,
                 context=" (1.0 is the LoRA card's setting, 0 switches it off)")


def _version(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def adapter_name(path: str | Path) -> str:
    """A peft-safe adapter name for this version of the file (a replaced file gets a new one)."""
    p = Path(path)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", p.stem)[:40]
    return f"{stem}_{hashlib.sha1(repr(_version(p)).encode()).hexdigest()[:8]}"


def read_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors, read once per version; an incomplete file is a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    global read_count
    p = Path(path)
    key = _version(p)
    if key not in _file_cache:
        problem = stfile.truncation_problem(p)
        if problem:
            raise _damaged(p, problem)
        try:
            tensors = load_file(str(p), device="cpu")
        except SafetensorError as exc:
            raise _damaged(p, str(exc)) from exc
        _file_cache.clear()   # keep one file's tensors; adapters hold their own copy
        _file_cache[key] = tensors
        read_count += 1
    return _file_cache[key]


def _damaged(path: Path, problem: str) -> WanVolumeError:
    return WanVolumeError(
        f"the LoRA file {path} cannot be read: {problem}", field="lora", value=path.name,
        fix=f"download {path.name} again (an interrupted copy leaves a truncated file), e.g. "
            "`python wanvolume.py preload --profile <profile>` for a profile's LoRA")


def _state(loaded: LoadedPipeline) -> _State:
    state = getattr(loaded.pipe, "_wanvolume_lora", None)
    if state is None:
        state = _State(WeightPatcher(loaded.pipe.transformer))
        loaded.pipe._wanvolume_lora = state
    return state


def ensure_adapter(loaded: LoadedPipeline, path: str | Path) -> str:
    """Load this version of the file into the resident pipeline once; return its adapter name.

    Any common Wan LoRA format is normalised first (lora_formats.py); the match report is kept
    in ``loaded.lora_reports[name]`` (see ``report_for``). No match at all is an error naming
    what the file looks like it was made for; a partial match is a warning with counts.
    """
    name = adapter_name(path)
    with loaded.lock:
        if name in loaded.loaded_loras:
            return name
        state = _state(loaded)
        parsed = split_lora(read_lora_file(path), loaded.pipe.transformer, str(path))
        report = parsed.report
        if report.matched == 0:
            raise _no_match(path, report)
        _unfuse(loaded, state)
        _forget_replaced(loaded, state, path)
        if parsed.peft:
            _load_peft(loaded, parsed.peft, name, report, path)
            state.peft.add(name)
        state.patcher.add(name, parsed.patches)
        state.key = None    # load_lora_weights activated the new adapter: re-apply on activate
        _apply(loaded, state, dict(state.patcher.applied), fuse=False)
        if report.status == "partial":
            log.warning("LoRA %s matches the model only partly: %s", Path(path).name, report.summary())
        loaded.loaded_loras[name] = str(path)
        loaded.lora_reports[name] = report
        log.info("loaded LoRA %s as adapter %s: %s", Path(path).name, name, report.summary())
        return name


def _load_peft(loaded: LoadedPipeline, weights: dict, name: str, report: LoraReport, path) -> None:
    transformer = loaded.pipe.transformer
    loaded.pipe.load_lora_weights(weights, adapter_name=name)
    applied = _lora_layer_count(transformer, name)
    expected = sum(1 for k in weights if k.endswith(".lora_A.weight"))
    if applied != expected:
        log.warning("LoRA %s: expected %d adapted layers, peft created %d", Path(path).name,
                    expected, applied)
    _lora_layers_to(transformer, name, loaded.dtype, weights)


def _lora_layers_to(transformer: torch.nn.Module, name: str, dtype: torch.dtype,
                    weights: dict[str, torch.Tensor]) -> None:
    """peft makes LoRA layers in the base layer's dtype and loads them there: with fp8 storage
    that rounds the LoRA to fp8 (and fp8 matmuls do not exist on CPU). Such layers get the
    compute dtype and their weights again from the file's values."""
    for mod_name, module in transformer.named_modules():
        owner, _, adapter = mod_name.rpartition(".")
        if adapter != name or not owner.endswith((".lora_A", ".lora_B")):
            continue
        if any(p.dtype in FP8 for p in module.parameters()):
            module.to(dtype=dtype)
            module.weight.data = weights[f"transformer.{owner}.weight"].to(module.weight.device, dtype)


def _forget_replaced(loaded: LoadedPipeline, state: _State, path) -> None:
    """Drop the adapters of earlier versions of this file (it was replaced on disk)."""
    old = [n for n, p in loaded.loaded_loras.items() if p == str(path)]
    for name in old:
        log.info("LoRA %s changed on disk: unloading its old version %s", Path(path).name, name)
        if name in state.peft:
            loaded.pipe.delete_adapters(name)
            state.peft.discard(name)
        state.patcher.remove(name)
        loaded.loaded_loras.pop(name)
        loaded.lora_reports.pop(name, None)
    if old:
        state.key = None


def report_for(loaded: LoadedPipeline, path: str | Path) -> LoraReport | None:
    """The match report of a LoRA loaded into ``loaded`` (None if not loaded yet)."""
    return loaded.lora_reports.get(adapter_name(path))


def _no_match(path: str | Path, report: LoraReport) -> LoraMismatch:
    examples = "; ".join(report.unmatched_examples[:3]) or "no LoRA weights found"
    return LoraMismatch(
        f"no key of this LoRA matches a layer of the Wan2.1 I2V 14B transformer; it looks made for "
        f"{report.looks_like} (format {report.format}; e.g. {examples})",
        field="lora", value=Path(path).name,
        fix="use a LoRA trained for Wan2.1 I2V/T2V 14B; check its key names with "
            "`python -c \"from safetensors import safe_open; "
            "print(list(safe_open('FILE','pt').keys())[:5])\"`")


def activate(loaded: LoadedPipeline, uses: tuple[LoraUse, ...], fuse: bool | None = None) -> None:
    """Apply exactly ``uses``; every other loaded adapter is switched off.

    Fusing (``fuse=True``, or any use with ``fuse`` set) merges the active adapters into the
    base weights for the run: faster steps, same output within float rounding. It is undone
    before strengths change, so nothing is reloaded. With fp8 storage it is skipped (fusing
    would round the LoRA to fp8) and the adapters run unfused.
    """
    with loaded.lock:
        weights: dict[str, float] = {}
        for use in uses:
            name = ensure_adapter(loaded, use.path)
            weights[name] = weights.get(name, 0.0) + use.strength
        if fuse is None:
            fuse = any(use.fuse for use in uses)
        _apply(loaded, _state(loaded), weights, fuse)


def _apply(loaded: LoadedPipeline, state: _State, weights: dict[str, float], fuse: bool) -> None:
    active = {n: w for n, w in weights.items() if w != 0.0}
    if fuse and fp8_stored(loaded.pipe.transformer):
        log.warning("fuse_lora: skipped, the DiT is stored in fp8 (the LoRA runs unfused)")
        fuse = False
    if fuse and gguf_stored(loaded.pipe.transformer):
        log.warning("fuse_lora: skipped, the DiT is a GGUF file whose weights stay quantised "
                    "(the LoRA runs unfused, over the dequantised weights)")
        fuse = False
    key = (tuple(sorted(active.items())), fuse)
    if state.key == key:
        return
    was_fused = _unfuse(loaded, state)
    peft_active = {n: w for n, w in active.items() if n in state.peft}
    if peft_active:
        loaded.pipe.enable_lora()
        loaded.pipe.set_adapters(list(peft_active), adapter_weights=list(peft_active.values()))
    elif state.peft:
        loaded.pipe.disable_lora()
    if state.patcher.changes(active, force=was_fused):
        with _offload_paused(loaded):
            state.patcher.apply(active, force=was_fused)
    if fuse and peft_active:
        loaded.pipe.fuse_lora(components=["transformer"], lora_scale=1.0,
                              adapter_names=list(peft_active))
        state.fused = True
    state.key = key


@contextmanager
def _offload_paused(loaded: LoadedPipeline):
    """Weights held by accelerate's offload hooks (``sequential`` offload keeps them off the
    module) are put back while patches are written, as diffusers does for ``load_lora_weights``."""
    from diffusers.loaders.lora_base import _func_optionally_disable_offloading

    model, sequential, _ = _func_optionally_disable_offloading(loaded.pipe)
    try:
        yield
    finally:
        if sequential:
            loaded.pipe.enable_sequential_cpu_offload(device=loaded.device)
        elif model:
            loaded.pipe.enable_model_cpu_offload(device=loaded.device)


def _unfuse(loaded: LoadedPipeline, state: _State) -> bool:
    if not state.fused:
        return False
    loaded.pipe.unfuse_lora(components=["transformer"])
    state.fused = False
    state.key = None
    return True


def gguf_stored(module: torch.nn.Module) -> bool:
    return any(getattr(p, "quant_type", None) is not None for p in module.parameters())


def fp8_stored(module: torch.nn.Module) -> bool:
    return any(p.dtype in FP8 for p in module.parameters())


def _lora_layer_count(module: torch.nn.Module, adapter: str) -> int:
    return sum(1 for name, _ in module.named_modules() if name.endswith(f"lora_A.{adapter}"))
