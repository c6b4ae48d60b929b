"""ComfyUI folders as users fill them: files found by their content under any name, at any depth,
in ComfyUI's and Wan's own key forms, and GGUF DiTs; each gives the diffusers layout's frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import layout_writers as lw
from helpers import tiny_request
from wan_engine.load import assemble
from wan_engine.sample import sampling
from wan_engine.store import damage, identify
from wan_engine.store import find as volume
from wan_engine.store.scan import comfy_files
from wan_engine.tiny_model import build_components

STYLES = ("renamed", "kijai", "split", "gguf")
# Q8_0 keeps 8 bits per weight with one scale per 32: on the tiny random model (frames in
# [0, 1], 2 steps) measured max |diff| 0.059 / mean 0.0023 against the unquantised DiT.
# Stated bound, as for fp8: max < 0.12 and mean < 0.01. Q4_K (4 bits, 6-bit scales per 32):
# measured max 0.134 / mean 0.0071; stated bound max < 0.3 and mean < 0.03.
GGUF_FRAME_TOL, GGUF_MEAN_TOL = 0.12, 0.01
GGUF_TOL = {"Q8_0": (GGUF_FRAME_TOL, GGUF_MEAN_TOL), "Q4_K": (0.3, 0.03)}


@pytest.fixture(scope="module")
def comps():
    return lw.with_spiece_tokenizer(lw.representable(build_components(seed=0)))


@pytest.fixture(scope="module")
def volumes(comps, tmp_path_factory):
    base = tmp_path_factory.mktemp("by-content")
    lw.write_diffusers(base / "diffusers" / "Wan2.1-I2V-tiny-Diffusers", comps)
    return base, {style: (base / style, lw.write_comfy_as(base / style, comps, style)) for style in STYLES}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))


def only_set(models_dir):
    (found,) = [s for s in volume.scan_dir(models_dir) if s.layout == "comfy"]
    return found


def frames(model_set, image) -> np.ndarray:
    loaded = assemble.load(model_set, "bf16")
    try:
        return sampling.sample(loaded, image, tiny_request(seed=5))
    finally:
        assemble.release()


@pytest.mark.parametrize("style", STYLES)
def test_every_way_of_filling_the_folders_gives_a_complete_set(volumes, style):
    d, dit = volumes[1][style]
    s = only_set(d)
    assert s.complete, s.missing
    assert s.components["transformer"] == dit and s.name == f"comfy/{dit.stem}"
    for comp, kind in (("text_encoder", "text_encoders"), ("image_encoder", "clip_vision"), ("vae", "vae")):
        assert s.components[comp].is_relative_to(d / kind), (comp, s.components)
    assert ("tokenizer" in s.components) is (style == "kijai")


def test_files_are_identified_by_header_in_each_key_form(volumes):
    d = volumes[1]["kijai"][0]
    forms = {f.path.name: (f.what.kind, f.what.form) for f in comfy_files.model_files(
        {k: [d / s for s in subs] for k, subs in comfy_files.SUBDIRS.items()})}
    assert forms[lw.KIJAI["text_encoders"]] == ("umt5", "wan")
    assert forms[lw.KIJAI["clip_vision"]] == ("clip_vision", "wan")
    assert forms[lw.KIJAI["vae"]] == ("vae", "wan")
    gguf = volumes[1]["gguf"][1]
    what = identify.identify_file(gguf)
    assert (what.kind, what.form, what.precision, what.i2v) == ("dit", "gguf", "Q8_0", True)


def test_other_files_are_ignored_and_misfits_not_paired(comps, tmp_path):
    lw.write_comfy_as(tmp_path, comps, "renamed")
    (tmp_path / "text_encoders" / "notes.safetensors").write_bytes(b"not a model at all")
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 256)},
              str(tmp_path / "diffusion_models" / "a_lora.safetensors"))
    save_file({"encoder.conv1.weight": torch.zeros(8, 3, 3, 3), "decoder.conv1.weight": torch.zeros(8, 4, 3, 3),
               "conv1.weight": torch.zeros(8, 8, 1, 1)}, str(tmp_path / "vae" / "sd_vae.safetensors"))
    t5 = {k: v for k, v in comps["text_encoder"].state_dict().items() if k != "encoder.embed_tokens.weight"}
    t5 = {k: v for k, v in t5.items() if "block.1.layer.0.SelfAttention.relative" not in k}
    save_file(t5, str(tmp_path / "text_encoders" / "aa_t5xxl_flux.safetensors"))   # T5, not umT5
    wide = {f"vision_model.{k}": v for k, v in comps["image_encoder"].state_dict().items()}
    wide["vision_model.embeddings.class_embedding"] = torch.zeros(1024)           # ViT-L, not ViT-H
    save_file(wide, str(tmp_path / "clip_vision" / "aa_clip_l.safetensors"))
    s = only_set(tmp_path)
    assert s.complete
    assert s.components["text_encoder"].name == lw.RENAMED["text_encoders"]
    assert s.components["image_encoder"].name == lw.RENAMED["clip_vision"]
    assert s.components["vae"].name == lw.RENAMED["vae"]


def test_the_choice_is_stated_and_deterministic(comps, tmp_path):
    """fp16 before fp32 before fp8 scaled; the others listed for the loader's explicit choice."""
    lw.write_comfy_as(tmp_path, comps, "renamed")                         # an fp32 umt5
    lw.write_comfy(tmp_path / "more", comps, ("bf16",), umt5_variant="fp8_scaled")
    (tmp_path / "more" / "text_encoders").rename(tmp_path / "text_encoders" / "sub")
    lw.write_comfy(tmp_path / "fp16", comps, ("bf16",))
    (tmp_path / "fp16" / "text_encoders" / "umt5_xxl_fp16.safetensors").rename(
        tmp_path / "text_encoders" / "zz_umt5_fp16.safetensors")
    s = only_set(tmp_path)
    assert list(s.alternatives["text_encoder"]) == [
        "zz_umt5_fp16.safetensors", lw.RENAMED["text_encoders"], "sub/umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    assert s.components["text_encoder"].name == "zz_umt5_fp16.safetensors"
    assert "umt5 zz_umt5_fp16.safetensors" in s.label
    assert "fp16 > bf16 > fp32 > fp8_scaled" in comfy_files.RULE


def test_a_umt5_without_tokenizer_loses_to_one_with(comps, tmp_path):
    lw.write_comfy(tmp_path, comps, ("bf16",))                  # umt5 fp16 with spiece_model
    lw.write_kijai(tmp_path / "k", comps)                       # umt5 bf16 without
    src = tmp_path / "k" / "text_encoders" / lw.KIJAI["text_encoders"]
    src.rename(tmp_path / "text_encoders" / "0_umt5-fp16-no-spiece.safetensors")
    s = only_set(tmp_path)
    assert s.complete and s.components["text_encoder"].name == "umt5_xxl_fp16.safetensors"


def test_a_truncated_gguf_is_shown_as_damaged(volumes, tmp_path):
    src = volumes[1]["gguf"][1]
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / src.name).write_bytes(src.read_bytes()[:-4096])
    (found,) = volume.scan_dir(tmp_path)
    hurt = damage.set_damage(found)
    assert hurt is not None and "truncated" in hurt.message and src.name in hurt.message


