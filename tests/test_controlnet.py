"""ControlNet-depth on SD 1.5 (and SDXL): parity with diffusers' ControlNet pipelines on identical tiny
weights, A1111's knobs (weight, guidance start/end, control modes), the control image, infotext.

The references are diffusers' StableDiffusionControlNet{,Img2Img}Pipeline called as a diffusers user
would (controlnet_conditioning_scale passed explicitly, generator list seeded seed + i); the control
image handed to diffusers is computed here from the depth map (min-max to [0, 1], 3 channels), not by
depth2img.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline

from depth2img import load_pipeline
from depth2img.errors import InvalidRequestError

from ._reference import reference_scheduler
from .conftest import photo

PROMPT = "A painting of a squirrel eating a burger"


def depth_ramp(width: int, height: int) -> np.ndarray:
    """A smooth own depth map (H, W) with structure in both directions, near = large."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return (np.sin(x / 5.0) + 0.7 * np.cos(y / 7.0) + 0.02 * x + 0.5).astype(np.float32)


def control_tensor(depth: np.ndarray) -> torch.Tensor:
    """The A1111/diffusers control image of a depth map given at the output size: min-max to [0, 1], 3 channels."""
    d = torch.from_numpy(depth.astype(np.float64))
    d = (d - d.min()) / (d.max() - d.min())
    return d.float()[None, None].repeat(1, 3, 1, 1)


@pytest.fixture(scope="module")
def sd15():
    pipe = load_pipeline("tiny-sd15", controlnet="tiny-controlnet")
    common = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                  controlnet=pipe.controlnet, scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False)
    img2img = StableDiffusionControlNetImg2ImgPipeline(**common)
    txt2img = StableDiffusionControlNetPipeline(**common)
    for reference in (img2img, txt2img):
        reference.set_progress_bar_config(disable=True)
    return pipe, img2img, txt2img


def run_reference(reference, scheduler, *, seed, batch, **kwargs) -> np.ndarray:
    reference.scheduler = reference_scheduler(scheduler, reference.scheduler.config)
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    out = reference(prompt=PROMPT, num_images_per_prompt=batch, generator=generators if batch > 1 else generators[0],
                    output_type="np", **kwargs).images
    return (out * 255).round().astype(np.uint8)


def run_ours(pipe, scheduler, *, seed, batch, **fields) -> np.ndarray:
    result = pipe.generate(prompt=PROMPT, seed=seed, batch_size=batch, scheduler=scheduler, **fields)
    return np.stack([np.asarray(im) for im in result.images])


def diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


IMG2IMG_CASES = [
    # (scheduler, batch, strength, steps, cfg, weight, start, end, mode)
    ("ddim", 1, 0.8, 4, 7.5, 1.0, 0.0, 1.0, "balanced"),
    ("pndm", 2, 0.75, 5, 6.0, 1.0, 0.0, 1.0, "balanced"),
    ("dpmpp_2m", 1, 0.9, 4, 7.5, 1.7, 0.0, 1.0, "balanced"),
    ("ddim", 1, 1.0, 6, 7.5, 1.0, 0.2, 0.6, "balanced"),  # 6 steps run: the ControlNet acts on step 2 only
    ("euler", 2, 1.0, 4, 7.5, 1.0, 0.0, 1.0, "controlnet"),
    ("ddim", 1, 0.8, 4, 1.0, 0.9, 0.0, 1.0, "controlnet"),  # guidance off: guess mode on the only batch
]


@pytest.mark.parametrize("scheduler,batch,strength,steps,cfg,weight,start,end,mode", IMG2IMG_CASES)
def test_img2img_matches_diffusers(sd15, scheduler, batch, strength, steps, cfg, weight, start, end, mode):
    pipe, reference, _ = sd15
    picture, depth = photo("astronaut", (64, 48)), depth_ramp(64, 48)
    expected = run_reference(reference, scheduler, seed=5, batch=batch, image=picture, control_image=control_tensor(depth),
                             strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                             controlnet_conditioning_scale=weight, control_guidance_start=start,
                             control_guidance_end=end, guess_mode=mode == "controlnet")
    got = run_ours(pipe, scheduler, seed=5, batch=batch, image=picture, depth_map=depth, strength=strength, steps=steps,
                   guidance_scale=cfg, control_weight=weight, control_start=start, control_end=end, control_mode=mode)
    assert got.shape == expected.shape
    assert diff(got, expected) <= 1


@pytest.mark.parametrize("scheduler,batch,weight,end,mode", [
    ("ddim", 1, 1.0, 1.0, "balanced"), ("pndm", 2, 0.6, 0.5, "balanced"), ("ddim", 1, 1.0, 1.0, "controlnet")])
def test_depth_only_matches_diffusers(sd15, scheduler, batch, weight, end, mode):
    pipe, _, reference = sd15
    depth = depth_ramp(48, 64)
    expected = run_reference(reference, scheduler, seed=9, batch=batch, image=control_tensor(depth), num_inference_steps=4,
                             guidance_scale=7.5, controlnet_conditioning_scale=weight, control_guidance_end=end,
                             guess_mode=mode == "controlnet", height=64, width=48)
    got = run_ours(pipe, scheduler, seed=9, batch=batch, depth_map=depth, steps=4, guidance_scale=7.5,
                   control_weight=weight, control_end=end, control_mode=mode)
    assert got.shape == expected.shape
    assert diff(got, expected) <= 1


