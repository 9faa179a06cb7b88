"""The approximate fast mode (depth2img/fast.py): each knob is really active, off is the exact path, the
bundle and the bf16 path give finite images, and DeepCache with interval 1 is diffusers' UNet itself.
References: diffusers' UNet2DConditionModel and StableDiffusionDepth2ImgPipeline, A1111's NGMS rule
(skip the unconditional pass on odd steps while sigma < s_min_uncond) written out literally.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from depth2img import fast
from depth2img.fast import DeepCacheUNet
from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline

from ._reference import diffusers_depth_pipe, run_diffusers, unet_inputs
from .conftest import photo

BASE = dict(prompt="a stone bridge", seed=2, steps=6, strength=1.0, guidance_scale=7.0, scheduler="euler")


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_components(depth=True, vae_scale_factor=8))


@pytest.fixture(scope="module")
def image():
    return photo("coffee", (64, 64))


@pytest.fixture(scope="module")
def exact(pipe, image):
    return pipe.generate(image=image, **BASE)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(int)


def generate_with_latents(pipe, **fields):
    """The result and the final latents (before the 8-bit decode hides small changes)."""
    seen = []
    result = pipe.generate(callback=lambda info: seen.append(info.latents), **fields)
    return result, seen[-1]


def unet_args(pipe, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    config = pipe.unet.config
    x = torch.randn(batch, config.in_channels, 8, 8, generator=g)
    text = torch.randn(batch, 77, config.cross_attention_dim, generator=g)
    return x, text


def test_deepcache_interval_1_is_the_plain_unet(pipe):
    wrapped = DeepCacheUNet(pipe.unet, 1)
    for step, t in enumerate([900, 600, 300]):
        x, text = unet_args(pipe, seed=step)
        with torch.no_grad():
            expected = pipe.unet(x, t, encoder_hidden_states=text, return_dict=False)[0]
            got = wrapped(x, t, encoder_hidden_states=text, return_dict=False)[0]
        assert torch.equal(got, expected)


def test_deepcache_reuses_deep_features_between_full_calls(pipe):
    wrapped = DeepCacheUNet(pipe.unet, 3)
    with mock.patch.object(pipe.unet.mid_block, "forward", wraps=pipe.unet.mid_block.forward) as mid:
        outs = []
        for step, t in enumerate([900, 700, 500, 300]):
            x, text = unet_args(pipe, seed=step)
            with torch.no_grad():
                expected = pipe.unet(x, t, encoder_hidden_states=text, return_dict=False)[0]
                calls_before = mid.call_count
                got = wrapped(x, t, encoder_hidden_states=text, return_dict=False)[0]
                ran_mid = mid.call_count - calls_before
            outs.append((torch.equal(got, expected), ran_mid))
    # calls 0 and 3 run fully (equal to the UNet); 1 and 2 reuse the cached deep features (mid block skipped)
    assert [o[0] for o in outs] == [True, False, False, True]
    assert [o[1] for o in outs] == [1, 0, 0, 1]
    assert "forward" not in pipe.unet.mid_block.__dict__ or isinstance(pipe.unet.mid_block.forward, mock.MagicMock)


def test_knobs_off_are_the_exact_path_and_diffusers(pipe, image, exact):
    off = pipe.generate(image=image, **BASE, uncond_sigma=0.0, deepcache_interval=1, low_precision=False, fast=False)
    np.testing.assert_array_equal(pixels(off), pixels(exact))
    reference = run_diffusers(diffusers_depth_pipe(pipe), "euler", seed=2, prompt=BASE["prompt"], image=image, steps=6,
                              strength=1.0, guidance_scale=7.0)
    assert np.abs(pixels(off) - reference[0].astype(int)).max() <= 1


def test_uncond_sigma_skips_the_unconditional_pass_as_a1111(pipe, image, exact):
    with unet_inputs(pipe) as calls:
        result, latents = generate_with_latents(pipe, image=image, **BASE, uncond_sigma=5.0)
    _, exact_latents = generate_with_latents(pipe, image=image, **BASE)
    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod
    sigmas = [float(((1 - alphas[int(t)]) / alphas[int(t)]) ** 0.5) for _, t in calls]
    # A1111: skip_uncond when step % 2 and sigma < s_min_uncond
    expected = [1 if (i % 2 and s < 5.0) else 2 for i, s in enumerate(sigmas)]
    assert [sample.shape[0] for sample, _ in calls] == expected
    assert 1 in expected and np.isfinite(pixels(result)).all()
    assert not torch.equal(latents, exact_latents)  # the tiny random text encoder makes cond ≈ uncond: small
    assert "NGMS: 5.0" in result.infotexts[0]


def test_deepcache_knob_changes_the_image(pipe, image, exact):
    result, latents = generate_with_latents(pipe, image=image, **BASE, deepcache_interval=3)
    _, exact_latents = generate_with_latents(pipe, image=image, **BASE)
    assert np.isfinite(pixels(result)).all() and not torch.equal(latents, exact_latents)
    assert "DeepCache: 3" in result.infotexts[0]


def test_bf16_path_is_finite_and_active(pipe, image, exact):
    # as on a CPU without AVX512-BF16/AMX, whatever this machine has (the flags are where detection reads)
    with mock.patch.object(fast, "_cpu_flags", return_value=frozenset({"avx2"})):
        result, latents = generate_with_latents(pipe, image=image, **BASE, low_precision=True)
    _, exact_latents = generate_with_latents(pipe, image=image, **BASE)
    assert np.isfinite(pixels(result)).all() and not torch.equal(latents, exact_latents)
    assert "Precision: bfloat16" in result.infotexts[0]
    assert any("emulated" in w for w in result.warnings)  # no native units: said, not hidden


def test_low_precision_casts_each_weight_once_per_run_not_per_step(pipe, image):
    """torch.autocast caches the 16-bit copy of a weight only within one region: the loop runs in one, so the
    UNet's weights are cast once per image, not at each of the 6 steps (what made bf16 no faster than fp32)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    weight = pipe.unet.conv_in.weight

    class CountCasts(TorchDispatchMode):  # torch's own op stream, below autocast: what actually ran
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() == weight.data_ptr() and \
                    kwargs.get("dtype") == torch.bfloat16:
                CountCasts.casts += 1
            return func(*args, **kwargs)

    with CountCasts():
        result = pipe.generate(image=image, **BASE, low_precision=True)
    assert np.isfinite(pixels(result)).all()
    assert CountCasts.casts == 1


