"""The umt5 tokenizer from the sentencepiece model a ComfyUI umt5 file carries (``spiece_model``).

ComfyUI's ``umt5_xxl_*.safetensors`` hold the sentencepiece model proto as a uint8 tensor, so a
ComfyUI models folder needs no tokenizer folder. The tokenizer is built the way transformers
builds ``T5Tokenizer`` from a Hub folder's ``spiece.model`` (vocabulary and scores, control
pieces as special tokens, the normalizer's precompiled charsmap, ``</s>`` appended), so the
token ids, truncation and padding equal those of the Hub tokenizer the diffusers pipeline uses.
Only sentencepiece is needed (the charsmap is read from the proto's wire format below, which
keeps protobuf optional).
"""
from __future__ import annotations

from pathlib import Path

from ...store.identify import SPIECE_TENSOR
from ...errors import WanVolumeError

TENSOR = SPIECE_TENSOR
MAX_LENGTH = 512               # Wan's text length (diffusers pipeline: max_sequence_length)
T5_SPECIAL_IDS = {"<pad>": 0, "</s>": 1, "<unk>": 2}   # T5's fixed ids; the umt5 model has them


def read_spiece(path: Path) -> bytes:
    """The sentencepiece model bytes stored in ``path``'s ``spiece_model`` tensor."""
    from .. import fastload

    tensors = fastload.load_file(Path(path), rename=lambda k: k if k == TENSOR else None)
    if TENSOR not in tensors:
        raise WanVolumeError(f"the umt5 file has no `{TENSOR}` tensor to build the tokenizer from",
                             field="file", value=str(path),
                             fix="put google/umt5-xxl's tokenizer files in tokenizers/umt5-xxl/ "
                                 "next to text_encoders/, or use ComfyUI's umt5_xxl file "
                                 "(Comfy-Org/Wan_2.1_ComfyUI_repackaged)")
    return tensors[TENSOR].numpy().tobytes()


def tokenizer_from_spiece(model: bytes, source: str = "spiece_model"):
    """A transformers ``T5Tokenizer`` equal to the one the Hub folder of ``model`` gives."""
    import sentencepiece
    from transformers import T5Tokenizer

    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    except RuntimeError as exc:
        raise WanVolumeError(f"not a sentencepiece model ({exc})", field="file", value=source,
                             fix="re-download the umt5 file") from exc
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    wrong = {p: i for p, i in T5_SPECIAL_IDS.items() if i >= len(pieces) or pieces[i] != p}
    if wrong:
        raise WanVolumeError(f"sentencepiece model without T5's special pieces at their ids {wrong}",
                             field="file", value=source, fix="use the umt5-xxl tokenizer")
    vocab = [(p, sp.get_score(i)) for i, p in enumerate(pieces)]
    controls = [p for i, p in enumerate(pieces) if sp.is_control(i)]
    return T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=precompiled_charsmap(model),
                       extra_ids=0, additional_special_tokens=controls,
                       model_max_length=MAX_LENGTH)


# ---- the two fields of the ModelProto we need, from protobuf's wire format ------------------
# ModelProto.normalizer_spec is field 3; NormalizerSpec.precompiled_charsmap is field 2 (bytes).

def precompiled_charsmap(model: bytes) -> bytes | None:
    spec = _field(model, 3)
    charsmap = _field(spec, 2) if spec is not None else None
    return charsmap or None


def _field(message: bytes, number: int) -> bytes | None:
    """The last length-delimited field ``number`` of a protobuf message (None if absent)."""
    pos, found = 0, None
    while pos < len(message):
        key, pos = _varint(message, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(message, pos)
            if key >> 3 == number:
                found = message[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"sentencepiece model: unexpected protobuf wire type {wire}")
    return found


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("sentencepiece model: truncated protobuf varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
