"""Own depth maps, depth conventions and clipping, depth-only generation, depth strength / depth end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth2img import load_pipeline
from depth2img.depth import adjust_depth
from depth2img.errors import InvalidImageError, InvalidRequestError
from depth2img.infotext import parse_infotext
from depth2img.sampling import depth_end_timestep

from ._reference import diffusers_depth_pipe, minmax_bicubic, run_diffusers, unet_inputs
from .conftest import photo

BASE = {"prompt": "a stone statue", "steps": 4, "seed": 3, "scheduler": "ddim", "strength": 0.8}


def synthetic_depth(h: int = 50, w: int = 70) -> np.ndarray:
    """A near sphere in front of a receding floor: white = near."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    floor = y / h
    sphere = np.clip(1 - ((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2) / (0.25 * h) ** 2, 0, None)
    return floor + 2 * np.sqrt(sphere)


def correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


def resized(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(torch.from_numpy(depth)[None, None], size=size, mode="bicubic", align_corners=False)[0, 0].numpy()


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images])


@pytest.fixture(scope="module")
def coffee():
    return photo("coffee", (64, 48))


def test_own_depth_map_is_the_one_used(tiny_pipe, coffee):
    own = synthetic_depth()  # 70x50: another size and aspect than the 64x48 image
    result = tiny_pipe.generate(image=coffee, depth_map=own, **BASE)
    used = result.depth_map.normalized[0, 0]  # (6, 8)
    assert result.depth_map.source == "user"
    assert correlation(used, resized(own, tuple(used.shape))) > 0.99
    estimated = tiny_pipe.generate(image=coffee, **BASE).depth_map.normalized[0, 0]
    assert correlation(used, estimated) < 0.9  # not the estimate
    assert parse_infotext(result.infotexts[0])["Depth"] == "own map"


def test_motorcycle_true_disparity(tiny_pipe):
    """scikit-image's Middlebury motorcycle pair ships its true disparity (near = large, like MiDaS)."""
    from skimage import data

    left, _, disparity = data.stereo_motorcycle()
    image = photo("motorcycle", (96, 64))
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        tiny_pipe.generate(image=image, depth_map=disparity, **BASE)  # its occlusions are marked non-finite
    filled = np.where(np.isfinite(disparity), disparity, np.nanmin(disparity[np.isfinite(disparity)]))
    result = tiny_pipe.generate(image=image, depth_map=filled.astype(np.float32), **BASE)
    used = result.depth_map.normalized[0, 0]  # (8, 12)
    assert left.shape[:2] == disparity.shape
    assert correlation(used, resized(filled.astype(np.float32), tuple(used.shape))) > 0.99


def test_invert_depth_flips_the_map(tiny_pipe, coffee):
    own = synthetic_depth()
    normal = tiny_pipe.generate(image=coffee, depth_map=own, **BASE)
    flipped = tiny_pipe.generate(image=coffee, depth_map=own, invert_depth=True, **BASE)
    assert torch.allclose(flipped.depth_map.normalized, -normal.depth_map.normalized, atol=1e-5)
    black_near = own.max() - own  # a map from a tool that uses black = near
    same = tiny_pipe.generate(image=coffee, depth_map=black_near, invert_depth=True, **BASE)
    assert np.abs(pixels(same).astype(int) - pixels(normal).astype(int)).max() <= 1


def test_clip_percentiles_clamp_then_renormalise():
    depth = np.linspace(0, 100, 101, dtype=np.float32).reshape(1, 101).repeat(3, 0)
    clipped = adjust_depth(depth, clip=(10, 90))
    assert clipped.min() == pytest.approx(10) and clipped.max() == pytest.approx(90)
    assert np.array_equal(adjust_depth(depth), depth)
    assert np.array_equal(adjust_depth(depth, invert=True), 100 - depth)


def test_clip_changes_the_normalised_map(tiny_pipe, coffee):
    own = synthetic_depth() + np.random.default_rng(0).random((50, 70)).astype(np.float32)  # rough: every clip shows
    result = tiny_pipe.generate(image=coffee, depth_map=own, depth_clip=(5, 60), **BASE)
    norm = result.depth_map.normalized
    assert float(norm.min()) == -1.0 and float(norm.max()) == 1.0  # renormalised
    # ...and it is the percentile clip computed here with numpy, resized and renormalised as diffusers does
    clipped = np.clip(own, *np.percentile(own, [5, 60]))
    assert torch.allclose(norm, minmax_bicubic(clipped, tuple(norm.shape[-2:])), atol=1e-5)
    assert not torch.allclose(norm, minmax_bicubic(own, tuple(norm.shape[-2:])), atol=1e-2)
    assert parse_infotext(result.infotexts[0])["Depth clip"] == "5-60"


def test_depth_only_generation_needs_no_image(tiny_pipe):
    own = synthetic_depth(50, 70)
    result = tiny_pipe.generate(depth_map=own, **{**BASE, "strength": 0.3})  # strength is not used
    assert result.images[0].size == (64, 48)  # the map's size floored to multiples of 8
    assert np.asarray(result.images[0]).std() > 0
    assert "Denoising strength: 1.0," in result.infotexts[0]  # what ran, not the ignored field
    sized = tiny_pipe.generate(depth_map=own, width=32, height=24, **BASE)
    assert sized.images[0].size == (32, 24)
    again = tiny_pipe.generate(depth_map=own, **BASE)
    assert np.array_equal(pixels(again), pixels(result))  # seeded, and strength ignored


