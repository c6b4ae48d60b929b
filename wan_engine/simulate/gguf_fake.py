"""A GGUF DiT at full size from fake tensors, built by the loader's own GGUF path.

The checkpoint is what diffusers' ``load_gguf_checkpoint`` hands the loader for a city96 file,
on ``meta``: Wan key names, each quantised weight a ``GGUFParameter`` over its bytes (uint8, the
last dimension ``values / block x bytes per block``: Q8_0 34 bytes per 32 values, Q4_K 144 per
256), the other tensors plain F32/F16. ``gguf_dit.from_checkpoint`` runs on it what a ``.gguf``
load runs (``from_single_file`` with ``GGUFQuantizationConfig``: the key conversion,
``_replace_with_gguf_linear``, the quantizer's dequantising of ``time_embedder`` into fp32, the
dtype policy); then every tensor becomes a fake of its shape and dtype (``fake_weights``). On the
card the DiT's ``GGUFLinear.forward_native`` and diffusers' ``dequantize_gguf_tensor`` run
unchanged: each layer's weight dequantised by diffusers' own torch ops while it runs (beside the
quantised bytes, 4 bytes per value alive at once for Q8_0, 5.2 for Q4_K).

Which tensors are quantised follows city96's tools (as ``tests/layout_writers.gguf_dit`` writes
them): 2-D weights of more than 1,024 values except ``modulation``, in F16 where the block size
does not divide their rows; everything else F32. The quantisation is one type per file: a real
Q4_K_M keeps some Linears in higher types (Q5_K/Q6_K), so its file (and memory) is larger than
the uniform Q4_K simulated here; the plan prices a real file by its size.
"""
from __future__ import annotations

import json
import weakref

import torch

from ..load import sizes
from ..load.keymaps import dit as dit_keys

QTYPES = ("Q8_0", "Q4_K")        # the types the simulation is checked for (any GGML type builds)
QUANTISE_ABOVE = 1024             # city96's tools keep tensors this small in F32


def full_config() -> dict:
    """The shipped Wan2.1-I2V-14B DiT config (what ``gguf_config`` infers from a real file)."""
    cfg = json.loads((sizes.CONFIGS / "transformer_i2v_14b.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def wan_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The file's tensors (Wan key names, torch order) for ``config``, from a meta-built DiT."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    return {dit_keys.diffusers_to_wan(k): tuple(t.shape) for k, t in model.state_dict().items()}


def stored_type(key: str, shape: tuple[int, ...], qtype: str) -> str:
    """The GGML type city96's tools store ``key`` in, for a file quantised to ``qtype``."""
    import gguf

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
    values = 1
    for s in shape:
        values *= s
    if len(shape) == 2 and values > QUANTISE_ABOVE and "modulation" not in key:
        return "F16" if shape[-1] % block else qtype
    return "F32"


def byte_shape(shape: tuple[int, ...], ggml_type: str) -> tuple[int, ...]:
    """The shape diffusers' reader gives a tensor of ``ggml_type``: uint8 bytes along the last
    dimension for a quantised one (``_quant_shape_from_byte_shape`` inverts it)."""
    import gguf

    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    if ggml_type in ("F32", "F16"):
        return shape
    return (*shape[:-1], shape[-1] // block * nbytes)


def stored_bytes(shapes: dict[str, tuple[int, ...]], qtype: str) -> int:
    """The tensor bytes of the file (what ``sizes`` counts as a GGUF DiT's weight bytes, less
    the header of a few kB)."""
    total = 0
    for key, shape in shapes.items():
        kind = stored_type(key, shape, qtype)
        n = 1
        for s in byte_shape(shape, kind):
            n *= s
        total += n * {"F32": 4, "F16": 2}.get(kind, 1)
    return total


def checkpoint(config: dict, qtype: str) -> dict[str, torch.Tensor]:
    """What ``load_gguf_checkpoint`` returns for such a file, on ``meta`` (no memory behind it;
    not fake: ``GGUFParameter`` cannot wrap a FakeTensor, see ``fake_weights``)."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFParameter

    out: dict[str, torch.Tensor] = {}
    for key, shape in wan_shapes(config).items():
        kind = stored_type(key, shape, qtype)
        if kind in ("F32", "F16"):
            out[key] = torch.empty(shape, dtype=torch.float32 if kind == "F32" else torch.float16, device="meta")
        else:
            data = torch.empty(byte_shape(shape, kind), dtype=torch.uint8, device="meta")
            out[key] = GGUFParameter(data, quant_type=gguf.GGMLQuantizationType[kind])
    return out


def build_dit(dtype: torch.dtype, qtype: str, config: dict | None = None):
    """The DiT a ``.gguf`` file of ``qtype`` loads into, through the loader's own function, its
    tensors then made fake (call under the card's FakeTensorMode)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from ..load.layouts import gguf_dit

    config = config or full_config()
    with unset_fake_temporarily():     # GGUFParameter cannot wrap a FakeTensor (see fake_weights)
        model = gguf_dit.from_checkpoint(checkpoint(config, qtype), config, dtype, device="meta")
    return fake_weights(model)


def fake_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter and buffer replaced by a fake of its shape and dtype.

    ``GGUFParameter`` is made by ``Tensor._make_subclass``, which refuses a FakeTensor ("already
    associated to a python object of type FakeTensor"), so a quantised weight becomes a fake
    uint8 parameter that answers what ``GGUFLinear.forward_native`` and diffusers'
    ``dequantize_gguf_tensor`` ask of a GGUFParameter (``quant_type``, ``quant_shape``,
    ``as_tensor()``): the dequantising itself runs diffusers' own ops, on fake tensors."""
    for sub in model.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                fake = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=False)
                sub._parameters[name] = tag(fake, p.quant_type) if hasattr(p, "quant_type") else fake
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = torch.empty(b.shape, dtype=b.dtype)
    return model


def tag(weight: torch.Tensor, quant_type) -> torch.Tensor:
    """``weight`` (fake uint8 bytes) made to answer as a GGUFParameter of ``quant_type`` does;
    fakecard.move tags the copy it makes on another device the same way."""
    from diffusers.quantizers.gguf.utils import GGML_QUANT_SIZES, _quant_shape_from_byte_shape

    block, nbytes = GGML_QUANT_SIZES[quant_type]
    weight.quant_type = quant_type
    weight.quant_shape = _quant_shape_from_byte_shape(weight.shape, nbytes, block)
    itself = weakref.ref(weight)       # no reference cycle: a copy moved off the card is freed at once
    weight.as_tensor = lambda: itself()
    return weight


def quant_types(model: torch.nn.Module) -> dict[str, tuple[str, tuple[int, ...], torch.dtype]]:
    """Each parameter's (GGML type or "", shape, dtype): what a fake and a real load must share."""
    out = {}
    for name, p in model.named_parameters():
        kind = getattr(p, "quant_type", None)
        out[name] = (kind.name if kind is not None else "", tuple(p.shape), p.dtype)
    return out


def reference_bytes() -> dict[str, int]:
    """``sizes.GGUF_REFERENCES``' figures: the full-size file's tensor bytes per type."""
    shapes = wan_shapes(full_config())
    return {q: stored_bytes(shapes, q) for q in QTYPES}


if __name__ == "__main__":    # prints the figures sizes.GGUF_REFERENCES holds
    print(json.dumps(reference_bytes()))
