"""Apply LoRAs to the resident pipeline: peft adapters for low-rank layers, patches for the rest.

A LoRA file is read once per version (path, size, mtime, inode) and loaded once into the
resident pipeline: its low-rank pairs on Linear layers as a named peft adapter, everything else
(full ``.diff``/``.diff_b`` deltas, DoRA, low-rank pairs on non-Linear layers) as weight patches
(patches.py). Strength is the adapter weight and the patch factor: changing it calls
``set_adapters`` and recomputes the patched weights, and reads nothing. Only adapters with a
non-zero strength are active; with none, peft is switched off, so no adapter code runs and the
output equals the base model's exactly. A file replaced on disk gets a new adapter. What is
loaded and applied is kept in one ``LoraState`` (state.py) on ``LoadedPipeline.lora``.
"""
from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import rules
from ..store import hf_verify, stfile
from ..load.assemble import LoadedPipeline
from ..load.fp8 import FP8_DTYPES
from ..errors import LoraMismatch, WanVolumeError
from .formats import LoraReport, split_lora
from .state import LoraState, state_of

log = logging.getLogger(__name__)

STRENGTH_MIN, STRENGTH_MAX = -2.0, 2.0

_file_cache: dict[tuple, dict[str, torch.Tensor]] = {}


@dataclass(frozen=True)
class LoraUse:
    """One LoRA in a chain: the file, its strength, and whether to fuse it for the run."""

    path: str
    strength: float
    fuse: bool = False
    expert: str = "both"     # Wan2.2 sets: "both", "high" or "low" (lora/experts.py); Wan2.1: "both"


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

    p = Path(path)
    key = _version(p)
    if key not in _file_cache:
        problem = stfile.truncation_problem(p)
        if problem:
            raise _damaged(p, problem)
        hf_verify.check_file(p)      # in a Hugging Face cache: hashed once against its blob name
        try:
            tensors = load_file(str(p), device="cpu")
        except SafetensorError as exc:
            raise _damaged(p, str(exc)) from exc
        bad = next((k for k, t in tensors.items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:     # applied, it would turn every frame into NaN: refuse before patching
            raise _damaged(p, f"its tensor {bad} holds NaN or infinite values")
        _file_cache.clear()   # keep one file's tensors; adapters hold their own copy
        _file_cache[key] = tensors
    return _file_cache[key]


def _damaged(path: Path, problem: str) -> WanVolumeError:
    return WanVolumeError(
        f"the LoRA file {path} cannot be read: {problem}", field="lora", value=path.name,
        fix=f"download {path.name} again (an interrupted copy leaves a truncated file), e.g. "
            "`python wanvolume.py preload --profile <profile>` for a profile's LoRA")


def ensure_adapter(loaded: LoadedPipeline, path: str | Path) -> str:
    """Load this version of the file into the resident pipeline once; return its adapter name.

    Any common Wan LoRA format is normalised first (formats.py); the match report is kept in
    the pipeline's LoRA state (see ``report_for``). No match at all is an error naming what the
    file looks like it was made for; a partial match is a warning with counts.
    """
    name = adapter_name(path)
    if getattr(loaded.pipe, "transformer_2", None) is not None:
        raise WanVolumeError(   # a two-expert pipeline takes LoRAs per expert (lora/experts.py)
            "a Wan2.2 set's LoRAs go to its experts, not to the pipeline", field="lora",
            value=Path(path).name, fix="report this as a bug (lora.experts handles Wan2.2 sets)")
    with loaded.lock:
        state = state_of(loaded)
        if name in state.files:
            return name
        parsed = split_lora(read_lora_file(path), loaded.pipe.transformer, str(path))
        report = parsed.report
        if report.matched == 0:
            raise _no_match(path, report)
        applied = state.key
        _forget_replaced(loaded, state, path)
        layers = _load_peft(loaded, parsed.peft, name, path) if parsed.peft else None
        state.add(name, str(path), report, parsed.patches, layers)
        # load_lora_weights activated the new adapter: apply again what was applied before
        weights, fuse = applied if applied else ((), False)
        _apply(loaded, state, {n: w for n, w in weights if n in state.files}, fuse)
        if report.status == "partial":
            log.warning("LoRA %s matches the model only partly: %s", Path(path).name, report.summary())
        log.info("loaded LoRA %s as adapter %s: %s", Path(path).name, name, report.summary())
        return name


def _load_peft(loaded: LoadedPipeline, weights: dict, name: str, path) -> set[str]:
    """Load the peft part; return the layers it adapts (diffusers' zero layers left out)."""
    transformer = loaded.pipe.transformer
    loaded.pipe.load_lora_weights(weights, adapter_name=name)
    expected = {k[len("transformer."):-len(".lora_A.weight")] for k in weights if k.endswith(".lora_A.weight")}
    created = _lora_layers(transformer, name)
    if expected - created:
        log.warning("LoRA %s: %d of %d layers got no peft adapter (e.g. %s)", Path(path).name,
                    len(expected - created), len(expected), sorted(expected - created)[0])
    _lora_layers_to(transformer, name, loaded.dtype, weights)
    return expected & created


def _lora_layers_to(transformer: torch.nn.Module, name: str, dtype: torch.dtype,
                    weights: dict[str, torch.Tensor]) -> None:
    """peft makes LoRA layers in the base layer's dtype and loads them there: with fp8 storage
    that rounds the LoRA to fp8 (and fp8 matmuls do not exist on CPU). Such layers get the
    compute dtype and their weights again from the file's values. Layers the file lacks are the
    zero ``add_k_proj``/``add_v_proj`` pairs diffusers adds for a T2V LoRA on the I2V model."""
    for mod_name, module in transformer.named_modules():
        owner, _, adapter = mod_name.rpartition(".")
        if adapter != name or not owner.endswith((".lora_A", ".lora_B")):
            continue
        if any(p.dtype in FP8_DTYPES for p in module.parameters()):
            module.to(dtype=dtype)
            value = weights.get(f"transformer.{owner}.weight")
            module.weight.data = (torch.zeros_like(module.weight) if value is None
                                  else value.to(module.weight.device, dtype))


def _forget_replaced(loaded: LoadedPipeline, state: LoraState, path) -> None:
    """Drop the adapters of earlier versions of this file (it was replaced on disk)."""
    for name in state.names_of(path):
        log.info("LoRA %s changed on disk: unloading its old version %s", Path(path).name, name)
        peft = name in state.peft
        with _offload_paused(loaded):
            state.forget(name)
        if peft:
            loaded.pipe.delete_adapters(name)


def report_for(loaded: LoadedPipeline, path: str | Path) -> LoraReport | None:
    """The match report of a LoRA loaded into ``loaded`` (None if not loaded yet)."""
    return state_of(loaded).reports.get(adapter_name(path))


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
    base weights for the run: faster steps, same output within float rounding. The weights it
    changes are backed up and restored exactly before strengths change (state.py), so nothing
    is reloaded and no rounding accumulates. With fp8 storage it is skipped (fusing would round
    the LoRA to fp8) and the adapters run unfused.
    """
    with loaded.lock:
        weights: dict[str, float] = {}
        for use in uses:
            name = ensure_adapter(loaded, use.path)
            weights[name] = weights.get(name, 0.0) + use.strength
        if fuse is None:
            fuse = any(use.fuse for use in uses)
        _apply(loaded, state_of(loaded), weights, fuse)


def _apply(loaded: LoadedPipeline, state: LoraState, weights: dict[str, float], fuse: bool) -> None:
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
    peft_active = {n: w for n, w in active.items() if n in state.peft}
    fused = fuse and bool(peft_active)
    strengths = state.strengths(active, fused)
    if fused or state.fused or state.patcher.changes(strengths):
        with _offload_paused(loaded):
            if fused:
                state.prepare_fuse(loaded.pipe.transformer, list(peft_active))
            state.patcher.apply(strengths)
            if not fused:
                state.drop_fuse()
    if peft_active and not fused:
        loaded.pipe.enable_lora()
        loaded.pipe.set_adapters(list(peft_active), adapter_weights=list(peft_active.values()))
    elif state.peft:
        loaded.pipe.disable_lora()   # no adapter code runs: none active, or merged into the weights
    state.fused = fused
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


def gguf_stored(module: torch.nn.Module) -> bool:
    return any(getattr(p, "quant_type", None) is not None for p in module.parameters())


def fp8_stored(module: torch.nn.Module) -> bool:
    return any(p.dtype in FP8_DTYPES for p in module.parameters())


def _lora_layers(module: torch.nn.Module, adapter: str) -> set[str]:
    """The layers that carry a peft pair of ``adapter``."""
    suffix = f".lora_A.{adapter}"
    return {name[: -len(suffix)] for name, _ in module.named_modules() if name.endswith(suffix)}