@pytest.mark.parametrize("style", ("renamed", "kijai", "split"))
def test_same_frames_as_the_diffusers_layout(volumes, image, style):
    base, made = volumes
    (ref,) = volume.scan_dir(base / "diffusers")
    assert np.array_equal(frames(only_set(made[style][0]), image), frames(ref, image))


def _gguf_runs() -> bool:
    import diffusers
    from wan_engine.load.layouts.gguf_dit import GGUF_DIFFUSERS

    return tuple(int(x) for x in diffusers.__version__.split(".")[:2]) >= GGUF_DIFFUSERS


NEEDS_GGUF_DIFFUSERS = pytest.mark.skipif(not _gguf_runs(), reason="this diffusers cannot run a GGUF DiT "
                                          "(the loader refuses it, naming the version): test_old_diffusers_refuses_gguf")


@NEEDS_GGUF_DIFFUSERS
@pytest.mark.parametrize("qtype", ("Q8_0", "Q4_K"))
def test_gguf_dit_frames_within_the_stated_bound(volumes, comps, image, tmp_path, qtype):
    """Q8_0 from gguf's own quantiser; Q4_K (what most downloads are) from the test's block_q4_K
    writer, read back by diffusers' dequantiser."""
    base, _ = volumes
    (ref,) = volume.scan_dir(base / "diffusers")
    lw.write_comfy_as(tmp_path, comps, "gguf", qtype)
    model_set = only_set(tmp_path)
    assert identify.identify_file(model_set.components["transformer"]).precision == qtype
    want = frames(ref, image)
    got = frames(model_set, image)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    print(f"GGUF {qtype} vs diffusers: max {diff.max():.4f} mean {diff.mean():.5f}")
    tol, mean_tol = GGUF_TOL[qtype]
    assert diff.max() < tol and diff.mean() < mean_tol
    assert diff.max() > 0, "a quantised DiT gives different numbers: is it really the GGUF file?"


