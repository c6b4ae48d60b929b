"""The memory plan on the real Wan2.1-I2V-14B shapes (modules built on `meta`, no weights)."""
from __future__ import annotations

import pytest

from wan_engine.load import plan, sizes
from wan_engine.store import find as volume
from wan_engine import tiny_model

GIB = 2**30
CARDS = (16, 24, 32, 48, 80, 141)
VIDEOS = ((832, 480, 81), (1280, 720, 81))


@pytest.fixture(scope="module")
def ref() -> sizes.SetSizes:
    return sizes.reference("wan2.1-i2v-14b-720p")


def test_reference_counts_are_the_real_14b(ref):
    assert ref.dit.params == 16_394_878_784
    assert ref.dit.blocks == 40 and ref.dit.hidden == 5120
    assert ref.text_encoder == 5_680_910_336                # the tied embedding once
    assert 0.62e9 < ref.image_encoder < 0.64e9 and 0.12e9 < ref.vae < 0.13e9
    w = ref.weights("bf16")
    assert 30.4 < w.transformer / GIB < 30.7 and 0.74 < w.block_bytes / GIB < 0.76
    assert 10.5 < w.text_encoder / GIB < 10.7 and 2.3 < w.image_encoder / GIB < 2.4
    assert ref.weights("fp16").text_encoder > w.text_encoder          # umT5's wo stays fp32 in fp16
    assert ref.weights("bf16", fp8=True).transformer < 0.52 * w.transformer


