"""wan_engine/rules.py: every bad value is named with a fix, and every suggested fix passes the rule."""
from __future__ import annotations

import math

import pytest

from wan_engine import errors, rules, video
from wan_engine.store import headers, stfile
from wan_engine.errors import InvalidInput, WanVolumeError

BAD_NUMBERS = [-1, 0, 1, 7, 15, 17, 100, 833, 2047, 2049, 4096, 4112, 10**9, -(10**9), 5.5, math.nan,
               math.inf, -math.inf, "abc", "", None, True, [1], {"a": 1}]

# (rule as called with one value, values to try)
RULES = {
    "width": (lambda v: rules.side("width", v), BAD_NUMBERS),
    "height": (lambda v: rules.side("height", v), BAD_NUMBERS),
    "frames": (rules.frame_count, BAD_NUMBERS + [2, 80, 82, 256, 258, 300]),
    "tile_size": (lambda v: rules.multiple("tile_size", v, 16, 64, 2048, example=256), BAD_NUMBERS),
    "tile_overlap": (lambda v: rules.multiple("tile_overlap", v, 8, 0, 56, example=48), BAD_NUMBERS),
    "crf-h264": (lambda v: video.check_settings("h264-mp4", v), BAD_NUMBERS + [52, 63, 64]),
    "crf-webm": (lambda v: video.check_settings("webm", v), BAD_NUMBERS + [52, 63, 64]),
    "fps": (lambda v: video.check_settings(fps=v), BAD_NUMBERS + [0.5, 120.5]),
    "format": (lambda v: video.check_settings(fmt=v), ["gif", "H264-MP4", 1, None, ""]),
    "cfg": (lambda v: rules.number("cfg", v, lo=1.0, example=5.0), BAD_NUMBERS + [0.99]),
    # tiles advance by at least half a tile: the overlap of a 128 px tile is at most 64
    "tile_overlap-half": (lambda v: rules.tiles(True, 128, v), BAD_NUMBERS + [72, 120, 64 + 8]),
    "distill-cfg": (lambda v: rules.distill_cfg("distill_4step", v), [5.0, 0.5, 2, 1.5, math.nan, "1", None]),
    "flag": (lambda v: rules.flag("tiled_decode", v), [1, 0, "true", None]),
}


@pytest.mark.parametrize("name", RULES)
def test_every_suggested_fix_passes_the_rule(name):
    check, values = RULES[name]
    refused = 0
    for value in values:
        try:
            check(value)
        except InvalidInput as exc:
            refused += 1
            msg = str(exc)
            assert "Fix: use " in msg, msg
            assert exc.suggested, f"{name}={value!r}: no suggested value in {msg!r}"
            assert len(set(exc.suggested)) == len(exc.suggested), msg      # never "use 1 or 1"
            for good in exc.suggested:
                check(good)                                                 # the fix is itself valid
    assert refused >= len(values) // 2


@pytest.mark.parametrize("value,fix", [(4096, "use 2048"), (0, "use 16"), (-5, "use 16"),
                                       (100, "use 96 or 112"), (100.5, "use 96 or 112"), ("abc", "use 832")])
def test_width_hints(value, fix):
    with pytest.raises(InvalidInput) as err:
        rules.side("width", value)
    assert str(err.value).startswith(f"width = {value!r}: ")
    assert str(err.value).endswith(f"{fix} ({rules.SIZE_HINT})") or str(err.value).endswith(fix)


@pytest.mark.parametrize("value,fix", [(0, "use 1"), (-3, "use 1"), (2, "use 1 or 5"), (258, "use 257"),
                                       (256, "use 253 or 257")])
def test_frame_hints(value, fix):
    with pytest.raises(InvalidInput) as err:
        rules.frame_count(value)
    assert str(err.value).endswith(fix)


def test_frames_zero_hint_is_in_range():
    with pytest.raises(InvalidInput) as err:
        rules.frame_count(0)
    assert err.value.suggested == (1,)


def test_crf_per_format():
    video.check_settings("webm", 63)
    with pytest.raises(InvalidInput, match=r"crf = 52: must be a whole number from 0 to 51 for h264-mp4"):
        video.check_settings("h264-mp4", 52)
    with pytest.raises(InvalidInput, match="crf = 60: .*h265-mp4"):
        video.check_settings("h265-mp4", 60)


