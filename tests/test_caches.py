"""Exact-mode caches (depth2img/caches.py): hit on a repeated request, invalidated when an input changes,
and a cached run equals an uncached run bit for bit and diffusers' pipeline within 1/255.

Calls are counted with spies on the modules' ``forward`` (unittest.mock ``wraps``), i.e. on the work itself.
"""

from __future__ import annotations

import copy
from unittest import mock

import numpy as np
import pytest
import torch

from depth2img.caches import LRUCache
from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline

from ._reference import diffusers_depth_pipe, run_diffusers
from .conftest import photo

PROMPT = "a bronze statue"
FIELDS = dict(prompt=PROMPT, negative_prompt="blurry", seed=3, steps=3, strength=0.8, guidance_scale=6.0,
              scheduler="ddim")


@pytest.fixture()
def pipe():
    return Pipeline(tiny_components(depth=True, vae_scale_factor=2))


def spy(module):
    """Count a module's forward calls without changing what it computes."""
    return mock.patch.object(module, "forward", wraps=module.forward)


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images])


def test_text_cache_hit_and_invalidation(pipe):
    image = photo("astronaut", (32, 32))
    with spy(pipe.text_encoder) as calls:
        pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 2  # prompt and negative, once each for the batch
        pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 2  # repeated request: no encoder call
        pipe.generate(image=image, **{**FIELDS, "prompt": "a marble statue"})
        assert calls.call_count == 3  # new prompt encoded, negative still cached
        pipe.generate(image=image, **{**FIELDS, "negative_prompt": "ugly"})
        assert calls.call_count == 4
    with torch.no_grad():  # weights changed in place (a merged LoRA, a user's edit): recomputed
        next(pipe.text_encoder.parameters()).mul_(1.5)
    with spy(pipe.text_encoder) as calls:
        pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 2
    other = copy.deepcopy(pipe.text_encoder)  # another model's encoder
    pipe.text_encoder = other
    with spy(other) as calls:
        pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 2


def test_unconditional_embedding_once_per_batch_and_vae_encoder_once_per_request(pipe):
    image = photo("chelsea", (32, 32))
    with spy(pipe.text_encoder) as text_calls, spy(pipe.vae.encoder) as vae_calls:
        result = pipe.generate(image=image, batch_size=3, **FIELDS)
    assert len(result.images) == 3
    assert text_calls.call_count == 2  # one cond + one uncond for three images (diffusers repeats them too)
    assert vae_calls.call_count == 1  # one encode for three images' posteriors


def test_depth_cache_hit_and_invalidation(pipe):
    image = photo("astronaut", (32, 32))
    with spy(pipe.depth_estimator) as calls:
        first = pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 1
        again = pipe.generate(image=image.copy(), **{**FIELDS, "prompt": "x"})  # same pixels, another object
        assert calls.call_count == 1
        pipe.generate(image=photo("coffee", (32, 32)), **FIELDS)
        assert calls.call_count == 2  # other pixels
        changed = image.copy()
        changed.putpixel((0, 0), (0, 0, 0))
        pipe.generate(image=changed, **FIELDS)
        assert calls.call_count == 3  # one pixel differs
    np.testing.assert_array_equal(first.depth_map.raw, again.depth_map.raw)
    estimator = copy.deepcopy(pipe.depth_estimator)  # another estimator
    pipe.depth_estimator = estimator
    with spy(estimator) as calls:
        pipe.generate(image=image, **FIELDS)
        assert calls.call_count == 1


def test_cached_run_equals_uncached_run_and_diffusers(pipe):
    image = photo("coffee", (48, 32))
    first = pixels(pipe.generate(image=image, **FIELDS))  # fills the caches
    cached = pixels(pipe.generate(image=image, **FIELDS))
    assert pipe.text_cache.hits >= 2 and pipe.depth_cache.hits >= 1
    uncached_pipe = Pipeline(tiny_components(depth=True, vae_scale_factor=2))
    uncached_pipe.text_cache, uncached_pipe.depth_cache = LRUCache(0), LRUCache(0)
    uncached = pixels(uncached_pipe.generate(image=image, **FIELDS))
    np.testing.assert_array_equal(cached, first)
    np.testing.assert_array_equal(cached, uncached)
    expected = run_diffusers(diffusers_depth_pipe(pipe), "ddim", seed=3, prompt=PROMPT, image=image, steps=3,
                             negative_prompt="blurry", strength=0.8, guidance_scale=6.0)
    assert np.abs(cached.astype(int) - expected.astype(int)).max() <= 1


def test_cached_depth_cannot_be_changed_by_a_caller(pipe):
    image = photo("astronaut", (32, 32))
    first = pipe.prepare_depth(image, None, (16, 16))
    first.raw[:] = 0  # a caller scribbles on its copy
    second = pipe.prepare_depth(image, None, (16, 16))
    assert np.ptp(second.raw) > 0


def test_lru_is_bounded():
    cache = LRUCache(2)
    for key in "abc":
        cache.get_or_compute(key, lambda key=key: key.upper())
    assert len(cache) == 2
    calls = []
    cache.get_or_compute("a", lambda: calls.append(1) or "A")
    assert calls == [1]  # the oldest entry was evicted


def test_sdxl_text_cache_hit_and_invalidation():
    """SDXL's two encoders (backends/sdxl_text.py) go through the same cache: a repeated prompt runs neither, a
    change to either encoder's weights runs both again, and a cached run equals an uncached one bit for bit."""
    from depth2img.models.controlnet import attach_controlnet, tiny_base

    sdxl = Pipeline(attach_controlnet(tiny_base("tiny-sdxl"), "tiny-controlnet-sdxl"))
    fields = dict(**FIELDS, image=photo("chelsea", (64, 48)),
                  depth_map=np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64))
    with spy(sdxl.text_encoder) as first, spy(sdxl.text_encoder_2) as second:
        a = pixels(sdxl.generate(**fields))
        assert (first.call_count, second.call_count) == (2, 2)  # prompt and negative
        b = pixels(sdxl.generate(**fields))
        assert (first.call_count, second.call_count) == (2, 2)  # repeated: no encoder runs
        with torch.no_grad():
            next(sdxl.text_encoder_2.parameters()).mul_(1.0)  # an in-place write, same values: the key must change
        c = pixels(sdxl.generate(**fields))
        assert (first.call_count, second.call_count) == (4, 4)
    sdxl.text_cache = LRUCache(0)
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, pixels(sdxl.generate(**fields)))
