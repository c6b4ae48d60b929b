"""The real sizes of a set's parts, counted from file headers or from the shipped 14B configs.

What a component costs in memory depends on the precision it is loaded in, not on the file's
dtype, so the count is kept in parameters by kind (``DitCount``/``Count``) and turned into bytes
for a precision by ``SetSizes.weights``. The umT5 embedding that ``shared`` and
``encoder.embed_tokens`` share is counted once. A ``.gguf`` DiT stays quantised: its file size is
its weight bytes. Header reading imports no torch (the CLI's ``plan`` stays fast); only the
built-in 14B reference builds modules, on the ``meta`` device (no weights).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import WanVolumeError
from ..store import stfile
from ..store.modelset import ModelSet, files_under

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
REFERENCES = {"wan2.1-i2v-14b-720p": "Wan2.1-I2V-14B (720P), real shapes from the shipped configs",
              "wan2.1-i2v-14b-480p": "Wan2.1-I2V-14B (480P), same weights as 720P",
              "wan2.1-i2v-14b-720p-fp8-scaled": "Wan2.1-I2V-14B (720P) as Comfy-Org's fp8_scaled DiT file "
                                                "(its Linears in fp8 with a scale each)",
              "wan2.2-i2v-a14b": "Wan2.2-I2V-A14B: two 14B experts (no CLIP branch), umT5, Wan2.1 VAE",
              "wan2.2-i2v-a14b-fp8-scaled": "Wan2.2-I2V-A14B as Comfy-Org's fp8_scaled expert files"}
WAN22 = ("wan2.2-i2v-a14b", "wan2.2-i2v-a14b-fp8-scaled")
BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
# diffusers keeps these DiT parts in fp32 when loading in 16 bits (WanTransformer3DModel's
# _keep_in_fp32_modules; Wan's own names for the same parts beside them)
DIT_FP32 = {"time_embedder", "time_embedding", "scale_shift_table", "modulation", "norm1", "norm2", "norm3"}
TIED = ("shared.weight", "encoder.embed_tokens.weight")
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}
# The 720P set with its DiT as a GGUF file quantised to one type (city96's tensor choice): the
# type and the file's tensor bytes (wan_engine/simulate/gguf_fake.py counts them from the real
# shapes; tests/test_simulate_gguf.py holds them equal). A real Q4_K_M keeps some Linears in
# higher types: its file is larger than the uniform Q4_K here (a set on the volume is priced by
# its file's size).
GGUF_REFERENCES = {"wan2.1-i2v-14b-720p-q8_0": ("Q8_0", 17_438_039_296),
                   "wan2.1-i2v-14b-720p-q4_k": ("Q4_K", 9_243_745_536)}
REFERENCES.update({name: f"Wan2.1-I2V-14B (720P), the DiT a GGUF file, every quantised tensor {q}"
                   for name, (q, _) in GGUF_REFERENCES.items()})


@dataclass
class DitCount:
    """The DiT's parameters by how they are stored: ``linear`` may go to fp8, ``fp32`` stays fp32
    in 16-bit loads, ``other`` follows the precision. ``in_blocks`` of them sit in the blocks."""

    linear: int = 0
    fp32: int = 0
    other: int = 0
    in_blocks: int = 0
    blocks: int = 0
    largest: int = 0            # parameters of the largest tensor (what sequential offload streams)
    hidden: int = 0
    gguf_bytes: int = 0         # quantised file: its size, weights stay quantised

    @property
    def params(self) -> int:
        return self.linear + self.fp32 + self.other


@dataclass
class SetSizes:
    """Parameter counts of the four parts; ``weights(precision, fp8)`` prices them."""

    name: str
    dit: DitCount
    text_encoder: int = 0
    text_encoder_fp32_in_fp16: int = 0     # transformers keeps umT5's `wo` in fp32 for fp16
    image_encoder: int = 0
    vae: int = 0
    notes: list[str] = field(default_factory=list)
    dit_2: DitCount | None = None          # Wan2.2: the low-noise expert (``dit`` is the high one)
    dit_gguf: str = ""                     # a GGUF DiT: the GGML type most of its Linears are in
    fp8_files: bool = False                # every DiT file stores its Linears in fp8 (fp8 storage is exact)

    def weights(self, precision: str, fp8: bool = False) -> "Weights":
        """Bytes at ``precision``; for Wan2.2 the DiT is the larger expert (one runs per sampling
        phase) and ``expert_2`` the other one."""
        experts = sorted((_dit_bytes(d, precision, fp8) for d in (self.dit, self.dit_2) if d is not None),
                         key=lambda e: e[0], reverse=True)
        (dit_bytes, dit_dtype, block), d = experts[0], self.dit
        half = BYTES[precision]
        te_fp32 = self.text_encoder_fp32_in_fp16 if precision == "fp16" else 0
        return Weights(
            transformer=dit_bytes, transformer_dtype=dit_dtype, blocks=d.blocks, block_bytes=block,
            largest_bytes=d.largest * (4 if d.gguf_bytes else max(half, 4 if precision != "fp32" else half)),
            hidden=d.hidden or 5120,
            text_encoder=(self.text_encoder - te_fp32) * half + te_fp32 * 4, text_encoder_dtype=precision,
            image_encoder=self.image_encoder * 4, vae=self.vae * 4,
            expert_2=experts[1][0] if len(experts) > 1 else 0)


def _dit_bytes(d: DitCount, precision: str, fp8: bool) -> tuple[int, str, int]:
    """(bytes, dtype, bytes per block) of one DiT at ``precision`` (its Linears in fp8 with ``fp8``)."""
    half = BYTES[precision]
    keep = 4 if precision != "fp32" else half
    if d.gguf_bytes:
        # diffusers' GGUF quantizer dequantises the parts kept in fp32 (the time embedder) into
        # fp32 while loading: ~0.08 GiB over their quantised bytes (simulated: 0.08-0.09 GiB)
        kept = d.fp32 * 4 - d.fp32 * d.gguf_bytes // max(1, d.params)
        return (d.gguf_bytes + max(0, kept), "gguf",
                d.gguf_bytes * d.in_blocks // max(1, d.params) // max(1, d.blocks))
    lin = 1 if fp8 else half
    block = (d.linear * lin + (d.in_blocks - d.linear) * half) // max(1, d.blocks)
    return d.linear * lin + d.fp32 * keep + d.other * half, "fp8" if fp8 else precision, block


@dataclass(frozen=True)
class Weights:
    """Bytes in memory of each part at one precision (what the plan places)."""

    transformer: int
    transformer_dtype: str
    blocks: int
    block_bytes: int
    largest_bytes: int
    hidden: int
    text_encoder: int
    text_encoder_dtype: str
    image_encoder: int
    vae: int
    expert_2: int = 0          # Wan2.2: the second expert's bytes (0: one DiT)

    @property
    def dit_outside_blocks(self) -> int:
        return max(0, self.transformer - self.blocks * self.block_bytes)


def count_dit(tensors: Iterable[tuple[str, tuple[int, ...]]]) -> DitCount:
    c = DitCount()
    blocks = set()
    for name, shape in tensors:
        n = _numel(shape)
        m = BLOCK.search(name)
        if m:
            blocks.add(int(m.group(1)))
            c.in_blocks += n
        parts = set(name.split(".")[:-1])
        if m and len(shape) >= 2 and name.endswith(".weight"):
            c.linear += n
        elif parts & DIT_FP32:
            c.fp32 += n
        else:
            c.other += n
        c.largest = max(c.largest, n)
        if not c.hidden and name.endswith(("self_attn.q.weight", "attn1.to_q.weight")):
            c.hidden = shape[0]
    c.blocks = len(blocks)
    return c


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _count(tensors: Iterable[tuple[str, tuple[int, ...]]], tied: bool = False) -> tuple[int, int]:
    """(all parameters, those named ``wo``), the tied umT5 embedding once."""
    seen, total, wo = set(), 0, 0
    for name, shape in tensors:
        if tied and name in TIED:
            if seen & set(TIED):
                continue
            seen.add(name)
        n = _numel(shape)
        total += n
        wo += n if "wo" in name.split(".") else 0
    return total, wo


# -- from the files of a set -------------------------------------------------------------------
def _safetensors(path: Path) -> list[Path]:
    return [f for f in stfile.weight_files(path) if f.suffix == ".safetensors" and f.is_file()]


def _header_tensors(paths: list[Path]) -> list[tuple[str, tuple[int, ...]]]:
    skip = ("scale_weight", "scale_input", "spiece_model")
    return [(n, t.shape) for p in paths for n, t in stfile.read_header(p).tensors.items()
            if not n.endswith(skip) and t.dtype not in ("U8", "I8", "BOOL")]


def from_model_set(model_set: ModelSet) -> SetSizes:
    """Counts from the headers of ``model_set``'s files (nothing is read beyond the headers)."""
    sizes = SetSizes(model_set.name, DitCount())
    dits = [model_set.components[c] for c in ("transformer", "transformer_2") if c in model_set.components]
    sizes.fp8_files = bool(dits) and all(_is_fp8(_safetensors(p)) for p in dits)
    for comp in ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae"):
        path = model_set.components.get(comp)
        if path is None:
            continue
        files = _safetensors(path)
        tensors = _header_tensors(files) if files else []
        if not files and comp == "transformer_2":      # a .gguf or .pth low-noise expert
            other = SetSizes(model_set.name, DitCount())
            _from_other_file(other, "transformer", files_under(path))
            sizes.dit_2 = other.dit
            sizes.notes += [n.replace("transformer:", "transformer_2:", 1) for n in other.notes]
            continue
        if not files:
            _from_other_file(sizes, comp, files_under(path))
            continue
        if comp == "transformer":
            sizes.dit = count_dit(tensors)
        elif comp == "transformer_2":
            sizes.dit_2 = count_dit(tensors)
        elif comp == "text_encoder":
            sizes.text_encoder, sizes.text_encoder_fp32_in_fp16 = _count(tensors, tied=True)
        else:
            setattr(sizes, comp, _count(tensors)[0])
    return sizes