@pytest.mark.parametrize("video", VIDEOS, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("card", CARDS)
def test_every_plan_fits_its_card(ref, card, video):
    p = plan.plan_for(ref, plan.usable_vram(card * GIB), *video)
    assert p.fits and p.peak_bytes <= p.vram_bytes < card * GIB
    for phase in p.phases:
        assert phase.peak_bytes == sum(c.gpu_bytes for c in phase.components.values()) + phase.working_bytes
    dit = {ph.name: ph.components["transformer"] for ph in p.phases}
    if card >= 80:
        assert p.mode == "resident" and dit["sample"].device == "gpu" and dit["sample"].dtype == "bf16"
    if card <= 24:
        assert not (dit["sample"].device == "gpu" and dit["sample"].dtype in ("bf16", "fp16"))
    if p.mode != "resident":      # phase-wise: the encoders are off the GPU while the DiT samples
        assert p.phase("sample").components["text_encoder"].device == "cpu"


def test_fastest_first(ref):
    """Each smaller card gets a plan no faster than the bigger one's."""
    modes = [plan.plan_for(ref, plan.usable_vram(c * GIB), 1280, 720, 81).mode for c in reversed(CARDS)]
    assert modes == sorted(modes, key=plan.MODES.index)
    assert modes[0] == "resident" and modes[2] == "swap"           # 141, 80 GB; 48 GB
    assert plan.plan_for(ref, plan.usable_vram(24 * GIB), 1280, 720, 81).mode == "block"


def test_block_plan_keeps_as_many_blocks_as_fit(ref):
    p = plan.plan_for(ref, plan.usable_vram(24 * GIB), 1280, 720, 81)
    w = ref.weights("bf16")
    # the kept blocks stay on the GPU in every phase: the tightest phase decides how many fit
    spare = min(p.vram_bytes * (1 - plan.SAFETY) - ph.peak_bytes for ph in p.phases)
    assert 0 < p.resident_blocks < 40 and 0 <= spare < w.block_bytes   # one more would not fit
    assert p.phase("sample").components["transformer"].device == "split"


def test_too_small_a_card_says_it_does_not_fit(ref):
    p = plan.plan_for(ref, 1 * GIB, 1280, 720, 81)
    assert p.mode == "sequential" and not p.fits and "DOES NOT FIT" in p.summary()


def test_quadratic_attention_needs_more(ref):
    fused = plan.plan_for(ref, plan.usable_vram(80 * GIB), 832, 480, 81)
    math = plan.plan_for(ref, plan.usable_vram(80 * GIB), 832, 480, 81, attention="math")
    assert math.phase("sample").working_bytes > 10 * fused.phase("sample").working_bytes


def test_decode_tiles_follow_the_room(ref):
    big = plan.plan_for(ref, plan.usable_vram(141 * GIB), 1280, 720, 81)
    assert big.decode_tile == 0                        # large cards: whole frames, fewest calls
    tight = plan.plan_for(ref, 8 * GIB, 1280, 720, 81)
    assert tight.decode_tile != 0 and tight.phase("decode").peak_bytes <= tight.vram_bytes
    assert tight.phase("decode").working_bytes < big.phase("decode").working_bytes


def test_a_forced_mode_is_kept_and_says_whether_it_fits(ref):
    p = plan.plan_for(ref, 9 * GIB, 1280, 720, 81, force="swap")
    assert p.mode == "swap" and not p.fits


def test_json_shape(ref):
    d = plan.plan_for(ref, plan.usable_vram(48 * GIB), 832, 480, 81).to_dict()
    assert isinstance(d["fits"], bool) and isinstance(d["peak_bytes"], int)
    assert [p["name"] for p in d["phases"]] == ["encode", "sample", "decode"]
    for p in d["phases"]:
        assert set(p["components"]) == {"transformer", "text_encoder", "image_encoder", "vae"}
        for c in p["components"].values():
            assert c["device"] in ("gpu", "cpu", "split") and c["dtype"] in ("bf16", "fp16", "fp32", "fp8")
            assert isinstance(c["gpu_bytes"], int)


def test_sizes_from_headers_match_the_built_modules(volume_env):
    """The tiny set's header counts equal its loaded modules' parameters."""
    from wan_engine.load import assemble

    found = volume.get_model_set(tiny_model.TINY_SET_NAME)
    counted = sizes.from_model_set(found)
    assemble.release()
    loaded = assemble.load(found, "fp32", "none")
    try:
        pipe = loaded.pipe

        def params(m) -> int:
            unique = {t.data_ptr(): t.numel() for t in m.state_dict().values()}   # tied once
            return sum(unique.values())
        assert counted.dit.params == params(pipe.transformer)
        assert counted.text_encoder == params(pipe.text_encoder)        # shared weight once
        assert counted.image_encoder == params(pipe.image_encoder)
        assert counted.vae == params(pipe.vae)
    finally:
        assemble.release()


def test_gguf_dit_keeps_its_quantised_size(tmp_path):
    from wan_engine.store.modelset import ModelSet

    dit = tmp_path / "wan-q4.gguf"
    dit.write_bytes(b"GGUF" + b"\0" * 4096)
    counted = sizes.from_model_set(ModelSet("g", "comfy", tmp_path, {"transformer": dit}))
    w = counted.weights("bf16")
    # the file's size, and the time embedder the GGUF quantizer dequantises into fp32 on loading
    fp32 = counted.dit.fp32 * 4 - counted.dit.fp32 * dit.stat().st_size // counted.dit.params
    assert w.transformer == dit.stat().st_size + fp32 and w.transformer_dtype == "gguf" and w.blocks == 40
    assert 0.07 * 2**30 < fp32 < 0.11 * 2**30 and counted.dit_gguf == ""     # unreadable: no type


def test_pth_parts_priced_by_size_or_as_the_real_part(tmp_path, ref):
    """Original Wan .pth files have no header: a small file is its size as 16-bit parameters; a
    full-size one (CLIP's file also holds a text tower the pipeline never loads) is the real part."""
    from wan_engine.store.modelset import ModelSet

    small, big = tmp_path / "small.pth", tmp_path / "clip.pth"
    small.write_bytes(b"\0" * 5000)
    with open(big, "wb") as fh:
        fh.truncate(4_770_000_000)              # sparse: the size of Wan's open-clip file, no disk used
    assert sizes.from_model_set(ModelSet("s", "wan", tmp_path, {"image_encoder": small})).image_encoder == 2500
    full = sizes.from_model_set(ModelSet("b", "wan", tmp_path, {"image_encoder": big}))
    assert full.image_encoder == ref.image_encoder and full.notes


def test_the_image_step_asks_comfyui_for_its_own_room(ref):
    """16 GB, 480p: the encode phase counts the umT5 beside the image step's parts, but the image
    step needs the VAE encode's room, which the umT5 must leave for. The phase hook asks ComfyUI
    for each step's own working memory (``working_for``); the phase's leftover (peak less every
    weight) was negative here, so ComfyUI evicted nothing (found by ``plan --simulate``)."""
    p = plan.plan_for(ref, plan.usable_vram(16 * GIB), 832, 480, 81)
    enc = p.phase("encode")
    budget = p.vram_bytes * (1 - plan.SAFETY)
    weights = sum(part.gpu_bytes for part in enc.components.values())
    image = enc.working_for("image_encode")
    assert enc.working_bytes < image and image > 0
    assert weights + image > budget            # with the umT5 still on the card it would not fit
    umt5 = enc.components["text_encoder"].gpu_bytes
    assert umt5 > 0 and weights - umt5 + image <= enc.peak_bytes <= budget   # it fits once it leaves
    assert enc.working_for("text_encode") < image and p.phase("sample").working_for("sample") == \
        p.phase("sample").working_bytes
