"""Engine behaviour beyond parity: inputs, seeds, depth, dtypes, NaN safety, callbacks, infotext."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from depth2img import GenerationRequest, load_pipeline
from depth2img.errors import GenerationCancelled, InvalidRequestError, NonFiniteOutputError
from depth2img.infotext import parse_infotext
from depth2img.pipeline import Pipeline
from depth2img.models.tiny import tiny_components

from .conftest import photo

FAST = dict(steps=3, strength=0.8, guidance_scale=5.0, scheduler="ddim")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("strength", 1.5, "strength must be in [0, 1]"),
        ("strength", float("nan"), "strength must be a finite number"),
        ("steps", 0, "steps must be in [1, 1000]"),
        ("scheduler", "karras_magic", "unknown scheduler 'karras_magic'"),
        ("batch_size", 0, "batch_size must be in [1, 64]"),
        ("seed", -5, "seed must be in"),
        ("width", 100, "give both width and height"),
        ("resize_mode", "stretch", "unknown resize_mode"),
        ("guidance_scale", -1.0, "guidance_scale must be in"),
    ],
)
def test_bad_request_fields_name_the_cause(tiny_pipe, field, value, message):
    with pytest.raises(InvalidRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), **{field: value})


def test_sides_must_be_multiples_of_eight(tiny_pipe):
    with pytest.raises(InvalidRequestError, match=r"width must be a multiple of 8, got 100 \(try 96 or 104\)"):
        tiny_pipe.generate(prompt="x", image=photo("astronaut"), width=100, height=64)


def test_strength_too_low_for_any_step_is_refused(tiny_pipe):
    with pytest.raises(InvalidRequestError, match="runs no denoising step"):
        tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), steps=4, strength=0.2, scheduler="ddim")


def test_same_seed_same_picture_and_random_seed_is_reported(tiny_pipe):
    image = photo("chelsea", (48, 32))
    a = tiny_pipe.generate(prompt="a cat", image=image, seed=5, **FAST)
    b = tiny_pipe.generate(prompt="a cat", image=image, seed=5, **FAST)
    c = tiny_pipe.generate(prompt="a cat", image=image, seed=None, batch_size=2, **FAST)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert c.seeds[1] == c.seeds[0] + 1 and 0 <= c.seeds[0] < 2**32 - 1
    # the reported random seeds are the ones that were used: regenerating with them gives the same pixels
    again = tiny_pipe.generate(prompt="a cat", image=image, seed=c.seeds[0], batch_size=2, **FAST)
    assert again.seeds == c.seeds
    for got, want in zip(again.images, c.images):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert [parse_infotext(t)["Seed"] for t in c.infotexts] == [str(s) for s in c.seeds]
    alone = tiny_pipe.generate(prompt="a cat", image=image, seed=c.seeds[1], **FAST)
    assert np.abs(np.asarray(alone.images[0], int) - np.asarray(c.images[1], int)).max() <= 1
    other = tiny_pipe.generate(prompt="a cat", image=image, seed=-1, **FAST)
    assert other.seeds[0] != c.seeds[0]  # a fresh draw (chance of a clash: 1 in 4e9)


def test_width_height_and_resize_modes_set_the_output_size(tiny_pipe):
    for mode in ("just_resize", "crop_and_resize", "resize_and_fill"):
        result = tiny_pipe.generate(prompt="x", image=photo("coffee"), width=64, height=40, resize_mode=mode, **FAST)
        assert result.images[0].size == (64, 40)
        assert parse_infotext(result.infotexts[0])["Size"] == "64x40"


def test_unspecified_size_is_floored_to_multiple_of_eight(tiny_pipe):
    result = tiny_pipe.generate(prompt="x", image=photo("chelsea", (45, 37)), **FAST)
    assert result.images[0].size == (40, 32)
    assert tuple(result.depth_map.normalized.shape) == (1, 1, 4, 5)


def test_infotext_carries_a1111_fields(tiny_pipe):
    result = tiny_pipe.generate(
        prompt="a stone castle, oil painting", negative_prompt="blurry", image=photo("astronaut", (32, 32)),
        seed=1234, steps=4, strength=0.75, guidance_scale=7.0, scheduler="dpmpp_2m_karras",
    )
    fields = parse_infotext(result.infotexts[0])
    assert fields["Prompt"] == "a stone castle, oil painting"
    assert fields["Negative prompt"] == "blurry"
    assert (fields["Steps"], fields["Sampler"], fields["Schedule type"]) == ("4", "DPM++ 2M", "Karras")
    assert (fields["CFG scale"], fields["Seed"], fields["Size"]) == ("7.0", "1234", "32x32")
    assert (fields["Model"], fields["Denoising strength"], fields["Depth"]) == ("tiny", "0.75", "estimated")


def test_long_prompt_is_chunked_not_truncated(tiny_pipe):
    """Issue 13: a prompt over 75 tokens is encoded in 77-token chunks (A1111), nothing dropped, no warning."""
    long_prompt = " ".join(f"w{i}" for i in range(60))  # the tiny tokenizer has no merges: ~200 tokens
    seen = []
    handle = tiny_pipe.text_encoder.register_forward_pre_hook(
        lambda m, args, kw: seen.append((args[0] if args else kw["input_ids"]).clone()), with_kwargs=True
    )
    try:
        result = tiny_pipe.generate(prompt=long_prompt, image=photo("astronaut", (32, 32)), **FAST)
    finally:
        handle.remove()
    tok = tiny_pipe.tokenizer
    full = tok(long_prompt).input_ids
    assert len(full) > 77
    # the first chunk: BOS, the first 75 prompt tokens, then EOS (no comma in this prompt to backtrack to)
    expected = tok(long_prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert expected[0].tolist() == full[:76] + [tok.eos_token_id]
    assert torch.equal(seen[0], expected)
    assert len(seen) > 2 and all(s.shape == (1, 77) for s in seen)  # further chunks, then the negative prompt
    assert result.warnings == []


def test_own_depth_map_replaces_the_estimate(tiny_pipe):
    """The motorcycle stereo pair's true disparity (near = large, like MiDaS) is what the UNet gets."""
    from skimage import data

    left, _, disparity = data.stereo_motorcycle()
    disparity = np.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    image = photo("motorcycle", (96, 64))
    result = tiny_pipe.generate(prompt="x", image=image, depth_map=disparity, **FAST)
    used = result.depth_map.normalized[0, 0].numpy()
    # resized as documented (bicubic, align_corners=False): the UNet got this map, not the estimate
    small = torch.nn.functional.interpolate(torch.from_numpy(disparity)[None, None], size=used.shape, mode="bicubic")[0, 0]
    assert result.depth_map.source == "user"
    assert np.corrcoef(used.ravel(), small.numpy().ravel())[0, 1] > 0.99
    assert parse_infotext(result.infotexts[0])["Depth"] == "own map"
    estimated = tiny_pipe.generate(prompt="x", image=image, **FAST)
    assert not torch.equal(estimated.depth_map.normalized, result.depth_map.normalized)