def _is_fp8(paths: list[Path]) -> bool:
    return bool(paths) and any(t.dtype.startswith("F8") for p in paths for t in stfile.read_header(p).tensors.values())


def gguf_count(nbytes: int) -> DitCount:
    """A GGUF DiT of ``nbytes``: the 14B shapes, its weights priced by the file's size."""
    ref = reference("wan2.1-i2v-14b-720p").dit
    return DitCount(fp32=ref.fp32, other=ref.params - ref.fp32, in_blocks=ref.in_blocks, blocks=ref.blocks,
                    largest=ref.largest, hidden=ref.hidden, gguf_bytes=nbytes)


def _gguf_type(files: list[Path]) -> str:
    """The quantised GGML type most tensors of ``files`` are stored in ("" if unreadable)."""
    from ..store import identify

    kinds: dict[str, int] = {}
    for f in files:
        try:
            types = identify.gguf_tensors(f)[1]
        except Exception:          # a damaged file: the plan prices its size, nothing to simulate
            return ""
        for t in types.values():
            if t not in ("F32", "F16", "BF16"):
                kinds[t] = kinds.get(t, 0) + 1
    return max(kinds, key=kinds.get) if kinds else ""


def _from_other_file(sizes: SetSizes, comp: str, files: list[Path]) -> None:
    """A .gguf DiT keeps its quantised size; a .pth is priced as 16-bit parameters (its size / 2)."""
    weights = [f for f in files if f.suffix in (".gguf", ".pth", ".bin", ".pt")]
    nbytes = sum(f.stat().st_size for f in weights)
    if comp == "transformer" and any(f.suffix == ".gguf" for f in weights):
        sizes.dit, sizes.dit_gguf = gguf_count(nbytes), _gguf_type([f for f in weights if f.suffix == ".gguf"])
        return
    params = nbytes // 2
    ref_set = reference("wan2.1-i2v-14b-720p")
    real = ref_set.dit.params if comp == "transformer" else getattr(ref_set, comp)
    if params >= real // 2:
        # a full-size .pth: Wan's parts have one architecture; its CLIP file also holds the text
        # tower the pipeline never loads, so the reference count is the honest one
        params = real
    sizes.notes.append(f"{comp}: no safetensors header; {params / 1e9:.2f} B parameters assumed "
                       "(file size as 16-bit, or the 14B reference for a full-size file)")
    if comp == "transformer":
        ref = ref_set.dit
        scale = params / max(1, ref.params)
        sizes.dit = DitCount(linear=int(ref.linear * scale), fp32=int(ref.fp32 * scale),
                             other=int(ref.other * scale), in_blocks=int(ref.in_blocks * scale),
                             blocks=ref.blocks, largest=int(ref.largest * scale), hidden=ref.hidden)
    elif comp == "text_encoder":
        sizes.text_encoder = params
    else:
        setattr(sizes, comp, params)