@pytest.mark.parametrize("prefix", ["../../x", "/etc/x", "%year%/../../x", "a/../../x", "..", ".", "",
                                    "   ", "a\x00b", "a\nb", "a\x1fb", "x" * 300, "d/" + "é" * 120,
                                    "~/x", "C:/x", "\\\\server\\x", "é" * 116 + "/" + "x" * 10 * 0 + "a" * 232])
def test_bad_prefixes(prefix):
    with pytest.raises(InvalidInput) as err:
        rules.filename_prefix(prefix)
    assert str(err.value).startswith("filename_prefix = ") and "Fix: use a relative name" in str(err.value)


@pytest.mark.parametrize("prefix", ["WanVolume/kiss", "%year%-%month%/kiss", "a b/ü名前", "x" * 231,
                                    "d/" * 50 + "x", "./x", "a//b"])
def test_good_prefixes(prefix):
    assert rules.filename_prefix(prefix) == prefix


def test_message_is_not_rewritten():
    msg = str(WanVolumeError("the file /a/../b.safetensors is damaged", field="f", value="x..y",
                             fix="see 1, 5, 9, ... 81"))
    assert msg == "f = 'x..y': the file /a/../b.safetensors is damaged. Fix: see 1, 5, 9, ... 81"
    assert str(WanVolumeError("ends with a stop.")) == "ends with a stop."


def test_huge_value_is_shortened_in_message():
    with pytest.raises(InvalidInput) as err:
        rules.text("prompt", " " * 131_072, blank_ok=False)
    assert "(131072 characters)" in str(err.value) and len(str(err.value)) < errors.VALUE_SHOWN + 300


def test_damaged_safetensors_named(tmp_path):
    good = tmp_path / "good.safetensors"
    good.write_bytes(b'\x02\x00\x00\x00\x00\x00\x00\x00{}')
    headers.safetensors_files("lora", "x", [good], fix="refetch")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}')
    assert stfile.truncation_problem(bad)
    with pytest.raises(InvalidInput, match=f"the file {bad} is damaged"):
        headers.safetensors_files("lora", "x", [good, bad], fix="refetch")


def test_wan_dit_names_a_file_of_another_architecture(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "transformer"
    folder.mkdir()
    save_file({"patch_embedding.weight": torch.zeros(2), "blocks.0.x": torch.zeros(1)},
              str(folder / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    save_file({"blocks.1.x": torch.zeros(1)}, str(folder / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    headers.wan_dit("model_set", "s", folder, fix="refetch")            # shards together hold a Wan DiT
    single = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2)}, str(single))
    with pytest.raises(InvalidInput, match=f"the file {single} is not a Wan2.1 DiT"):
        headers.wan_dit("model_set", "s", single, fix="refetch")
    comfy = tmp_path / "wan_comfy.safetensors"
    save_file({"model.diffusion_model.patch_embedding.weight": torch.zeros(2)}, str(comfy))
    headers.wan_dit("model_set", "s", comfy, fix="refetch")             # ComfyUI's prefix is fine


def test_long_path_is_shown_whole():
    path = "/runpod-volume/models/" + "Wan2.1-I2V-14B-720P/" * 8 + "models_t5_umt5-xxl-enc-bf16.pth"
    assert path in str(WanVolumeError("unreadable", field="file", value=path, fix="copy it again"))


def test_overlap_at_half_a_tile_passes_and_above_is_refused():
    rules.tiles(True, 128, 64)
    rules.tiles(True, 64, 32)
    with pytest.raises(InvalidInput) as err:
        rules.tiles(True, 128, 72)
    assert str(err.value).startswith("tile_overlap = 72: ") and "at most half of tile_size 128" in str(err.value)


def test_distill_schedule_with_guidance_is_refused_naming_cfg():
    from wan_engine.sample import schedules

    schedules.check_choice("euler", "distill_4step", 4, 1.0)
    schedules.check_choice("unipc", "auto", 40, 5.0)            # guidance is fine off the distill grid
    with pytest.raises(InvalidInput) as err:
        schedules.check_choice("euler", "distill_4step", 4, 5.0)
    msg = str(err.value)
    assert msg.startswith("cfg = 5.0: schedule distill_4step runs without guidance") and "Fix: use 1.0" in msg