def test_depth_model_without_estimator_needs_a_depth_map():
    components = tiny_components()
    components.depth_estimator = components.feature_extractor = None
    pipe = Pipeline(components)
    with pytest.raises(InvalidRequestError, match="depth model without a depth estimator: give a depth map"):
        pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), **FAST)
    result = pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), depth_map=np.eye(32), **FAST)
    assert result.images[0].size == (32, 32)


def test_img2img_model_refuses_a_depth_map():
    pipe = load_pipeline("tiny-img2img")
    with pytest.raises(InvalidRequestError, match="plain img2img model"):
        pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), depth_map=np.eye(32), **FAST)


def test_bfloat16_path_runs_and_stays_close_to_float32():
    image = photo("coffee", (48, 32))
    full = load_pipeline("tiny").generate(prompt="a cup", image=image, seed=3, **FAST)
    half = load_pipeline("tiny", dtype="bfloat16")
    assert half.unet.dtype == torch.bfloat16 and half.vae.dtype == torch.bfloat16
    assert next(half.depth_estimator.parameters()).dtype == torch.float32  # BatchNorm-safe
    low = half.generate(prompt="a cup", image=image, seed=3, **FAST)
    diff = np.abs(np.asarray(full.images[0], float) - np.asarray(low.images[0], float))
    assert diff.mean() < 8  # bf16 has ~3 significant digits; same picture, not the same bits


class _NaNUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.inner, self.config = unet, unet.config

    def forward(self, x, t, **kwargs):
        out = self.inner(x, t, **kwargs)[0]
        return (out * float("nan"),)


def test_nan_from_the_unet_is_an_error_not_a_black_image():
    pipe = load_pipeline("tiny")
    pipe.unet = _NaNUNet(pipe.unet)
    with pytest.raises(NonFiniteOutputError, match="after the unet in float32"):
        pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), **FAST)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_non_finite_decode_is_retried_in_float32_once(dtype):
    pipe = load_pipeline("tiny", dtype=dtype)
    real_decode = pipe.vae.decode
    calls = []

    def overflowing_decode(z, **kwargs):
        calls.append(z.dtype)
        out = real_decode(z, **kwargs)
        return (out[0] * float("inf"),) if z.dtype == dtype else out

    pipe.vae.decode = overflowing_decode
    result = pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), **FAST)
    assert any("retrying in float32" in w for w in result.warnings)
    assert calls == [dtype, torch.float32]
    assert np.asarray(result.images[0]).std() > 0
    assert pipe.vae.dtype == dtype  # the retry changes nothing for the next call
    assert all(p.dtype == dtype for p in pipe.vae.parameters())


def test_non_finite_decode_in_float32_raises():
    pipe = load_pipeline("tiny")
    real_decode = pipe.vae.decode
    pipe.vae.decode = lambda z, **kw: (real_decode(z, **kw)[0] * float("nan"),)
    with pytest.raises(NonFiniteOutputError, match="after the vae"):
        pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), **FAST)


def test_callback_sees_every_step_and_can_cancel(tiny_pipe):
    seen = []
    tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), callback=lambda s: seen.append((s.step, s.total)), steps=5, strength=0.8, scheduler="ddim")
    assert seen == [(i, 4) for i in range(4)]
    with pytest.raises(GenerationCancelled, match="after step 2 of 4"):
        tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), callback=lambda s: s.step < 1, steps=5, strength=0.8, scheduler="ddim")


def test_request_object_and_keywords_are_the_same(tiny_pipe):
    image = photo("astronaut", (32, 32))
    request = GenerationRequest(prompt="x", image=image, seed=9, **FAST)
    a = tiny_pipe.generate(request)
    b = tiny_pipe.generate(prompt="x", image=image, seed=9, **FAST)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