# -- the built-in 14B reference ----------------------------------------------------------------
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_encoder_decoder=False,
                tie_word_embeddings=False)
CLIP_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                  image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)
_references: dict[str, SetSizes] = {}


REFERENCE_COUNTS = CONFIGS / "reference_counts_i2v_14b.json"
REFERENCE_COUNTS_A14B = CONFIGS / "reference_counts_i2v_a14b.json"    # Wan2.2: both experts


def reference(name: str) -> SetSizes:
    """The real Wan2.1-I2V-14B counts, as ``build_reference`` counts them (stored in
    ``REFERENCE_COUNTS``, so ``plan`` imports no torch; tests/test_cli_plan.py holds them equal)."""
    if name not in REFERENCES:
        raise WanVolumeError("not a built-in reference set", field="--set", value=name,
                             fix=f"use one of {', '.join(REFERENCES)} or a model set on the volume")
    if name in GGUF_REFERENCES and name not in _references:
        base, (qtype, nbytes) = reference("wan2.1-i2v-14b-720p"), GGUF_REFERENCES[name]
        _references[name] = SetSizes(name, gguf_count(nbytes), base.text_encoder, base.text_encoder_fp32_in_fp16,
                                     base.image_encoder, base.vae, dit_gguf=qtype)
    if name not in _references:
        data = json.loads(_counts_file(name).read_text(encoding="utf-8"))
        dit_2 = data.pop("dit_2", None)
        _references[name] = SetSizes(name, DitCount(**data.pop("dit")), **data,
                                     dit_2=DitCount(**dit_2) if dit_2 else None,
                                     fp8_files=name.endswith("-fp8-scaled"))
    return _references[name]