def test_fast_bundle(pipe, image, exact):
    result, latents = generate_with_latents(pipe, image=image, **BASE, fast=True)
    _, exact_latents = generate_with_latents(pipe, image=image, **BASE)
    assert np.isfinite(pixels(result)).all() and not torch.equal(latents, exact_latents)
    assert "NGMS: 1.0" in result.infotexts[0] and "DeepCache: 3" in result.infotexts[0]
    explicit = pipe.plan(pipe.check_inputs(
        __import__("depth2img").GenerationRequest(image=image, **BASE, fast=True, deepcache_interval=2)))
    assert explicit.request.deepcache_interval == 2 and explicit.request.uncond_sigma == 1.0


@pytest.mark.parametrize("flags,native", [({"avx512_bf16", "avx2"}, True), ({"amx_bf16"}, True),
                                          ({"avx2", "avx512f"}, False), (set(), False)])
def test_bf16_is_detected_from_cpu_flags_never_assumed(flags, native, image):
    from depth2img.request import GenerationRequest

    with mock.patch.object(fast, "_cpu_flags", return_value=frozenset(flags)):
        assert fast.native_low_precision(torch.device("cpu")) is native
        resolved = fast.resolve_fast(GenerationRequest(image=image, fast=True), torch.device("cpu"))
    assert resolved.low_precision is native
    assert fast.native_low_precision(torch.device("cuda")) and fast.native_low_precision(torch.device("mps"))


def test_cli_has_every_fast_knob():
    from depth2img.cli import app

    help_text = CliRunner().invoke(app, ["generate", "--help"]).output
    for option in ("--fast", "--uncond-sigma", "--deepcache-interval", "--low-precision", "--preset"):
        assert option in help_text