def test_depth_only_rejects_img2img_model():
    with pytest.raises(InvalidRequestError, match="img2img model"):
        load_pipeline("tiny-img2img").generate(depth_map=synthetic_depth(), **BASE)


def test_explicit_defaults_are_bit_identical(tiny_pipe, coffee):
    """Explicit default depth controls leave the reference path untouched: both equal diffusers."""
    default = tiny_pipe.generate(image=coffee, **BASE)
    explicit = tiny_pipe.generate(
        image=coffee, depth_strength=1.0, depth_end=1.0, invert_depth=False, depth_clip=(0.0, 100.0), **BASE
    )
    assert np.array_equal(pixels(default), pixels(explicit))
    assert default.infotexts == explicit.infotexts
    expected = run_diffusers(diffusers_depth_pipe(tiny_pipe), "ddim", seed=BASE["seed"], prompt=BASE["prompt"],
                             image=coffee, steps=BASE["steps"], strength=BASE["strength"])
    assert np.abs(pixels(explicit).astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "pndm"])
def test_no_depth_by_strength_equals_no_depth_by_end(tiny_pipe, coffee, scheduler):
    """depth_strength 0 and depth_end 0 both give the flat plane at every step: the same picture, and
    the same UNet inputs at every call (recorded), with an all-zero depth channel."""
    fields = {**BASE, "scheduler": scheduler}
    with unet_inputs(tiny_pipe) as strength_calls:
        by_strength = pixels(tiny_pipe.generate(image=coffee, depth_strength=0.0, **fields))
    with unet_inputs(tiny_pipe) as end_calls:
        by_end = pixels(tiny_pipe.generate(image=coffee, depth_end=0.0, **fields))
    assert len(strength_calls) == len(end_calls) > 0
    for (a, ta), (b, tb) in zip(strength_calls, end_calls):
        assert ta == tb and torch.equal(a, b)
        assert a.shape[1] == 5 and torch.count_nonzero(a[:, 4]) == 0
    full = pixels(tiny_pipe.generate(image=coffee, **fields))
    half = pixels(tiny_pipe.generate(image=coffee, depth_end=0.5, **fields))
    weak = pixels(tiny_pipe.generate(image=coffee, depth_strength=0.5, **fields))
    assert np.array_equal(by_strength, by_end)
    for other in (full, half, weak):
        assert not np.array_equal(other, by_strength)
    assert not np.array_equal(half, full) and not np.array_equal(weak, full)


def test_depth_end_timestep():
    timesteps = torch.tensor([801, 601, 401, 201, 1])
    assert depth_end_timestep(timesteps, 1.0) is None
    assert depth_end_timestep(timesteps, 0.0) == float("inf")
    assert depth_end_timestep(timesteps, 0.5) == 401.0  # ceil(2.5) = 3 steps get depth
    assert depth_end_timestep(timesteps, 0.2) == 801.0


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"depth_strength": 1.5}, "depth_strength"),
        ({"depth_end": -0.1}, "depth_end"),
        ({"depth_clip": (50, 10)}, "far percentile must be below near"),
        ({"depth_clip": (0, 101)}, "depth_clip near"),
        ({"depth_clip": 5}, "two percentiles"),
    ],
)
def test_bad_depth_controls(tiny_pipe, coffee, fields, match):
    with pytest.raises(InvalidRequestError, match=match):
        tiny_pipe.generate(image=coffee, **{**BASE, **fields})


def test_depth_controls_need_a_depth_model(coffee):
    with pytest.raises(InvalidRequestError, match="plain img2img model"):
        load_pipeline("tiny-img2img").generate(image=coffee, depth_strength=0.5, **BASE)


@pytest.mark.parametrize(
    "depth,error,match",
    [
        (np.full((8, 8), np.nan, np.float32), InvalidImageError, "NaN"),
        (np.ones((8, 8), np.float32), None, "flat"),
    ],
    ids=["nan", "constant"],
)
def test_bad_depth_maps(tiny_pipe, coffee, depth, error, match):
    if error is not None:
        with pytest.raises(error, match=match):
            tiny_pipe.generate(image=coffee, depth_map=depth, **BASE)
    else:  # documented: a flat map carries no structure and becomes the mid-depth plane, with a warning
        result = tiny_pipe.generate(image=coffee, depth_map=depth, **BASE)
        assert any(match in w for w in result.warnings)
        assert float(result.depth_map.normalized.abs().max()) == 0.0


def test_only_masked_crops_the_own_depth_map_too(tiny_pipe):
    """The own map has twice the image's resolution, so the crop box (50, 4)-(86, 28) in image pixels
    must be scaled to (100, 8)-(172, 56) in map pixels. The map is random blocks: any other region
    gives another normalised map."""
    image = photo("coffee", (96, 64))
    small = np.random.default_rng(3).random((64, 96)).astype(np.float32)
    own = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # (128, 192)
    mask = np.zeros((64, 96), np.uint8)
    mask[8:24, 60:76] = 255
    result = tiny_pipe.generate(image=image, depth_map=own, mask=mask, inpaint_area="only_masked", padding=4,
                                width=48, height=32, mask_blur=0, **BASE)
    used = result.depth_map.normalized  # (1, 1, 4, 6)
    assert torch.allclose(used, minmax_bicubic(own[8:56, 100:172], (4, 6)), atol=1e-5)
