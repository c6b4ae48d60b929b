"""The two-expert engine against diffusers' own WanImageToVideoPipeline, in every layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, tiny_request
from test_comfy_by_content import NEEDS_GGUF_DIFFUSERS
from wan22_fixtures import wan22_volumes, wan22_components  # noqa: F401 (fixtures)
from wan_engine import tiny_wan22
from wan_engine.errors import InvalidInput
from wan_engine.load import assemble
from wan_engine.sample import denoise, experts, sampling
from wan_engine.sample.decode import TileSettings
from wan_engine.store.scan import SCANS

WHOLE = TileSettings(False, 64, 32)      # diffusers decodes whole frames
# The latents are bit-identical (same loop, same calls); the frames differ by float rounding of the
# decode and its post-processing (at most ~1e-7 seen), far below what any change of expert does.
ATOL = 1e-5


def same_video(ours, ref) -> None:
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def image():
    return Image.open(REPO / "assets" / "two_people.png")


def the_set(models_dir):
    (found,) = [s for scan in SCANS for s in scan.scan(models_dir)]
    return found


def reference(components, image, req, boundary, swap=False):
    """diffusers' pipeline: transformer = high, transformer_2 = low, the same seed and inputs."""
    parts = dict(components)
    if swap:
        parts["transformer"], parts["transformer_2"] = parts["transformer_2"], parts["transformer"]
    pipe = tiny_wan22.pipeline(parts, boundary)
    start = sampling.fit_image(image, req.width, req.height)
    return pipe(image=start, prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height,
                width=req.width, num_frames=req.frames, num_inference_steps=req.steps,
                guidance_scale=req.cfg, guidance_scale_2=req.cfg_low,
                generator=torch.Generator().manual_seed(req.seed), output_type="np").frames[0]


@pytest.fixture(autouse=True)
def clean():
    assemble.release()
    yield
    assemble.release()


# boundary 0.95 on 4 UniPC steps (t = 999, 937, 833, 625): 1 high step, 3 low; 0.001: all high;
# 1.0: all low (t never reaches 1000)
@pytest.mark.parametrize("boundary", [0.95, 0.001, 1.0])
def test_video_equals_diffusers_two_expert_pipeline(wan22_volumes, wan22_components, image, boundary):
    req = tiny_request(steps=4, cfg=5.0, cfg_low=3.0, boundary=boundary, tiles=WHOLE)
    loaded = assemble.load(the_set(wan22_volumes / "diffusers"), "fp32")
    ours = sampling.sample(loaded, image, req)
    ref = reference(wan22_components, image, req, boundary)
    same_video(ours, ref)


@pytest.mark.parametrize("layout", ["original", "comfy", "split", "kijai"])
def test_every_layout_gives_the_same_video(wan22_volumes, wan22_components, image, layout):
    req = tiny_request(steps=3, cfg=4.0, cfg_low=2.0, boundary=0.9, tiles=WHOLE)
    loaded = assemble.load(the_set(wan22_volumes / layout), "fp32", trust_pth=True)
    assert loaded.pipe.image_encoder is None and loaded.pipe.transformer_2 is not None
    same_video(sampling.sample(loaded, image, req), reference(wan22_components, image, req, 0.9))


@NEEDS_GGUF_DIFFUSERS
def test_gguf_experts_run_close_to_the_reference(wan22_volumes, wan22_components, image):
    req = tiny_request(steps=3, cfg=4.0, cfg_low=2.0, boundary=0.9, tiles=WHOLE)
    loaded = assemble.load(the_set(wan22_volumes / "gguf"), "fp32")
    ours = sampling.sample(loaded, image, req)
    ref = reference(wan22_components, image, req, 0.9)
    assert np.isfinite(ours).all() and np.abs(ours - ref).mean() < 0.02     # Q8_0 rounding only


def test_swapping_the_experts_changes_the_video(wan22_components, image):
    req = tiny_request(steps=4, cfg=5.0, cfg_low=5.0, boundary=0.9, tiles=WHOLE)
    straight = reference(wan22_components, image, req, 0.9)
    swapped = reference(wan22_components, image, req, 0.9, swap=True)
    assert np.abs(straight - swapped).max() > 100 * ATOL


def test_guidance_runs_per_expert_with_the_negative_prompt(wan22_volumes, image):
    """cfg 1 high, cfg 3.5 low: one DiT call per high step, two per low step (diffusers would skip
    guidance in both stages: its switch looks at the first scale only)."""
    loaded = assemble.load(the_set(wan22_volumes / "diffusers"), "fp32")
    req = tiny_request(steps=4, cfg=1.0, cfg_low=3.5, boundary=0.9)
    calls = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(loaded.pipe, n).register_forward_pre_hook(
        lambda *_, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls]
    seen = []
    real = denoise.step
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(denoise, "step", lambda m, cond, *a, **k: seen.append(cond.negative_embeds) or real(m, cond, *a, **k))
            sampling.sample(loaded, image, req)
    finally:
        for h in hooks:
            h.remove()
    plan = experts.schedule_for(req).segments(torch.tensor([999, 937, 833, 625]))
    assert plan == [("transformer", [0, 1]), ("transformer_2", [2, 3])]     # t >= 900 is high
    assert calls == {"transformer": 2, "transformer_2": 4}
    assert all(neg is not None for neg in seen)


def test_wan22_inputs_refused_on_a_wan21_set(loaded, image):
    with pytest.raises(InvalidInput) as err:
        sampling.sample(loaded, image, tiny_request(boundary=0.9))
    assert str(err.value).startswith("boundary = 0.9") and "Wan2.1 set" in str(err.value)
    with pytest.raises(InvalidInput, match="cfg_low_noise"):
        sampling.sample(loaded, image, tiny_request(cfg_low=3.5))


def test_boundary_and_second_guidance_ranges():
    for over, field in ((dict(boundary=0.0), "boundary"), (dict(boundary=1.5), "boundary"),
                        (dict(cfg_low=0.5), "cfg_low_noise")):
        with pytest.raises(InvalidInput) as err:
            sampling.check_request(tiny_request(**over))
        assert str(err.value).startswith(f"{field} = ")
