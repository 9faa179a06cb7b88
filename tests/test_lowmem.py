"""low_memory: VAE tiling of a 1024-px decode stays near diffusers' own untiled decode, seams included, and
a low-memory generation equals a normal one. Reference: diffusers' AutoencoderKL.decode without tiling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

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
    image = photo("astronaut", (64, 64))  # below one tile: tiling does not apply, slicing decodes one by one
    fields = dict(prompt="a statue", image=image, seed=5, steps=4, batch_size=2, scheduler="ddim")
    a = normal.generate(**fields)
    b = low.generate(**fields)
    for x, y in zip(a.images, b.images):
        assert np.abs(np.asarray(x).astype(int) - np.asarray(y).astype(int)).max() <= 1


def test_cli_has_low_memory():
    from depth2img.cli import app

    assert "--low-memory" in CliRunner().invoke(app, ["generate", "--help"]).output