def test_prompt_mode_is_soft_injection_on_diffusers(sd15):
    """"My prompt is more important" has no diffusers flag: the reference is diffusers' pipeline with its
    ControlNet's forward wrapped as sd-webui-controlnet's hook does: its outputs (down residuals, then the
    middle one) zipped with the 13 scales 0.825 ** (12 - i) (SD 1.5: mid 1.0; shorter lists take the first)."""
    pipe, reference, _ = sd15
    picture, depth = photo("chelsea", (48, 48)), depth_ramp(48, 48)
    controlnet = pipe.controlnet
    original = controlnet.forward

    def soft(*args, **kwargs):
        down, mid = original(*args, **kwargs)
        scales = [0.825 ** float(12 - i) for i in range(13)]
        outputs = [c * s for c, s in zip([*down, mid], scales)]
        return outputs[:-1], outputs[-1]

    controlnet.forward = soft
    try:
        expected = run_reference(reference, "ddim", seed=3, batch=1, image=picture, control_image=control_tensor(depth),
                                 strength=1.0, num_inference_steps=4, guidance_scale=7.5,
                                 controlnet_conditioning_scale=2.0)
    finally:
        del controlnet.forward
    got = run_ours(pipe, "ddim", seed=3, batch=1, image=picture, depth_map=depth, strength=1.0, steps=4,
                   guidance_scale=7.5, control_weight=2.0, control_mode="prompt")
    assert diff(got, expected) <= 1


def test_every_knob_changes_the_picture(sd15):
    """Weight, start/end and each control mode act (the tiny ControlNet is not inert), and so does the depth."""
    pipe = sd15[0]
    picture, depth = photo("coffee", (48, 48)), depth_ramp(48, 48)
    base = dict(image=picture, depth_map=depth, strength=0.9, steps=4, guidance_scale=7.5)
    default = run_ours(pipe, "ddim", seed=1, batch=1, **base)
    variants = {
        "weight": dict(control_weight=0.3), "start": dict(control_start=0.5), "end": dict(control_end=0.5),
        "controlnet": dict(control_mode="controlnet"), "prompt": dict(control_mode="prompt"),
        "depth": dict(depth_map=np.random.default_rng(0).random((48, 48)).astype(np.float32)),
    }
    for name, change in variants.items():
        other = run_ours(pipe, "ddim", seed=1, batch=1, **{**base, **change})
        assert diff(other, default) > 1, name


def test_control_fields_are_refused_without_a_controlnet(tiny_pipe):
    with pytest.raises(InvalidRequestError, match="control_weight.*without a ControlNet"):
        tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), steps=2, control_weight=0.5)
    with pytest.raises(InvalidRequestError, match="control_mode.*without a ControlNet"):
        load_pipeline("tiny-img2img").generate(prompt="x", image=photo("astronaut", (32, 32)), steps=2,
                                               control_mode="prompt")


def test_sd2_depth_controls_are_refused_with_a_controlnet(sd15):
    with pytest.raises(InvalidRequestError, match="control_end"):
        sd15[0].generate(prompt="x", depth_map=depth_ramp(32, 32), steps=2, depth_end=0.5)


def test_start_must_be_below_end():
    from depth2img.request import GenerationRequest

    with pytest.raises(InvalidRequestError, match="control_start 0.6 must be below control_end 0.4"):
        GenerationRequest(depth_map="d.png", control_start=0.6, control_end=0.4).validate()


@pytest.mark.parametrize("batch,strength,weight,end,mode", [
    (1, 0.8, 1.0, 1.0, "balanced"), (2, 0.9, 1.5, 0.5, "balanced"), (1, 1.0, 1.0, 1.0, "controlnet")])
def test_sdxl_img2img_matches_diffusers(batch, strength, weight, end, mode):
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    pipe = load_pipeline("tiny-sdxl", controlnet="tiny-controlnet-sdxl")
    reference = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, controlnet=pipe.controlnet, scheduler=pipe.scheduler)
    reference.set_progress_bar_config(disable=True)
    picture, depth = photo("chelsea", (64, 48)), depth_ramp(64, 48)
    expected = run_reference(reference, "euler", seed=6, batch=batch, image=picture, control_image=control_tensor(depth),
                             negative_prompt="", strength=strength, num_inference_steps=4, guidance_scale=5.0,
                             controlnet_conditioning_scale=weight, control_guidance_end=end,
                             guess_mode=mode == "controlnet")
    got = run_ours(pipe, "euler", seed=6, batch=batch, image=picture, depth_map=depth, strength=strength, steps=4,
                   guidance_scale=5.0, control_weight=weight, control_end=end, control_mode=mode)
    assert got.shape == expected.shape
    assert diff(got, expected) <= 1
    if batch == 1 and mode == "balanced":  # the ControlNet acts: weight 0 gives another picture
        off = run_ours(pipe, "euler", seed=6, batch=1, image=picture, depth_map=depth, strength=strength, steps=4,
                       guidance_scale=5.0, control_weight=0.0)
        assert diff(off, got) > 1
