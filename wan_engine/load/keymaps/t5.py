"""UMT5-XXL encoder: Wan's ``T5Encoder`` (``models_t5_umt5-xxl-enc-bf16.pth``) <-> transformers
``UMT5EncoderModel`` (also the key names of ComfyUI's ``umt5_xxl_*`` files). WAN_KEYS.md "T5"."""
from __future__ import annotations

from .common import KeyMap

_B = "encoder.block.{n}.layer"
T5 = KeyMap((
    ("token_embedding", "shared"),
    ("blocks.{n}.norm1", f"{_B}.0.layer_norm"),
    ("blocks.{n}.attn.q", f"{_B}.0.SelfAttention.q"),
    ("blocks.{n}.attn.k", f"{_B}.0.SelfAttention.k"),
    ("blocks.{n}.attn.v", f"{_B}.0.SelfAttention.v"),
    ("blocks.{n}.attn.o", f"{_B}.0.SelfAttention.o"),
    ("blocks.{n}.pos_embedding.embedding", f"{_B}.0.SelfAttention.relative_attention_bias"),
    ("blocks.{n}.norm2", f"{_B}.1.layer_norm"),
    ("blocks.{n}.ffn.gate.0", f"{_B}.1.DenseReluDense.wi_0"),
    ("blocks.{n}.ffn.fc1", f"{_B}.1.DenseReluDense.wi_1"),
    ("blocks.{n}.ffn.fc2", f"{_B}.1.DenseReluDense.wo"),
    ("norm", "encoder.final_layer_norm"),
))
# Not in the weights: umt5-xxl's value. A wrong one changes outputs by ~0.03-0.12.
RELATIVE_MAX_DISTANCE = 128
# ComfyUI files: a serialized SentencePiece model and the scaled-fp8 marker; not weights.
NON_WEIGHTS = ("spiece_model", "scaled_fp8")


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """``UMT5Config`` kwargs from transformers-named shapes."""
    vocab, d_model = shapes["shared.weight"]
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.block.")}
    rel = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
    return dict(vocab_size=vocab, d_model=d_model, d_kv=inner // rel[1], num_heads=rel[1],
                d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
                num_layers=len(layers), relative_attention_num_buckets=rel[0],
                relative_attention_max_distance=RELATIVE_MAX_DISTANCE, feed_forward_proj="gated-gelu",
                dense_act_fn="gelu_new", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
                tie_word_embeddings=False)
