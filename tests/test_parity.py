"""Parity with diffusers: identical tiny weights and seeds give the same pixels (<= 1/255).

The reference is diffusers' StableDiffusionDepth2ImgPipeline (and StableDiffusionImg2ImgPipeline for a
plain 4-channel model), called as a diffusers user would, with one CPU generator per image seeded
seed + i — depth2img's batch convention, which diffusers supports through a generator list.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline, StableDiffusionImg2ImgPipeline

from depth2img import load_pipeline
from depth2img.pipeline import Pipeline
from depth2img.models.tiny import tiny_components

from ._reference import REFERENCE_SCHEDULERS, diffusers_depth_pipe, reference_scheduler
from .conftest import photo

PROMPT = "A painting of a squirrel eating a burger"

# What each sampler NAME means is written out in tests/_reference.py from diffusers' own classes and
# the names' usual meaning, never read from depth2img's registry: a wrong class or option behind a name
# in the library then shows up as a parity failure.


def reference_pipe(components):
    if components.kind == "depth":
        pipe = StableDiffusionDepth2ImgPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=components.scheduler,
            depth_estimator=components.depth_estimator,
            feature_extractor=components.feature_extractor,
        )
    else:
        pipe = StableDiffusionImg2ImgPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=components.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_reference(pipe, base_scheduler_config, scheduler, image, *, seed, batch, prompt=PROMPT, **kwargs) -> np.ndarray:
    pipe.scheduler = reference_scheduler(scheduler, base_scheduler_config)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    out = pipe(
        prompt=prompt,
        image=image,
        num_images_per_prompt=batch,
        generator=generators if batch > 1 else generators[0],
        output_type="np",
        **kwargs,
    ).images
    return (out * 255).round().astype(np.uint8)


def run_ours(pipe: Pipeline, scheduler, image, *, seed, batch, strength, num_inference_steps, guidance_scale, **fields):
    result = pipe.generate(
        prompt=fields.pop("prompt", PROMPT),
        image=image,
        seed=seed,
        batch_size=batch,
        strength=strength,
        steps=num_inference_steps,
        guidance_scale=guidance_scale,
        scheduler=scheduler,
        **fields,
    )
    return np.stack([np.asarray(im) for im in result.images]), result


@pytest.fixture(scope="module", params=[2, 8], ids=["diffusers-test-vae", "sd-geometry-vae"])
def depth_setup(request):
    components = tiny_components(depth=True, vae_scale_factor=request.param)
    return components, reference_pipe(components), Pipeline(components)


CASES = [
    # (scheduler, image, batch, strength, steps)
    ("pndm", ("astronaut", (32, 32)), 1, 0.8, 4),
    ("pndm", ("chelsea", (45, 37)), 2, 0.75, 5),  # non-square, not a multiple of 8: floored like diffusers
    ("ddim", ("coffee", (64, 40)), 1, 1.0, 3),
    ("ddim", ("astronaut", (40, 56)), 2, 0.6, 5),
    ("dpmpp_2m", ("chelsea", (48, 32)), 1, 0.9, 4),
    ("dpmpp_2m", ("coffee", (32, 48)), 2, 0.5, 6),
]


@pytest.mark.parametrize("scheduler,image,batch,strength,steps", CASES)
def test_depth2img_matches_diffusers(depth_setup, scheduler, image, batch, strength, steps):
    components, reference, ours = depth_setup
    picture = photo(*image)
    kwargs = dict(strength=strength, num_inference_steps=steps, guidance_scale=6.0)
    expected = run_reference(reference, components.scheduler.config, scheduler, picture, seed=7, batch=batch, **kwargs)
    got, result = run_ours(ours, scheduler, picture, seed=7, batch=batch, **kwargs)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert result.seeds == [7 + i for i in range(batch)]
    # The images differ between seeds: the comparison is not trivially between constant pictures.
    if batch > 1:
        assert np.abs(got[0].astype(int) - got[1].astype(int)).max() > 1


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "dpmpp_2m"])
def test_img2img_model_matches_diffusers(scheduler):
    components = tiny_components(depth=False, vae_scale_factor=8)
    reference, ours = reference_pipe(components), Pipeline(components)
    picture = photo("coffee", (48, 32))
    kwargs = dict(strength=0.7, num_inference_steps=4, guidance_scale=7.5)
    expected = run_reference(reference, components.scheduler.config, scheduler, picture, seed=3, batch=2, **kwargs)
    got, result = run_ours(ours, scheduler, picture, seed=3, batch=2, **kwargs)
    assert result.depth_map is None
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_batch_image_is_reproducible_alone(depth_setup):
    _, _, ours = depth_setup
    picture = photo("astronaut", (32, 32))
    batch, _ = run_ours(ours, "ddim", picture, seed=11, batch=3, strength=0.8, num_inference_steps=3, guidance_scale=5.0)
    alone, _ = run_ours(ours, "ddim", picture, seed=13, batch=1, strength=0.8, num_inference_steps=3, guidance_scale=5.0)
    assert np.abs(batch[2].astype(int) - alone[0].astype(int)).max() <= 1


def test_flat_depth_deviates_from_reference_on_purpose(depth_setup):
    """diffusers divides by (max - min) with no epsilon: a flat depth map gives NaN, then a black image.
    depth2img uses a mid-depth plane instead. This test documents both behaviours."""
    components, reference, ours = depth_setup
    picture = photo("astronaut", (32, 32))
    flat = torch.ones(1, 32, 32)
    reference.scheduler = reference_scheduler("ddim", components.scheduler.config)
    ref = reference(prompt=PROMPT, image=picture, depth_map=flat, num_inference_steps=2, output_type="np").images
    assert np.isnan(ref).all()  # as uint8/PIL this becomes a black image
    result = ours.generate(prompt=PROMPT, image=picture, depth_map=flat.numpy()[0], steps=2, scheduler="ddim", seed=0)
    assert any("flat" in w for w in result.warnings)
    assert torch.equal(result.depth_map.normalized, torch.zeros_like(result.depth_map.normalized))
    assert np.asarray(result.images[0]).std() > 0


def test_v_prediction_img2img_model_matches_diffusers():
    """SD 2.x-v style folders: the prediction type comes from the scheduler config, for every sampler."""
    from diffusers import PNDMScheduler

    components = tiny_components(depth=False, vae_scale_factor=8)
    components.scheduler = PNDMScheduler(skip_prk_steps=True, prediction_type="v_prediction")
    reference, ours = reference_pipe(components), Pipeline(components)
    picture = photo("astronaut", (40, 32))
    kwargs = dict(strength=0.8, num_inference_steps=4, guidance_scale=7.5)
    for scheduler in ("pndm", "euler"):
        expected = run_reference(reference, components.scheduler.config, scheduler, picture, seed=5, batch=1, **kwargs)
        got, _ = run_ours(ours, scheduler, picture, seed=5, batch=1, **kwargs)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


# -- every sampler name, the negative prompt and DDIM eta, through the public loader ------------------


@pytest.fixture(scope="module")
def public_setup():
    """``load_pipeline("tiny")`` and a diffusers pipeline made of the very same component objects."""
    pipe = load_pipeline("tiny")
    reference = diffusers_depth_pipe(pipe)
    return pipe, reference


@pytest.mark.parametrize("scheduler", list(REFERENCE_SCHEDULERS))
def test_every_named_scheduler_matches_diffusers(public_setup, scheduler):
    """Each name runs the diffusers class and options it stands for (reference built in this file)."""
    ours, reference = public_setup
    picture = photo("astronaut", (40, 32))
    batch = 2 if scheduler == "euler_a" else 1  # ancestral: the per-image generators feed step noise too
    kwargs = dict(strength=0.75, num_inference_steps=4, guidance_scale=6.0)
    expected = run_reference(reference, ours.scheduler.config, scheduler, picture, seed=21, batch=batch, **kwargs)
    got, _ = run_ours(ours, scheduler, picture, seed=21, batch=batch, **kwargs)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_every_named_scheduler_is_distinct(public_setup):
    """The names are not aliases of one another: each gives its own picture (same seed, same request)."""
    ours, _ = public_setup
    picture = photo("astronaut", (40, 32))
    kwargs = dict(strength=0.75, num_inference_steps=4, guidance_scale=6.0)
    images = {name: run_ours(ours, name, picture, seed=21, batch=1, **kwargs)[0] for name in REFERENCE_SCHEDULERS}
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(images[a], images[b]), (a, b)


def test_negative_prompt_changes_the_image_as_in_diffusers(public_setup):
    ours, reference = public_setup
    picture = photo("chelsea", (48, 32))
    kwargs = dict(strength=0.8, num_inference_steps=4, guidance_scale=7.5)
    results = {}
    for negative in ("", "blurry, low quality, watermark"):
        expected = run_reference(reference, ours.scheduler.config, "ddim", picture, seed=4, batch=1,
                                 negative_prompt=negative, **kwargs)
        got, result = run_ours(ours, "ddim", picture, seed=4, batch=1, negative_prompt=negative, **kwargs)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, negative
        results[negative] = got
    assert np.abs(results[""].astype(int) - results["blurry, low quality, watermark"].astype(int)).max() > 1


def test_ddim_eta_matches_diffusers(public_setup):
    """eta > 0 draws step noise from the same per-image generators as diffusers' generator list."""
    ours, reference = public_setup
    picture = photo("coffee", (48, 32))
    kwargs = dict(strength=0.9, num_inference_steps=4, guidance_scale=6.0)
    expected = run_reference(reference, ours.scheduler.config, "ddim", picture, seed=8, batch=2, eta=0.5, **kwargs)
    got, _ = run_ours(ours, "ddim", picture, seed=8, batch=2, eta=0.5, **kwargs)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    no_eta, _ = run_ours(ours, "ddim", picture, seed=8, batch=2, **kwargs)
    assert np.abs(got.astype(int) - no_eta.astype(int)).max() > 1  # eta did something
