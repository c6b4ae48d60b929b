"""Wan DiT key names (original ``WanModel``, ComfyUI single files) <-> diffusers
``WanTransformer3DModel``. Table: /work/shared/WAN_KEYS.md ("DiT")."""
from __future__ import annotations

from .common import KeyMap, strip_prefix

# Single-file prefixes seen in the wild: ComfyUI repackaged, bare (Kijai), LoRA trainers.
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")

_ATTN = [(f"self_attn.{w}", f"attn1.{d}") for w, d in
         (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
          ("norm_q", "norm_q"), ("norm_k", "norm_k"))]
_ATTN += [(f"cross_attn.{w}", f"attn2.{d}") for w, d in
          (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
           ("norm_q", "norm_q"), ("norm_k", "norm_k"), ("k_img", "add_k_proj"),
           ("v_img", "add_v_proj"), ("norm_k_img", "norm_added_k"))]
_BLOCK = _ATTN + [("modulation", "scale_shift_table"), ("norm3", "norm2"),
                  ("ffn.0", "ffn.net.0.proj"), ("ffn.2", "ffn.net.2")]

DIT = KeyMap(tuple([
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("patch_embedding", "patch_embedding"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
] + [(f"blocks.{{n}}.{w}", f"blocks.{{n}}.{d}") for w, d in _BLOCK]))


def wan_to_diffusers(key: str) -> str | None:
    """A Wan DiT key (any known prefix) in diffusers naming, or None if unknown."""
    return DIT.to_ours(strip_prefix(key, PREFIXES))


def diffusers_to_wan(key: str) -> str | None:
    return DIT.to_theirs(key)


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``WanTransformer3DModel`` config from Wan-named weight shapes (prefix stripped).

    Heads are not in the weights: ``dim // 128`` (ComfyUI's rule, true for every Wan model).
    """
    dim = shapes["head.modulation"][-1]
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")}
    patch = shapes["patch_embedding.weight"]
    out_features = shapes["head.head.weight"][0]
    p_t, p_h, p_w = patch[2], patch[3], patch[4]
    cfg = dict(patch_size=(p_t, p_h, p_w), num_attention_heads=dim // 128, attention_head_dim=128,
               in_channels=patch[1], out_channels=out_features // (p_t * p_h * p_w),
               text_dim=shapes["text_embedding.0.weight"][1],
               freq_dim=shapes["time_embedding.0.weight"][1],
               ffn_dim=shapes["blocks.0.ffn.0.weight"][0], num_layers=len(blocks),
               cross_attn_norm="blocks.0.norm3.weight" in shapes,
               qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None)
    if "img_emb.proj.0.weight" in shapes:
        cfg["image_dim"] = shapes["img_emb.proj.0.weight"][0]
        cfg["added_kv_proj_dim"] = dim
    return cfg