@NEEDS_GGUF_DIFFUSERS
def test_gguf_dit_takes_a_lora_unfused(volumes, image, tmp_path):
    """peft's LoRA layers wrap diffusers' GGUFLinear (dequantised per layer); fusing is skipped
    (the weights stay quantised), so the fused request gives the unfused frames."""
    from wan_engine import tiny_model
    from wan_engine.lora import apply as lora

    base, made = volumes
    path = str(tiny_model.ensure_demo_lora(tmp_path))
    (ref_set,) = volume.scan_dir(base / "diffusers")
    runs = {}
    for name, model_set in (("ref", ref_set), ("gguf", only_set(made["gguf"][0]))):
        loaded = assemble.load(model_set, "bf16")
        try:
            plain = sampling.sample(loaded, image, tiny_request(seed=5))
            lora.activate(loaded, (lora.LoraUse(path, 1.0),))
            on = sampling.sample(loaded, image, tiny_request(seed=5))
            if name == "gguf":
                lora.activate(loaded, (lora.LoraUse(path, 1.0),), fuse=True)
                assert np.array_equal(sampling.sample(loaded, image, tiny_request(seed=5)), on)
            runs[name] = (plain, on)
        finally:
            assemble.release()
    assert np.abs(runs["gguf"][1] - runs["gguf"][0]).max() > 0.1, "the LoRA changed nothing"
    diff = np.abs(runs["gguf"][1].astype(np.float64) - runs["ref"][1])
    assert diff.max() < GGUF_FRAME_TOL and diff.mean() < GGUF_MEAN_TOL


def test_explicit_choices_replace_the_rule_and_are_checked(comps, tmp_path):
    from wan_engine.errors import InvalidInput

    lw.write_comfy_as(tmp_path, comps, "renamed")                          # fp32 umt5, with spiece
    lw.write_kijai(tmp_path / "k", comps)                                   # bf16 umt5, no spiece
    (tmp_path / "k" / "text_encoders" / lw.KIJAI["text_encoders"]).rename(
        tmp_path / "text_encoders" / lw.KIJAI["text_encoders"])
    s = only_set(tmp_path)
    assert s.components["text_encoder"].name == lw.RENAMED["text_encoders"]      # tokenizer at hand
    assert comfy_files.with_choices(s, {"text_encoder": "auto"}) is s
    chosen = comfy_files.with_choices(s, {"text_encoder": lw.KIJAI["text_encoders"]})
    assert chosen.components["text_encoder"].name == lw.KIJAI["text_encoders"]
    assert chosen.missing == ["tokenizers/umt5-xxl/ (the umt5 file has no spiece_model tensor)"]
    assert "chosen" in chosen.label and s.complete
    with pytest.raises(InvalidInput, match="no clip_vision file of that name fits the model set") as err:
        comfy_files.with_choices(s, {"image_encoder": lw.RENAMED["vae"]})
    assert err.value.field == "clip_vision" and lw.RENAMED["clip_vision"] in str(err.value)
    options = comfy_files.choice_options([s])
    assert options["text_encoder"] == ["auto", lw.RENAMED["text_encoders"], lw.KIJAI["text_encoders"]]


