"""Depth controls, depth-only generation, resize modes, eta and float16, end to end through ``generate``.

What the UNet received is recorded with a forward pre-hook on ``pipe.unet`` (channel 4 = depth); the
expected values are computed here with numpy / torch / diffusers, never with depth2img's helpers.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from depth2img import load_pipeline

from ._reference import diffusers_depth_pipe, minmax_bicubic, reference_scheduler, unet_inputs
from .conftest import photo

BASE = {"prompt": "a stone statue", "steps": 4, "seed": 3, "scheduler": "ddim", "strength": 0.8}


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images]).astype(int)


@pytest.fixture(scope="module")
def coffee():
    return photo("coffee", (64, 48))


def depth_channel(calls) -> list[torch.Tensor]:
    return [sample[:, 4] for sample, _ in calls]


# -- depth_strength / depth_end ------------------------------------------------------------------


def test_depth_strength_scales_the_unets_depth_channel(tiny_pipe, coffee):
    """For strength s the UNet's 5th channel is s x the default run's channel, at every call."""
    with unet_inputs(tiny_pipe) as full:
        tiny_pipe.generate(image=coffee, **BASE)
    with unet_inputs(tiny_pipe) as weak:
        tiny_pipe.generate(image=coffee, depth_strength=0.3, **BASE)
    assert len(full) == len(weak) == 3
    for d_full, d_weak in zip(depth_channel(full), depth_channel(weak)):
        assert d_full.abs().max() > 0.5
        assert torch.allclose(d_weak, 0.3 * d_full, atol=1e-6)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.3, 0.5, 0.75, 1.0])
def test_depth_end_feeds_depth_to_the_first_ceil_f_n_steps(tiny_pipe, coffee, scheduler, fraction):
    """5 steps at strength 1 run n = 5 UNet calls; the first ceil(f·n) get the depth, the rest the flat 0 plane."""
    with unet_inputs(tiny_pipe) as calls:
        tiny_pipe.generate(image=coffee, **{**BASE, "steps": 5, "strength": 1.0, "scheduler": scheduler}, depth_end=fraction)
    fed = [bool(d.abs().max() > 0) for d in depth_channel(calls)]
    k = math.ceil(fraction * 5)
    assert fed == [True] * k + [False] * (5 - k)


# -- depth_clip, 16-bit maps, only_masked crops of another-size own map --------------------------


def test_depth_clip_is_a_percentile_clip_then_renormalise(tiny_pipe, coffee):
    rng = np.random.default_rng(0)
    own = rng.gamma(2.0, 1.0, size=(50, 70)).astype(np.float32)  # skewed: clipping matters
    with unet_inputs(tiny_pipe) as calls:
        result = tiny_pipe.generate(image=coffee, depth_map=own, depth_clip=(5, 60), **BASE)
    far, near = np.percentile(own, [5, 60])
    clipped = np.clip(own, far, near)
    assert np.allclose(result.depth_map.raw, clipped, atol=1e-6)
    expected = minmax_bicubic(clipped, (6, 8))
    assert torch.allclose(result.depth_map.normalized, expected, atol=1e-5)
    assert torch.allclose(calls[0][0][:1, 4:], expected, atol=1e-5)  # what the UNet got
    assert not torch.allclose(expected, minmax_bicubic(own, (6, 8)), atol=1e-2)  # the clip mattered


@pytest.mark.parametrize("as_file", [True, False], ids=["png-bytes", "uint16-array"])
def test_16_bit_own_map_keeps_its_levels(tiny_pipe, coffee, as_file):
    levels = (np.arange(48 * 64, dtype=np.float64) * 65535 / (48 * 64 - 1)).round().astype(np.uint16).reshape(48, 64)
    source = levels
    if as_file:
        buffer = io.BytesIO()
        Image.fromarray(levels).save(buffer, format="PNG")  # mode I;16
        source = buffer.getvalue()
    result = tiny_pipe.generate(image=coffee, depth_map=source, **BASE)
    raw = result.depth_map.raw
    assert len(np.unique(raw)) > 256
    assert np.corrcoef(raw.ravel(), levels.ravel().astype(np.float64))[0, 1] > 0.9999
    expected = minmax_bicubic(levels.astype(np.float32) / 65535, (6, 8))  # not an 8-bit quantised map
    assert torch.allclose(result.depth_map.normalized, expected, atol=1e-5)


# -- depth-only generation with samplers whose init_noise_sigma is not 1 ---------------------------


@pytest.mark.parametrize("scheduler", ["euler", "lms"])
def test_depth_only_matches_a_hand_assembled_diffusers_loop(tiny_pipe, scheduler):
    """No image: latents = randn(seed) x init_noise_sigma, then the diffusers denoising loop with the
    own map bicubic-resized and min-max normalised as channel 4, CFG on [uncond, cond]."""
    rng = np.random.default_rng(1)
    own = rng.random((48, 64)).astype(np.float32)
    prompt, steps, guidance, seed = "a stone statue", 3, 7.5, 11
    result = tiny_pipe.generate(prompt=prompt, depth_map=own, steps=steps, guidance_scale=guidance, seed=seed, scheduler=scheduler)

    reference = diffusers_depth_pipe(tiny_pipe)
    sched = reference_scheduler(scheduler, tiny_pipe.scheduler.config)
    sched.set_timesteps(steps)
    assert float(sched.init_noise_sigma) > 2.0  # the case under test
    with torch.no_grad():
        cond, uncond = reference.encode_prompt(prompt, "cpu", 1, True, negative_prompt="")
        text = torch.cat([uncond, cond])
        depth = minmax_bicubic(own, (6, 8)).repeat(2, 1, 1, 1)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = randn_tensor((1, 4, 6, 8), generator=generator) * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 2), t)
            eps = tiny_pipe.unet(torch.cat([x, depth], dim=1), t, encoder_hidden_states=text).sample
            eps_u, eps_c = eps.chunk(2)
            latents = sched.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
        image = tiny_pipe.vae.decode(latents / tiny_pipe.vae.config.scaling_factor).sample
    expected = np.round((image[0].permute(1, 2, 0).numpy() / 2 + 0.5).clip(0, 1) * 255)
    assert np.abs(pixels(result)[0] - expected).max() <= 1


# -- resize modes through the pipeline, DDIM eta ---------------------------------------------------


@pytest.mark.parametrize("mode", ["crop_and_resize", "just_resize"])
def test_resize_mode_equals_generating_from_the_image_prepared_here(tiny_pipe, mode):
    """A1111's ``images.resize_image`` on a 96x64 photo to 48x48: crop_and_resize (mode 1) = LANCZOS-resize
    the whole picture to cover (72x48), then paste it centred (keeps x 12..60); just_resize (mode 0) =
    LANCZOS stretch. Generating from that picture gives the same result, depth estimate included."""
    image = photo("coffee", (96, 64))
    if mode == "crop_and_resize":
        prepared = image.resize((72, 48), Image.Resampling.LANCZOS).crop((12, 0, 60, 48))
    else:
        prepared = image.resize((48, 48), Image.Resampling.LANCZOS)
    via_mode = tiny_pipe.generate(image=image, width=48, height=48, resize_mode=mode, **BASE)
    direct = tiny_pipe.generate(image=prepared, **BASE)
    assert np.abs(pixels(via_mode) - pixels(direct)).max() <= 1
    assert torch.allclose(via_mode.depth_map.normalized, direct.depth_map.normalized, atol=1e-5)


def test_resize_modes_differ_from_each_other(tiny_pipe):
    image = photo("coffee", (96, 64))
    out = {m: pixels(tiny_pipe.generate(image=image, width=48, height=48, resize_mode=m, **BASE))
           for m in ("just_resize", "crop_and_resize", "resize_and_fill")}
    assert not np.array_equal(out["just_resize"], out["crop_and_resize"])
    assert not np.array_equal(out["crop_and_resize"], out["resize_and_fill"])


def test_ddim_eta_changes_the_result_and_zero_is_the_default(tiny_pipe, coffee):
    default = pixels(tiny_pipe.generate(image=coffee, **BASE))
    zero = pixels(tiny_pipe.generate(image=coffee, eta=0.0, **BASE))
    half = pixels(tiny_pipe.generate(image=coffee, eta=0.5, **BASE))
    assert np.array_equal(default, zero)
    assert np.abs(half - default).max() > 1


# -- float16 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_pipe():
    return load_pipeline("tiny", dtype="float16")


def test_float16_runs_on_cpu_and_stays_close_to_float32(tiny_pipe, fp16_pipe):
    """CPU float16 works in this torch. Tolerance: fp16 keeps ~3.3 significant digits (eps 2^-10), so
    after a few UNet/VAE layers the pixels move by a few 1/255 at most; the same picture, not the same
    bits. A wrong dtype path (NaN, black, another seed) would be far outside it."""
    image = photo("coffee", (32, 32))
    fields = {**BASE, "guidance_scale": 5.0, "steps": 2, "strength": 1.0}
    assert fp16_pipe.unet.dtype == torch.float16 and fp16_pipe.vae.dtype == torch.float16
    with unet_inputs(fp16_pipe) as calls:
        low = fp16_pipe.generate(image=image, **fields)
    assert all(sample.dtype == torch.float16 for sample, _ in calls)  # really ran in half precision
    full = tiny_pipe.generate(image=image, **fields)
    a, b = pixels(low).astype(float), pixels(full).astype(float)
    assert np.isfinite(a).all() and a.std() > 0
    diff = np.abs(a - b)
    assert diff.mean() < 2.0 and diff.max() <= 24
