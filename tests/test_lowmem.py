"""low_memory: VAE tiling of a 1024-px decode stays near diffusers' own untiled decode, seams included, and
a low-memory generation equals a normal one. Reference: diffusers' AutoencoderKL.decode without tiling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from depth2img.lowmem import held
from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline

from .conftest import photo

# Stated tolerance for the tiled 1024-px decode of the tiny random VAE, in 0..255 pixel units: the mean
# difference and the 99.9th percentile. Measured: mean 7.1, p99.9 50. Tiling is approximate by design: each
# tile's GroupNorm statistics and mid-block attention see only that tile (diffusers' memory docs), so the
# whole tile shifts a little, not only the seams; the seams must be no worse than the tiles' interiors.
MEAN_TOL, P999_TOL = 10.0, 64.0


@pytest.fixture(scope="module")
def pipes():
    normal = Pipeline(tiny_components(depth=True, vae_scale_factor=8))
    low = Pipeline(tiny_components(depth=True, vae_scale_factor=8), low_memory=True)
    return normal, low


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(int)


def test_low_memory_turns_on_diffusers_tiling_and_slicing(pipes):
    normal, low = pipes
    assert low.vae.use_tiling and low.vae.use_slicing
    assert not normal.vae.use_tiling and not normal.vae.use_slicing


def test_tiled_1024_decode_is_close_to_the_untiled_decode_seams_included(pipes):
    _, low = pipes
    vae = low.vae
    vae.tile_sample_min_size, vae.tile_latent_min_size = 256, 32  # 5x5 tiles over 1024 px (real SD2: 768 px)
    latents = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(0)) * vae.config.scaling_factor
    with torch.no_grad():
        tiled_images = low.decode(latents)  # ours: through the pipeline's decode, tiling on
        vae.use_tiling = False
        try:
            untiled = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]  # diffusers, whole image
        finally:
            vae.use_tiling = True
    tiled = np.asarray(tiled_images[0]).astype(int)[None]
    reference = to_uint8(untiled)
    diff = np.abs(tiled - reference)
    assert tiled.shape == (1, 1024, 1024, 3)
    assert diff.mean() <= MEAN_TOL and np.percentile(diff, 99.9) <= P999_TOL, (diff.mean(), np.percentile(diff, 99.9))
    # the seams: rows/columns where tiles meet (stride 256 · 0.75 = 192 px) with 8 px either side
    stride = int(vae.tile_sample_min_size * (1 - vae.tile_overlap_factor))
    seams = [s for k in range(1, 1024 // stride + 1) for s in range(k * stride - 8, k * stride + 8) if 0 <= s < 1024]
    seam_diff = np.concatenate([diff[:, seams, :, :].ravel(), diff[:, :, seams, :].ravel()])
    interior = np.ones(1024, bool)
    interior[seams] = False
    interior_diff = diff[:, interior][:, :, interior]
    assert seam_diff.mean() <= 1.5 * interior_diff.mean(), (seam_diff.mean(), interior_diff.mean())
    # and it really is tiled: not identical to the whole-image decode
    assert diff.max() > 0


def test_low_memory_generation_equals_normal(pipes):
    normal, low = pipes
    # 32 px = one tile of the tiny VAE (sample_size 32): tiling does not apply, slicing decodes one by one. (It was
    # 64 px, which is tiled: the test passed only after the 1024-px test above had enlarged the module-scoped tiles.)
    image = photo("astronaut", (32, 32))
    fields = dict(prompt="a statue", image=image, seed=5, steps=4, batch_size=2, scheduler="ddim")
    a = normal.generate(**fields)
    b = low.generate(**fields)
    for x, y in zip(a.images, b.images):
        assert np.abs(np.asarray(x).astype(int) - np.asarray(y).astype(int)).max() <= 1


def test_cli_has_low_memory():
    from depth2img.cli import app

    assert "--low-memory" in CliRunner().invoke(app, ["generate", "--help"]).output


# -- CPU/MPS: the text encoder(s) and the depth estimator are released between uses (lowmem.Releaser) ------------
# Reference everywhere: the same tiny weights in a pipeline without low_memory (the plain eager path), its VAE
# given diffusers' same tiling and slicing, so the release/restore is the only difference.

def _plain_and_low(factory=None):
    make = factory or (lambda: tiny_components(depth=True, vae_scale_factor=8))
    plain, low = Pipeline(make()), Pipeline(make(), low_memory=True)
    plain.vae.enable_tiling()
    plain.vae.enable_slicing()
    return plain, low


def _tensors(module):
    return [*module.parameters(), *module.buffers()]


def _pixels(result):
    return [np.asarray(picture) for picture in result.images]


def test_released_modules_come_back_bit_identical_request_after_request():
    plain, low = _plain_and_low()
    restores = []
    for prompt, picture in (("a statue", "astronaut"), ("a red house by the sea", "coffee")):
        fields = dict(prompt=prompt, negative_prompt="blurry", image=photo(picture, (64, 64)), seed=3, steps=3,
                      scheduler="ddim")
        expected, got = plain.generate(**fields), low.generate(**fields)
        for a, b in zip(_pixels(expected), _pixels(got)):
            assert np.array_equal(a, b)
        assert np.array_equal(expected.depth_map.raw, got.depth_map.raw)
        restores.append(low.releaser.restores)
    assert restores == [2, 4]  # each request: the depth estimator once, the text encoder once (prompt + negative)


def test_released_modules_hold_no_memory_after_a_generation():
    plain, low = _plain_and_low()
    for module in (low.text_encoder, low.depth_estimator):
        assert all(t.device.type == "meta" for t in _tensors(module))  # released right after load
    low.generate(prompt="a statue", image=photo("astronaut", (64, 64)), seed=1, steps=2, scheduler="ddim")
    for module in (low.text_encoder, low.depth_estimator):
        assert _tensors(module) and all(t.device.type == "meta" for t in _tensors(module))
    # the UNet and VAE stay where they were; the spill holds exactly the plain pipeline's tensors (safetensors' own
    # loader reads it)
    assert all(t.device.type == "cpu" for t in _tensors(low.unet))
    from safetensors.torch import load_file

    spills = sorted(low.releaser.folder.iterdir())
    assert len(spills) == 2
    plain_text = {**dict(plain.text_encoder.named_parameters()), **dict(plain.text_encoder.named_buffers())}
    stored = load_file(str(spills[0]))
    assert stored.keys() == plain_text.keys()
    assert all(torch.equal(stored[k], plain_text[k]) for k in stored)


def test_a_repeated_request_hits_both_caches_without_restoring():
    from depth2img.caches import depth_key, text_key

    _, low = _plain_and_low()
    picture = photo("astronaut", (64, 64))
    fields = dict(prompt="a statue", image=picture, seed=1, steps=2, scheduler="ddim")

    def keys():
        return (text_key("a statue", low.text_encoder, low.tokenizer, low.embeddings, (), low.device, low.dtype),
                depth_key(picture, low.depth_estimator, low.feature_extractor))

    released_keys = keys()
    first = low.generate(**fields)
    with held(low, low.text_encoder), held(low, low.depth_estimator):
        assert not low.releaser.is_released(low.text_encoder) and not low.releaser.is_released(low.depth_estimator)
        assert keys() == released_keys  # restored: the same cache keys as released (version counters kept)
    assert keys() == released_keys
    restores, text_hits, depth_hits = low.releaser.restores, low.text_cache.hits, low.depth_cache.hits
    again = low.generate(**fields)
    assert low.releaser.restores == restores  # nothing restored: both came from the caches
    assert low.text_cache.hits == text_hits + 2 and low.depth_cache.hits == depth_hits + 1
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(first), _pixels(again)))


def test_a_weight_changed_while_restored_changes_the_key_and_is_spilled_again():
    from depth2img.caches import module_identity

    plain, low = _plain_and_low()
    fields = dict(prompt="a statue", image=photo("astronaut", (64, 64)), seed=1, steps=2, scheduler="ddim")
    before = module_identity(low.text_encoder)
    for pipe in (plain, low):
        with held(pipe, pipe.text_encoder), torch.no_grad():
            pipe.text_encoder.get_input_embeddings().weight.mul_(3)  # a user's in-place edit
    assert module_identity(low.text_encoder) != before  # released again, and the edit still shows in the key
    assert all(t.device.type == "meta" for t in _tensors(low.text_encoder))
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(plain.generate(**fields)), _pixels(low.generate(**fields))))


def test_sdxl_releases_both_text_encoders():
    from depth2img.models.controlnet import attach_controlnet, tiny_base

    plain, low = _plain_and_low(lambda: attach_controlnet(tiny_base("tiny-sdxl"), "tiny-controlnet-sdxl"))
    fields = dict(prompt="a statue", image=photo("chelsea", (64, 48)), depth_map=np.linspace(0, 1, 48 * 64, dtype=np.float32
                  ).reshape(48, 64), seed=2, steps=2, scheduler="euler")
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(plain.generate(**fields)), _pixels(low.generate(**fields))))
    for module in (low.text_encoder, low.text_encoder_2):
        assert all(t.device.type == "meta" for t in _tensors(module))


def test_the_spill_folder_goes_with_the_pipeline():
    import gc

    low = Pipeline(tiny_components(depth=True, vae_scale_factor=8), low_memory=True)
    folder = low.releaser.folder
    assert folder.is_dir() and len(list(folder.iterdir())) == 2
    del low
    gc.collect()
    assert not folder.exists()


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_restore_maps_the_spill_file_and_a_release_unmaps_it():
    from pathlib import Path

    from tests.test_load_weights import _mapped_ranges

    low = Pipeline(tiny_components(depth=True, vae_scale_factor=8), low_memory=True)
    spill = low.releaser._spill_of(low.text_encoder).path.resolve()
    assert not _mapped_ranges(spill)
    with held(low, low.text_encoder):
        ranges = _mapped_ranges(Path(spill))
        assert ranges, "the spill file is not memory-mapped"
        for name, p in low.text_encoder.named_parameters():  # no copy: every tensor is a page of the file
            ptr = p.untyped_storage().data_ptr()
            assert any(lo <= ptr < hi for lo, hi in ranges), name
        del p  # the test's own reference would keep the mapping alive
    assert not _mapped_ranges(spill)  # released: the mapping is gone, its pages leave the process
