"""processor_res and pixel perfect (sd-webui-controlnet's "Preprocessor resolution" and "Pixel Perfect"):
a ControlNet's depth estimator runs at the requested short side, then the map is resized to the output.

References, written out here independently of depth2img's code: sd-webui-controlnet's
``pixel_perfect_resolution`` (internal_controlnet/external_code.py) and the size its
``resize_image_with_pad`` gives a preprocessor (short side = resolution, padded up to a multiple of 64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img import load_pipeline
from depth2img.backends.controlnet import pixel_perfect_resolution
from depth2img.errors import InvalidRequestError

MODES = {"just_resize": "RESIZE", "crop_and_resize": "INNER_FIT", "resize_and_fill": "OUTER_FIT"}


def a1111_pixel_perfect(raw_h: int, raw_w: int, target_h: int, target_w: int, resize_mode: str) -> int:
    """sd-webui-controlnet's pixel_perfect_resolution, restated."""
    k0 = float(target_h) / float(raw_h)
    k1 = float(target_w) / float(raw_w)
    if resize_mode == "OUTER_FIT":
        estimation = min(k0, k1) * float(min(raw_h, raw_w))
    else:
        estimation = max(k0, k1) * float(min(raw_h, raw_w))
    return int(np.round(estimation))


def a1111_preprocessor_input(raw_h: int, raw_w: int, resolution: int) -> tuple[int, int]:
    """(H, W) the preprocessor sees in sd-webui-controlnet's resize_image_with_pad: k = res / min(H, W),
    H_target = round(H * k), padded up to a multiple of 64."""
    k = float(resolution) / float(min(raw_h, raw_w))
    h, w = int(np.round(float(raw_h) * k)), int(np.round(float(raw_w) * k))
    return math.ceil(h / 64) * 64, math.ceil(w / 64) * 64


@pytest.mark.parametrize("raw,target", [((512, 768), (512, 768)), ((600, 400), (512, 512)),
                                        ((1080, 1920), (768, 512)), ((333, 500), (640, 640)), ((64, 96), (96, 64))])
@pytest.mark.parametrize("mode", list(MODES))
def test_pixel_perfect_is_a1111s_rule(raw, target, mode):
    assert pixel_perfect_resolution(raw, target, mode) == a1111_pixel_perfect(*raw, *target, MODES[mode])


@pytest.fixture(scope="module")
def spied():
    """The tiny SD 1.5 + ControlNet pipeline with its estimator's inputs recorded."""
    pipe = load_pipeline("tiny-sd15", controlnet="tiny-controlnet")
    seen: list[tuple[int, int]] = []
    estimator = pipe.depth_estimator
    forward = estimator.forward

    def spy(pixel_values, *args, **kwargs):
        seen.append(tuple(pixel_values.shape[-2:]))
        return forward(pixel_values, *args, **kwargs)

    estimator.forward = spy
    return pipe, seen


def photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("fields,expected_res", [
    ({}, 512),  # the default, A1111's for depth_midas
    ({"processor_res": 128}, 128),
    ({"processor_res": 100}, 100),
    ({"pixel_perfect": True}, None),  # from the output size: the rule above
    ({"pixel_perfect": True, "control_resize": "resize_and_fill"}, None),
])
def test_the_estimator_runs_at_the_requested_resolution(spied, fields, expected_res):
    pipe, seen = spied
    image = photo(96, 64)  # (W, H); the output is the image's size
    seen.clear()
    pipe.depth_cache.clear()  # each case must reach the estimator (equal resolutions share a cached estimate)
    result = pipe.generate(prompt="x", image=image, steps=2, seed=1, **fields)
    if expected_res is None:
        expected_res = a1111_pixel_perfect(64, 96, 64, 96, MODES[fields.get("control_resize", "crop_and_resize")])
    # A1111's preprocessor input has short side ceil64(res); the tiny estimator is a DPT-Hybrid, which
    # transformers runs on square inputs only, so depth2img squashes the image to that square.
    short = min(a1111_preprocessor_input(64, 96, expected_res))
    assert short == math.ceil(expected_res / 64) * 64
    assert seen == [(short, short)]
    assert result.depth_map.normalized.shape[-2:] == (64, 96)  # resized to the output size
    assert result.images[0].size == (96, 64)


def test_the_resolution_changes_the_control_image(spied):
    pipe, seen = spied
    image = photo(96, 64)
    seen.clear()
    pipe.depth_cache.clear()
    low = pipe.generate(prompt="x", image=image, steps=2, seed=1, processor_res=64).depth_map.normalized
    high = pipe.generate(prompt="x", image=image, steps=2, seed=1, processor_res=256).depth_map.normalized
    assert not torch.equal(low, high)
    assert len(seen) == 2  # two estimates: the cache keeps them apart by resolution


def test_processor_res_without_a_controlnet_is_refused():
    pipe = load_pipeline("tiny")
    with pytest.raises(InvalidRequestError, match="processor_res"):
        pipe.generate(prompt="x", image=photo(32, 32), steps=2, processor_res=256)
