"""Presets: "reference" is diffusers' depth2img defaults (pndm, 50 steps) bit for bit; "default" is DPM-Solver++
2M Karras at 20 steps; what the user gives wins; every edge gets the field from the spec; A1111's API keeps
A1111's own defaults. References: diffusers' StableDiffusionDepth2ImgPipeline called with its own defaults,
diffusers' DPMSolverMultistepScheduler, A1111's documented API defaults and labels written out literally.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from typer.testing import CliRunner

from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline
from depth2img.request import GenerationRequest

from ._reference import diffusers_depth_pipe
from .conftest import photo

PROMPT = "a wooden house"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_components(depth=True, vae_scale_factor=2))


def as_array(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images])


def diffusers_run(pipe, image, **kwargs) -> np.ndarray:
    reference = diffusers_depth_pipe(pipe)
    out = reference(prompt=PROMPT, image=image, generator=torch.Generator("cpu").manual_seed(4), output_type="np",
                    **kwargs).images
    return (out * 255).round().astype(np.uint8)


def test_reference_preset_is_diffusers_defaults(pipe):
    image = photo("astronaut", (32, 32))
    ours = pipe.generate(GenerationRequest(preset="reference", prompt=PROMPT, image=image, seed=4))
    expected = diffusers_run(pipe, image)  # diffusers' own defaults: the model's scheduler (PLMS), 50 steps, 0.8, 7.5
    assert np.abs(as_array(ours).astype(int) - expected.astype(int)).max() <= 1
    explicit = pipe.generate(prompt=PROMPT, image=image, seed=4, steps=50, scheduler="pndm")
    np.testing.assert_array_equal(as_array(ours), as_array(explicit))
    assert "Steps: 50, Sampler: PLMS," in ours.infotexts[0]


def test_default_preset_is_dpmpp_2m_karras_20_steps(pipe):
    image = photo("chelsea", (32, 32))
    ours = pipe.generate(prompt=PROMPT, image=image, seed=4)
    scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                        solver_order=2, use_karras_sigmas=True)
    reference = diffusers_depth_pipe(pipe)
    reference.scheduler = scheduler
    out = reference(prompt=PROMPT, image=image, generator=torch.Generator("cpu").manual_seed(4), output_type="np",
                    num_inference_steps=20).images
    expected = (out * 255).round().astype(np.uint8)
    assert np.abs(as_array(ours).astype(int) - expected.astype(int)).max() <= 1
    assert "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras," in ours.infotexts[0]
    assert ours.request.steps == 20 and ours.request.scheduler == "dpmpp_2m_karras"


@pytest.mark.parametrize("preset", ["default", "reference"])
def test_what_the_user_gives_wins_over_the_preset(preset):
    given = GenerationRequest(prompt="x", image="a.png", preset=preset, steps=7, scheduler="euler").resolved()
    assert (given.steps, given.scheduler) == (7, "euler")
    only_steps = GenerationRequest(prompt="x", image="a.png", preset=preset, steps=9).resolved()
    assert only_steps.steps == 9 and only_steps.scheduler == {"default": "dpmpp_2m_karras", "reference": "pndm"}[preset]


def test_a_strength_check_sees_the_preset_steps():
    from depth2img.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="with 20 steps runs no denoising step"):
        GenerationRequest(prompt="x", image="a.png", strength=0.04).validate()  # int(20 * 0.04) = 0
    GenerationRequest(prompt="x", image="a.png", strength=0.04, preset="reference").validate()  # int(50 * 0.04) = 2


def test_edges_get_preset_from_the_spec():
    from depth2img.cli import app
    from depth2img.server.schemas import JobRequest
    from depth2img.ui import form

    help_text = CliRunner().invoke(app, ["generate", "--help"]).output
    assert "--preset" in help_text
    schema = JobRequest.model_json_schema()["properties"]
    assert schema["preset"]["default"] == "default" and set(schema["preset"]["enum"]) == {"default", "reference"}
    assert schema["steps"]["default"] is None and {"type": "null"} in schema["steps"]["anyOf"]
    assert form.to_fields(["steps", "scheduler", "preset"], [0, "", "reference"]) == {
        "steps": None, "scheduler": None, "preset": "reference"}


def test_a1111_api_keeps_a1111_defaults_for_omitted_fields():
    from depth2img.server.sdapi import Img2ImgRequest, translate

    buffer = io.BytesIO()
    photo("astronaut", (16, 16)).save(buffer, format="PNG")
    body = Img2ImgRequest(init_images=[base64.b64encode(buffer.getvalue()).decode()], prompt="p")
    fields, *_ = translate(body, None)
    request = GenerationRequest(**fields, image=b"").resolved()
    # A1111's StableDiffusionProcessingImg2Img API defaults: 50 steps, sampler_index "Euler", cfg 7, strength 0.75
    assert (request.steps, request.scheduler, request.guidance_scale, request.strength) == (50, "euler", 7.0, 0.75)
