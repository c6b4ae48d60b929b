"""The sampler's fast path on the tiny model: schedules, DiT evaluation counts, x0 previews, fit,
the same latents as diffusers' own pipeline for UniPC, the lock and the offload-hook release."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_DISTILL_LORA, TINY_LORA, tiny_request
from wan_engine.sample import denoise, sampling, schedules
from wan_engine.lora import apply as lora
from wan_engine.errors import InvalidInput
from test_engine_sampling import image  # noqa: F401  (fixture; `loaded` is in conftest)

FAST = dict(sampler="euler", schedule="distill_4step", steps=4, cfg=1.0)


class DitCalls:
    """Records every forward call of the DiT with its timestep (independent of the engine's count)."""

    def __init__(self, transformer):
        self.timesteps: list[float] = []
        self.handle = transformer.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, _args, kwargs):
        self.timesteps.append(float(kwargs["timestep"][0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_distill_schedule_is_lightx2vs_exactly():
    sig = schedules.distill_sigmas()
    assert sig.tolist() == pytest.approx([1.0, 0.9375, 5 / 6, 0.625, 0.0], abs=1e-12)
    # the same grid as uniform timesteps 1000/750/500/250 shifted with shift 5
    assert torch.allclose(schedules.euler_sigmas(4, 5.0), sig)


@pytest.mark.parametrize("over,field", [
    (dict(sampler="dpm"), "sampler"), (dict(schedule="karras"), "schedule"),
    (dict(sampler="unipc", schedule="distill_4step", steps=4, cfg=1.0), "sampler"),
    (dict(sampler="euler", schedule="distill_4step", steps=6, cfg=1.0), "steps"), (dict(fit="stretch"), "fit"),
])
def test_bad_sampler_choices_name_field_and_fix(over, field):
    with pytest.raises(InvalidInput) as err:
        sampling.check_request(tiny_request(**over))
    assert str(err.value).startswith(f"{field} = ") and "Fix:" in str(err.value)


def test_unipc_loop_gives_the_pipelines_latents_bit_for_bit(loaded, image):
    from diffusers import UniPCMultistepScheduler

    req, pipe = tiny_request(), loaded.pipe
    start = sampling.fit_image(image, req.width, req.height)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=req.shift)
    ref = pipe(image=start, prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height,
               width=req.width, num_frames=req.frames, num_inference_steps=req.steps,
               guidance_scale=req.cfg, generator=torch.Generator().manual_seed(req.seed),
               output_type="latent", max_sequence_length=512, return_dict=False)[0]
    cond = denoise.prepare(pipe, start, req.prompt, req.negative_prompt, req.width, req.height,
                           req.frames, req.cfg, req.seed)
    stepper = schedules.make_stepper("unipc", "auto", req.steps, req.shift, pipe.scheduler.config,
                                     torch.device("cpu"))
    assert torch.equal(denoise.denoise(pipe.transformer, cond, stepper, req.cfg), ref)


@pytest.mark.parametrize("cfg,per_step", [(1.0, 1), (5.0, 2)])
def test_dit_evaluations_per_step(loaded, image, cfg, per_step, caplog):
    caplog.set_level("INFO", logger="wan_engine.sample.sampling")
    with DitCalls(loaded.pipe.transformer) as calls:
        # distill_4step refuses guidance; Euler at shift 5 over 4 steps walks the same sigmas
        over = {"cfg": cfg} if cfg == 1.0 else {"cfg": cfg, "schedule": "auto", "shift": 5.0}
        sampling.sample(loaded, image, tiny_request(**(FAST | over)))
    assert len(calls.timesteps) == 4 * per_step
    expected = [1000.0, 937.5, 1000 * 5 / 6, 625.0]
    assert calls.timesteps[::per_step] == pytest.approx(expected, rel=1e-6)
    assert f"with {4 * per_step} DiT evaluations" in caplog.text
    assert "sigmas 1, 0.9375, 0.8333, 0.625, 0" in caplog.text


def test_fast_run_with_both_loras_changes_the_video(loaded, image, tiny_volume):
    lora.activate(loaded, ())
    base = sampling.sample(loaded, image, tiny_request(**FAST))
    uses = (lora.LoraUse(str(tiny_volume / TINY_DISTILL_LORA), 1.0), lora.LoraUse(str(tiny_volume / TINY_LORA), 1.0))
    lora.activate(loaded, uses)
    both = sampling.sample(loaded, image, tiny_request(**FAST))
    lora.activate(loaded, uses[:1])
    distill_only = sampling.sample(loaded, image, tiny_request(**FAST))
    lora.activate(loaded, ())
    assert np.isfinite(both).all()
    assert not np.allclose(both, base, atol=1e-3) and not np.allclose(both, distill_only, atol=1e-3)


def test_previews_get_the_denoised_estimate(loaded, image):
    seen = []
    final = {}
    orig = denoise.denoise

    def spy(*args, **kwargs):
        final["latents"] = orig(*args, **kwargs)
        return final["latents"]

    denoise.denoise = spy
    try:
        sampling.sample(loaded, image, tiny_request(**FAST), on_step=lambda i, n, x0: seen.append((i, n, x0)))
    finally:
        denoise.denoise = orig
    assert [(i, n) for i, n, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # Euler's last step goes to sigma 0, where the latents are the denoised estimate itself.
    assert torch.allclose(seen[-1][2], final["latents"], atol=1e-6)
    assert not torch.allclose(seen[0][2], seen[1][2])


def test_fit_keep_pad_and_crop(loaded, image):
    wide = Image.new("RGB", (300, 100), "red")
    assert sampling.output_size(wide.size, tiny_request(fit="keep")) == (96, 32)   # 3:1 at 64x48 px
    assert sampling.output_size(wide.size, tiny_request(fit="pad")) == (64, 48)
    padded = np.asarray(sampling.fit_image(wide, 64, 48, "pad"))
    assert padded.shape == (48, 64, 3)
    assert padded[:5].max() == 0 and padded[-5:].max() == 0      # black bars above and below
    assert padded[24, 32, 0] > 200                                # the photo in the middle
    cropped = np.asarray(sampling.fit_image(wide, 64, 48, "crop"))
    assert cropped[:5, :, 0].min() > 200                          # no bars
    frames = sampling.sample(loaded, image, tiny_request(fit="keep"))   # 120x90 photo, 4:3
    assert frames.shape[1:3] == sampling.output_size(image.size, tiny_request(fit="keep"))[::-1]


def test_lock_held_during_sampling_and_hooks_freed_on_error(loaded, image, monkeypatch):
    freed = []
    monkeypatch.setattr(loaded.pipe, "maybe_free_model_hooks", lambda: freed.append(1))
    other_got_lock = []

    def on_step(i, n, x0):
        t = threading.Thread(target=lambda: other_got_lock.append(loaded.lock.acquire(timeout=0.2)))
        t.start()
        t.join()
        raise KeyboardInterrupt   # what an interrupt looks like to the loop

    with pytest.raises(KeyboardInterrupt):
        sampling.sample(loaded, image, tiny_request(**FAST), on_step=on_step)
    assert other_got_lock == [False] and freed == [1]
