"""Inpainting internals pinned numerically against formulas computed here (diffusers' scheduler and VAE
calls, A1111's documented rules), not against depth2img's own helpers.

Recorded through the public surface only: the step callback's latents, a forward hook on ``pipe.unet``
and a wrapper around ``pipe.vae.encode`` (restored by monkeypatch).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageFilter, ImageOps

from .conftest import photo

SIZE = 64
SEED = 5
STEPS, STRENGTH = 4, 0.8
BASE = {"prompt": "a red door", "steps": STEPS, "seed": SEED, "scheduler": "ddim", "strength": STRENGTH}


def rect_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    a = np.zeros((size[1], size[0]), np.uint8)
    a[box[1] : box[3], box[0] : box[2]] = 255
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return photo("astronaut", (SIZE, SIZE))


def to_pixels(image: Image.Image) -> torch.Tensor:
    """diffusers' VaeImageProcessor.preprocess for a PIL RGB image: (1, 3, H, W) in [-1, 1]."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None] * 2.0 - 1.0


def clean_latents_and_noise(pipe, image: Image.Image, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What diffusers' depth2img ``prepare_latents`` draws from ``generator=[Generator(seed)]``: the VAE
    posterior sample first (x scaling factor), then the initial noise, from the same generator."""
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        init = pipe.vae.encode(to_pixels(image)).latent_dist.sample(generator=generator)
    init = init * pipe.vae.config.scaling_factor
    noise = randn_tensor(init.shape, generator=[generator], dtype=init.dtype)
    return init, noise


def reference_timesteps(pipe) -> torch.Tensor:
    """diffusers' img2img truncation: the last int(steps * strength) timesteps of a DDIM schedule."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    return scheduler.timesteps[STEPS - int(STEPS * STRENGTH) :]


def a1111_latmask(mask: Image.Image, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A1111 ``latmask``: mask as RGB, PIL-resized (bicubic) to the latent size, /255, channel 0, rounded."""
    h, w = latent_hw
    small = np.asarray(mask.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    return torch.from_numpy(np.around(small[..., 0] / 255.0)).float()[None, None]


def a1111_blur(mask: Image.Image, sigma: float) -> Image.Image:
    """cv2.GaussianBlur((k, 1), σ) then ((1, k), σ) on uint8, k = 2·int(2.5σ+0.5)+1, BORDER_REFLECT_101."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    a = np.asarray(mask, dtype=np.float64)
    half = size // 2
    for axis in (1, 0):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        padded = np.pad(a, pad, mode="reflect")  # numpy "reflect" = OpenCV REFLECT_101
        out = np.zeros_like(a)
        for i, weight in enumerate(kernel):
            out += weight * (padded[:, i : i + a.shape[1]] if axis == 1 else padded[i : i + a.shape[0], :])
        a = np.round(out)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def a1111_fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111 ``modules/masking.py: fill`` as published (premultiplied blurs at decreasing radii)."""
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def record_steps(pipe, image, **fields):
    steps = []
    result = pipe.generate(image=image, callback=lambda info: steps.append((info.timestep, info.latents.clone())), **{**BASE, **fields})
    return result, steps


def test_kept_region_is_the_original_renoised_at_every_step(tiny_pipe, astronaut):
    """(a) After step i the kept latents equal diffusers' ``add_noise(x0, noise, t[i+1])`` (x0 after the
    last step), with x0 and noise drawn as diffusers' depth2img pipeline draws them from the seed.

    Independent formulation: the latent-space ground truth is rebuilt from the VAE and the diffusers
    DDIM scheduler in this test; the mask is aligned to 8-px latent cells and unblurred, so the latent
    mask is unambiguous (a whole latent block). The repainted block must differ from it (not a no-op)."""
    mask = rect_mask((16, 16, 40, 48))  # latent cells x 2..4, y 2..5
    _, steps = record_steps(tiny_pipe, astronaut, mask=mask, mask_blur=0)
    init, noise = clean_latents_and_noise(tiny_pipe, astronaut, SEED)
    timesteps = reference_timesteps(tiny_pipe)
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    keep = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    keep[..., 2:6, 2:5] = False
    assert len(steps) == len(timesteps) == 3
    for i, (_, latents) in enumerate(steps):
        expected = init if i + 1 == len(timesteps) else scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2])
        k = keep.expand_as(latents)
        assert torch.allclose(latents[k], expected[k], atol=1e-5), f"step {i}"
        assert (latents[~k] - expected[~k]).abs().max() > 1e-2, f"step {i}: the masked block was not generated"


def test_latent_mask_is_a1111_bicubic_rounded(tiny_pipe, astronaut):
    """(b) With a blurred, off-grid mask, exactly the latent cells where A1111's latmask
    (PIL bicubic to latent size, /255, np.around) is 0 are kept (= x0 after the last step); the rest
    are generated. A soft (unrounded) mask, a threshold or another resampling changes the set."""
    mask = rect_mask((8, 9, 32, 37))  # chosen so that bilinear/box/nearest/lanczos/hamming round differently
    blurred = a1111_blur(mask, 3)
    _, steps = record_steps(tiny_pipe, astronaut, mask=mask, mask_blur=3)
    final = steps[-1][1]
    init, _ = clean_latents_and_noise(tiny_pipe, astronaut, SEED)
    latmask = a1111_latmask(blurred, (8, 8))
    small = np.asarray(blurred.convert("RGB").resize((8, 8), Image.Resampling.BICUBIC))[..., 0] / 255.0
    assert ((small > 0.02) & (small < 0.98)).any()  # the blur really produces fractional cells
    assert 0 < int(latmask.sum()) < 64
    for other in ("BILINEAR", "BOX", "NEAREST", "LANCZOS", "HAMMING"):  # the mask discriminates the filter
        resized = np.asarray(blurred.convert("RGB").resize((8, 8), getattr(Image.Resampling, other)))[..., 0]
        assert not np.array_equal(np.around(resized / 255.0), latmask[0, 0].numpy()), other
    keep = (latmask == 0).expand_as(final)
    assert torch.allclose(final[keep], init[keep], atol=1e-5)
    per_cell = (final - init).abs().amax(dim=1)[0]  # (8, 8)
    assert bool((per_cell[latmask[0, 0] == 1] > 1e-2).all())


@pytest.mark.parametrize("content", ["original", "fill", "latent_noise", "latent_nothing"])
def test_masked_content_puts_the_documented_latents_under_the_mask(tiny_pipe, astronaut, monkeypatch, content):
    """(c) The first UNet input (DDIM: scale_model_input is the identity) is
    ``add_noise(x0', noise, t0)`` with x0' per A1111's masked-content rules:
    original: VAE(image); fill: VAE(masking.fill(image)); latent noise: that, with
    ``randn(seed)`` under the latent mask; latent nothing: that, with zeros under the mask."""
    mask = rect_mask((16, 16, 40, 48))
    encoded = []
    real_encode = tiny_pipe.vae.encode

    def spy(x, *args, **kwargs):
        encoded.append(x.detach().clone())
        return real_encode(x, *args, **kwargs)

    monkeypatch.setattr(tiny_pipe.vae, "encode", spy)
    unet_inputs = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda m, args, kw: unet_inputs.append(args[0].detach().clone()), with_kwargs=True)
    try:
        tiny_pipe.generate(image=astronaut, mask=mask, mask_blur=0, masked_content=content, **BASE)
    finally:
        handle.remove()
    monkeypatch.undo()

    source = astronaut if content == "original" else a1111_fill(astronaut, mask)
    assert torch.allclose(encoded[0], to_pixels(source), atol=1e-6)  # the VAE saw the (filled) picture
    init, noise = clean_latents_and_noise(tiny_pipe, source, SEED)
    latmask = a1111_latmask(mask, (8, 8))
    if content == "latent_noise":  # A1111 create_random_tensors: torch.manual_seed(seed); randn(4, h, w)
        init = init * (1 - latmask) + torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(SEED))[None] * latmask
    elif content == "latent_nothing":
        init = init * (1 - latmask)
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    expected = scheduler.add_noise(init, noise, reference_timesteps(tiny_pipe)[:1])
    first = unet_inputs[0][:1, :4]  # uncond half of the CFG batch, latent channels
    assert torch.allclose(first, expected, atol=1e-5)
    if content != "original":
        hole = np.asarray(mask) > 0
        assert np.abs(np.asarray(source, int)[hole] - np.asarray(astronaut, int)[hole]).mean() > 5  # really filled


def test_whole_picture_overlay_uses_a1111_weights_on_the_blurred_edge(tiny_pipe, astronaut):
    """(d) Final pixel = original·(1-w) + generated·w, w = clip(2·blurred mask, 0, 255)/255 (A1111
    ``mask_for_overlay`` for "Whole picture", composited by ``apply_overlay``), where ``generated`` is
    the VAE decode of the final latents, computed here with diffusers' postprocessing."""
    mask = rect_mask((20, 16, 44, 40))
    result, steps = record_steps(tiny_pipe, astronaut, mask=mask, mask_blur=4)
    with torch.no_grad():
        decoded = tiny_pipe.vae.decode(steps[-1][1] / tiny_pipe.vae.config.scaling_factor, return_dict=False)[0]
    generated = np.round((decoded[0].permute(1, 2, 0).numpy() / 2 + 0.5).clip(0, 1) * 255)  # (H, W, 3)
    w = np.clip(np.asarray(a1111_blur(mask, 4), np.float64) * 2, 0, 255)[..., None] / 255.0
    original = np.asarray(astronaut, np.float64)
    expected = original * (1 - w) + generated * w
    out = np.asarray(result.images[0], np.float64)
    edge = (w[..., 0] > 0.05) & (w[..., 0] < 0.95)
    assert edge.sum() > 50
    assert np.abs(out[edge] - expected[edge]).max() <= 1.0
    assert np.abs(out - expected).max() <= 1.0
    # the edge really is a blend: it differs from both pure sources somewhere
    assert np.abs(out[edge] - original[edge]).max() > 5 and np.abs(out[edge] - generated[edge]).max() > 5