def test_status_states_the_choice(comps, tmp_path):
    """`wanvolume.py status` and its JSON say which files a set uses, which others fit, and why."""
    import json
    import subprocess
    import sys

    lw.write_comfy_as(tmp_path, comps, "renamed")
    lw.write_comfy(tmp_path / "more", comps, ("bf16",), umt5_variant="fp8_scaled")
    (tmp_path / "more" / "text_encoders").rename(tmp_path / "text_encoders" / "sub")
    repo = lw.Path(__file__).resolve().parent.parent
    run = lambda *a: subprocess.run([sys.executable, "wanvolume.py", "status", "--models-dir", str(tmp_path), *a],  # noqa: E731
                                    cwd=repo, capture_output=True, text=True)
    doc = json.loads(run("--json").stdout)
    (s,) = doc["model_sets"]
    assert s["components"]["text_encoder"].endswith(lw.RENAMED["text_encoders"])
    assert s["alternatives"]["text_encoder"] == [lw.RENAMED["text_encoders"],
                                                 "sub/umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    assert doc["choice_rule"] == comfy_files.RULE
    text = run().stdout
    assert "comfy/my_wan_i2v_model uses:" in text and "1 other text_encoder file(s) fit" in text
    assert comfy_files.RULE in text


def test_a_rescan_reads_only_new_or_changed_headers(comps, tmp_path, monkeypatch):
    """Headers are cached per (path, size, mtime): after a file is added, scanning the folders
    again opens that file's header only (a big network volume is read once)."""
    lw.write_comfy_as(tmp_path, comps, "split")
    only_set(tmp_path)
    read = []
    real = identify._identify_st
    monkeypatch.setattr(identify, "_identify_st", lambda p: read.append(p.name) or real(p))
    kinds = {k: [tmp_path / s for s in subs] for k, subs in comfy_files.SUBDIRS.items()}
    comfy_files.scan_folders(kinds)
    assert read == []
    lw.write_kijai(tmp_path / "k", comps)
    (tmp_path / "k" / "vae" / lw.KIJAI["vae"]).rename(tmp_path / "vae" / lw.KIJAI["vae"])
    (s,) = comfy_files.scan_folders(kinds)
    assert read == [lw.KIJAI["vae"]] and lw.KIJAI["vae"] in s.alternatives["vae"]


@NEEDS_GGUF_DIFFUSERS
def test_gguf_tensor_stored_reshaped_loads_with_its_real_shape(comps, tmp_path):
    """city96's tools store a >4-D tensor flattened with ``comfy.gguf.orig_shape.<name>``;
    diffusers alone refuses it (shape mismatch), the pack reshapes it back."""
    from wan_engine.load.layouts import gguf_dit

    plain = gguf_dit.read_gguf_dit(lw.gguf_dit(comps["transformer"], tmp_path / "a.gguf"), torch.bfloat16)
    flat = gguf_dit.read_gguf_dit(lw.gguf_dit(comps["transformer"], tmp_path / "b.gguf", orig_shape=True),
                                  torch.bfloat16)
    assert identify.gguf_tensors(tmp_path / "b.gguf")[0]["patch_embedding.weight"] == (256, 36, 1, 2, 2)
    a, b = plain.state_dict(), flat.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_old_diffusers_refuses_gguf_naming_the_version(tmp_path, comps, monkeypatch):
    import diffusers
    from wan_engine.errors import WanVolumeError
    from wan_engine.load.layouts import gguf_dit

    lw.write_comfy_as(tmp_path, comps, "gguf", "Q8_0")
    path = only_set(tmp_path).components["transformer"]
    monkeypatch.setattr(diffusers, "__version__", "0.37.0")
    with pytest.raises(WanVolumeError, match=r"needs diffusers 0\.42 or newer \(found 0\.37\.0"):
        gguf_dit.read_gguf_dit(path, torch.bfloat16)