def _counts_file(name: str) -> Path:
    return REFERENCE_COUNTS_A14B if name in WAN22 else REFERENCE_COUNTS


def reference_counts(counted: SetSizes) -> dict:
    """What ``REFERENCE_COUNTS`` holds: the counts of a built reference, without its name."""
    return {"dit": asdict(counted.dit), "text_encoder": counted.text_encoder,
            "text_encoder_fp32_in_fp16": counted.text_encoder_fp32_in_fp16,
            "image_encoder": counted.image_encoder, "vae": counted.vae,
            **({"dit_2": asdict(counted.dit_2)} if counted.dit_2 is not None else {})}


def config(file: str) -> dict:
    """A shipped config (configs/), without its ``_`` comment keys."""
    return {k: v for k, v in json.loads((CONFIGS / file).read_text()).items() if not k.startswith("_")}


def dit_config(experts: bool = False) -> dict:
    """Wan2.1-I2V-14B's DiT config; Wan2.2's experts are the same without the CLIP branch (no
    ``image_dim``/``added_kv_proj_dim``; the set has no image encoder)."""
    cfg = config("transformer_i2v_14b.json")
    return {k: v for k, v in cfg.items() if k not in ("image_dim", "added_kv_proj_dim")} if experts else cfg


def build_reference(name: str) -> SetSizes:
    """Each module built on ``meta`` from the shipped configs (torch, diffusers, transformers)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        dit = WanTransformer3DModel(**dit_config(experts=name in WAN22))
        te = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        te.encoder.embed_tokens = te.shared        # as build.build_text_encoder ties them
        ie = CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H))
        vae = AutoencoderKLWan(**config("vae_wan21.json"))

    def shapes(module) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, tuple(t.shape)) for n, t in module.state_dict().items()]   # as files hold them

    te_total, te_wo = _count(shapes(te), tied=True)
    if name in WAN22:
        return SetSizes(name, count_dit(shapes(dit)), te_total, te_wo, 0, _count(shapes(vae))[0],
                        dit_2=count_dit(shapes(dit)))
    return SetSizes(name, count_dit(shapes(dit)), te_total, te_wo, _count(shapes(ie))[0],
                    _count(shapes(vae))[0])
