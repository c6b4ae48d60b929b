"""A ComfyUI models folder as users have it: no tokenizer folder, files spread over extra paths."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import layout_writers as lw
from wan_engine.store import find as volume
from wan_engine.load.layouts import build, spiece
from wan_engine.store.modelset import SearchDirs
from wan_engine.sample.sampling import WAN_NEGATIVE_PROMPT
from wan_engine.tiny_model import build_components

ENGINE = Path(__file__).resolve().parent.parent / "wan_engine"
# What diffusers' WanImageToVideoPipeline passes to its tokenizer (_get_t5_prompt_embeds).
PIPELINE_CALL = dict(padding="max_length", max_length=512, truncation=True, add_special_tokens=True,
                     return_attention_mask=True, return_tensors="pt")
LONG = " ".join(["two people kiss in the rain 色调艳丽 😘 and smile, close up"] * 60)
PROMPTS = {"english": "two people smile, then they engage in k144ing kissing.",
           "chinese negative": WAN_NEGATIVE_PROMPT, "emoji": "😀 😘 ❤️ 💋🫦 kiss",
           "600+ tokens": LONG, "spaces": "  a   woman\tand a man  ", "empty": ""}


@pytest.fixture(scope="module")
def hub_and_comfy(tmp_path_factory):
    """The same multilingual byte-fallback model as a Hub tokenizer folder and in a umt5 file."""
    d = tmp_path_factory.mktemp("spiece")
    model = lw.tiny_spiece(vocab_size=700, byte_fallback=True, multilingual=True)
    folder = lw.write_tokenizer_folder(d / "umt5-xxl", model)
    umt5 = d / "umt5_xxl_fp16.safetensors"
    save_file({"shared.weight": torch.zeros(4, 2, dtype=torch.float16),
               spiece.TENSOR: torch.frombuffer(bytearray(model), dtype=torch.uint8)}, str(umt5))
    return folder, umt5


def test_spiece_model_tokenizer_gives_the_hub_tokenizers_ids(hub_and_comfy):
    folder, umt5 = hub_and_comfy
    hub = build.load_tokenizer(folder, "unused")                       # AutoTokenizer, as today
    ours = build.load_tokenizer(None, "unused", spiece_file=umt5)      # from spiece_model
    assert type(hub).__name__ == "T5Tokenizer"
    for what, text in PROMPTS.items():
        a, b = hub(text, **PIPELINE_CALL), ours(text, **PIPELINE_CALL)
        assert torch.equal(a.input_ids, b.input_ids), what
        assert torch.equal(a.attention_mask, b.attention_mask), what
    full = hub(LONG).input_ids
    assert len(full) > 600 and full[-1] == 1
    cut = ours(LONG, **PIPELINE_CALL)
    assert cut.input_ids[0, -1] == 1 and int(cut.attention_mask.sum()) == 512   # EOS kept at 512
    short = ours(PROMPTS["english"], **PIPELINE_CALL)
    n = int(short.attention_mask.sum())
    assert short.input_ids[0, n - 1] == 1 and not short.input_ids[0, n:].any()  # EOS, then pad 0
    zh = ours(WAN_NEGATIVE_PROMPT).input_ids
    assert 2 not in zh[:-1], "Chinese text in the vocabulary must not become <unk>"


def test_file_without_spiece_model_says_what_to_do(tmp_path):
    path = tmp_path / "umt5_xxl_fp16.safetensors"
    save_file({"shared.weight": torch.zeros(4, 2)}, str(path))
    with pytest.raises(spiece.WanVolumeError, match="spiece_model.*tokenizers/umt5-xxl"):
        build.load_tokenizer(None, "unused", spiece_file=path)


def test_charsmap_read_without_protobuf_matches_protobuf():
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = lw.tiny_spiece(vocab_size=700, byte_fallback=True, multilingual=True)
    proto = pb.ModelProto.FromString(model)
    assert spiece.precompiled_charsmap(model) == proto.normalizer_spec.precompiled_charsmap != b""


@pytest.fixture(scope="module")
def comps():
    return lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))


@pytest.mark.parametrize("tokenizer,complete", [("spiece", True), ("folder", True), ("none", False)])
def test_comfy_folder_is_complete_without_tokenizer_folder(comps, tmp_path, tokenizer, complete):
    lw.write_comfy(tmp_path, comps, ("bf16",), tokenizer=tokenizer)
    (s,) = volume.scan_dir(tmp_path)
    assert s.complete is complete, s.missing
    assert ("tokenizer" in s.components) is (tokenizer == "folder")
    assert (tmp_path / "tokenizers").exists() is (tokenizer == "folder")
    if not complete:
        assert s.missing == ["tokenizers/umt5-xxl/ (the umt5 file has no spiece_model tensor)"]


def test_per_kind_folders_combine_into_one_set(comps, tmp_path, monkeypatch):
    """extra_model_paths.yaml style: DiT and umt5 in one tree, CLIP and VAE in another."""
    monkeypatch.setenv("WAN_VOLUME_MODELS_DIR", str(tmp_path / "empty-volume"))
    (tmp_path / "empty-volume").mkdir()
    full = tmp_path / "full"
    lw.write_comfy(full, comps, ("bf16",))
    a, b = tmp_path / "a", tmp_path / "b"
    for kind, dest in (("diffusion_models", a), ("text_encoders", a), ("clip_vision", b), ("vae", b)):
        shutil.copytree(full / kind, dest / kind)
    kinds = {"diffusion_models": [a / "diffusion_models"], "text_encoders": [a / "text_encoders"],
             "clip_vision": [tmp_path / "nowhere", b / "clip_vision"], "vae": [b / "vae"]}
    name = "comfy/wan2.1_i2v_720p_tiny_bf16"
    assert not {s.name: s for s in volume.find_model_sets([a])}[name].complete   # a alone: half
    search = SearchDirs.from_kinds([a], kinds)
    s = {s.name: s for s in volume.find_model_sets(search)}[name]
    assert s.complete and s.components["vae"] == b / "vae" / "wan_2.1_vae.safetensors"
    assert volume.get_model_set(name, search).components["transformer"].parent == a / "diffusion_models"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or "") + ":" + ",".join(a.name for a in node.names))
    return names


def test_layouts_never_import_volume_or_assemble_back():
    layouts = [*sorted((ENGINE / "store" / "scan").glob("*.py")), *sorted((ENGINE / "load" / "layouts").glob("*.py"))]
    for path in [ENGINE / "store" / "modelset.py", *layouts]:
        for imp in _imports(path):
            assert "find" not in imp and "assemble" not in imp, (path.name, imp)
    assert not any("layouts" in i or "find" in i for i in _imports(ENGINE / "store" / "modelset.py"))
