"""Inpainting with the depth model (and a plain img2img model) the A1111 way, on tiny models and real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from depth2img import load_pipeline
from depth2img.errors import InvalidImageError, InvalidRequestError
from depth2img.infotext import parse_infotext
from depth2img.inpaint import blur_mask, crop_region, expand_crop_region, prepare_inpaint

from .conftest import photo

SIZE = 64


def rect_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """White (repaint) rectangle ``box`` = (x1, y1, x2, y2) on black, as an "L" image of ``size`` (W, H)."""
    a = np.zeros((size[1], size[0]), np.uint8)
    a[box[1] : box[3], box[0] : box[2]] = 255
    return Image.fromarray(a)


def run(pipe, image, **fields) -> np.ndarray:
    fields = {"prompt": "a red door", "steps": 4, "seed": 5, "scheduler": "ddim", "strength": 0.8, **fields}
    return np.asarray(pipe.generate(image=image, **fields).images[0]).astype(int)


def changed(out: np.ndarray, image: Image.Image) -> np.ndarray:
    return np.abs(out - np.asarray(image).astype(int)).max(-1) > 0  # (H, W)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return photo("astronaut", (SIZE, SIZE))


def test_unmasked_pixels_are_exactly_the_input_and_masked_region_changes(tiny_pipe, astronaut):
    mask = rect_mask((20, 16, 44, 40))
    out = run(tiny_pipe, astronaut, mask=mask)  # default blur 4
    kept = np.asarray(blur_mask(mask, 4)) == 0
    assert kept.sum() > SIZE * SIZE // 2
    assert np.array_equal(out[kept], np.asarray(astronaut).astype(int)[kept])
    inside = np.abs(out - np.asarray(astronaut).astype(int))[20:36, 24:40]
    assert inside.mean() > 20  # the repainted region is not the original


@pytest.mark.parametrize("sigma", [2, 6])
def test_blur_widens_the_changed_region_by_the_kernel_radius(tiny_pipe, astronaut, sigma):
    mask = rect_mask((24, 24, 40, 40))
    sharp = changed(run(tiny_pipe, astronaut, mask=mask, mask_blur=0), astronaut)
    blurred = changed(run(tiny_pipe, astronaut, mask=mask, mask_blur=sigma), astronaut)
    binary = np.asarray(mask) > 0
    assert not sharp[~binary].any()  # no blur: nothing outside the mask changes
    radius = int(2.5 * sigma + 0.5)  # A1111's kernel half-width
    assert not blurred[~binary_dilation(binary, iterations=radius, structure=np.ones((3, 3)))].any()
    assert blurred[~binary].sum() > 0  # but it does reach beyond the mask
    ring = binary_dilation(binary, iterations=radius - 1, structure=np.ones((3, 3))) & ~binary
    assert blurred[ring].mean() > 0.5


def test_only_masked_crops_to_the_mask_and_pastes_back_there(tiny_pipe):
    image = photo("chelsea", (96, 64))
    mask = rect_mask((60, 8, 76, 24), (96, 64))
    job = prepare_inpaint(image, mask, size=(48, 32), resize_mode="just_resize", mask_blur=0,
                          masked_content="original", inpaint_area="only_masked", padding=4, invert=False)
    assert crop_region(mask, 4) == (56, 4, 80, 28)
    assert job.box == expand_crop_region((56, 4, 80, 28), 48, 32, 96, 64) == (50, 4, 86, 28)  # grown to 3:2
    assert job.image.size == (48, 32)
    expected = image.crop(job.box).resize((48, 32), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(job.image).astype(int) - np.asarray(expected).astype(int)).max() <= 1

    out = run(tiny_pipe, image, mask=mask, mask_blur=0, inpaint_area="only_masked", padding=4, width=48, height=32)
    assert out.shape == (64, 96, 3)  # the original size: the patch is pasted back
    diff = changed(out, image)
    assert not diff[np.asarray(mask) == 0].any()
    assert diff[8:24, 60:76].mean() > 0.9


def test_expand_crop_region_shifts_inside_the_image():
    assert expand_crop_region((0, 0, 10, 40), 64, 64, 100, 100) == (0, 0, 40, 40)
    assert expand_crop_region((90, 10, 100, 20), 64, 32, 100, 100) == (80, 10, 100, 20)  # 2:1, shifted left
    assert expand_crop_region((10, 90, 30, 100), 32, 64, 100, 100) == (10, 60, 30, 100)  # 1:2, shifted up
    assert expand_crop_region((95, 0, 100, 40), 64, 64, 100, 100) == (60, 0, 100, 40)


def test_all_white_mask_is_plain_img2img(tiny_pipe, astronaut):
    plain = run(tiny_pipe, astronaut)
    masked = run(tiny_pipe, astronaut, mask=Image.new("L", (SIZE, SIZE), 255))
    assert np.array_equal(plain, masked)


def test_rgba_mask_uses_alpha(tiny_pipe, astronaut):
    rgba = np.full((SIZE, SIZE, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[16:40, 20:44, 3] = 200  # > 128: repaint
    gray = run(tiny_pipe, astronaut, mask=rect_mask((20, 16, 44, 40)))
    assert np.array_equal(run(tiny_pipe, astronaut, mask=Image.fromarray(rgba, "RGBA")), gray)


def test_invert_mask_equals_inverted_image(tiny_pipe, astronaut):
    mask = rect_mask((20, 16, 44, 40))
    inverted = Image.fromarray(255 - np.asarray(mask))
    assert np.array_equal(run(tiny_pipe, astronaut, mask=mask, invert_mask=True), run(tiny_pipe, astronaut, mask=inverted))


def _first_unet_input(pipe, image, **fields) -> torch.Tensor:
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(a[0][:1, :4].clone()), with_kwargs=True)
    try:
        run(pipe, image, **fields)
    finally:
        handle.remove()
    return seen[0]  # (1, 4, h, w): the noised start latents (DDIM: scale_model_input is the identity)


@pytest.mark.parametrize("content", ["fill", "latent_noise", "latent_nothing"])
def test_masked_content_modes_change_the_result_but_keep_the_rest(tiny_pipe, astronaut, content, monkeypatch):
    """Beyond "differs": what each mode puts under the mask. fill: the VAE sees the picture with only the
    masked pixels replaced, by something smooth (blurred surroundings); latent noise vs latent nothing
    (same fill, same noise): start latents equal outside the latent mask and differ by exactly
    sqrt(alpha_bar_t0) * randn(seed) under it, i.e. noise there, zeros there."""
    mask = rect_mask((16, 16, 40, 48))  # aligned to 8-px latent cells
    original = run(tiny_pipe, astronaut, mask=mask, mask_blur=0)
    other = run(tiny_pipe, astronaut, mask=mask, mask_blur=0, masked_content=content)
    keep = np.asarray(mask) == 0
    assert np.array_equal(other[keep], np.asarray(astronaut).astype(int)[keep])
    assert not np.array_equal(other, original)
    if content == "fill":
        seen = []
        real = tiny_pipe.vae.encode
        monkeypatch.setattr(tiny_pipe.vae, "encode", lambda x, *a, **k: seen.append(x.clone()) or real(x, *a, **k))
        run(tiny_pipe, astronaut, mask=mask, mask_blur=0, masked_content="fill")
        monkeypatch.undo()
        filled = np.round((seen[0][0].permute(1, 2, 0).numpy() + 1) * 127.5)  # back to 0..255
        source = np.asarray(astronaut).astype(float)
        assert np.abs(filled[keep] - source[keep]).max() <= 0.5  # only the masked pixels are replaced
        hole = ~keep
        assert np.abs(filled[hole] - source[hole]).mean() > 10
        roughness = lambda a: np.abs(np.diff(a[16:48, 16:40], axis=1)).mean()  # noqa: E731
        assert roughness(filled) < 0.5 * roughness(source)  # blurred surroundings, not a picture
        return
    from diffusers import DDIMScheduler

    x_noise = _first_unet_input(tiny_pipe, astronaut, mask=mask, mask_blur=0, masked_content="latent_noise")
    x_nothing = _first_unet_input(tiny_pipe, astronaut, mask=mask, mask_blur=0, masked_content="latent_nothing")
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    scheduler.set_timesteps(4)
    t0 = int(scheduler.timesteps[4 - int(4 * 0.8)])
    latmask = torch.zeros(1, 1, 8, 8)
    latmask[..., 2:6, 2:5] = 1
    randn = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))  # A1111: randn with the seed
    expected = scheduler.alphas_cumprod[t0].sqrt() * randn * latmask
    assert torch.allclose(x_noise - x_nothing, expected, atol=1e-5)


def test_mask_of_same_aspect_is_resized(tiny_pipe, astronaut):
    small = rect_mask((10, 8, 22, 20), (32, 32))
    out = run(tiny_pipe, astronaut, mask=small, mask_blur=0)
    assert not changed(out, astronaut)[:14].any() and changed(out, astronaut)[20:36, 24:40].mean() > 0.9


@pytest.mark.parametrize(
    "mask,error,match",
    [
        (rect_mask((0, 0, 8, 8), (64, 32)), InvalidImageError, "aspect ratios differ"),
        (Image.new("L", (SIZE, SIZE), 0), InvalidImageError, "mask is empty"),
        (b"this is not an image", InvalidImageError, "mask .*not a supported image"),
        ("/nonexistent/mask.png", InvalidImageError, "mask file not found"),
    ],
    ids=["size-mismatch", "all-black", "not-an-image", "missing-file"],
)
def test_bad_masks_give_one_line_errors(tiny_pipe, astronaut, mask, error, match):
    with pytest.raises(error, match=match) as info:
        run(tiny_pipe, astronaut, mask=mask)
    assert "\n" not in str(info.value)


def test_all_white_mask_inverted_is_empty(tiny_pipe, astronaut):
    with pytest.raises(InvalidImageError, match="invert_mask made it all black"):
        run(tiny_pipe, astronaut, mask=Image.new("L", (SIZE, SIZE), 255), invert_mask=True)


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"mask_blur": 65}, "mask_blur"),
        ({"masked_content": "lama"}, "masked_content"),
        ({"inpaint_area": "masked"}, "inpaint_area"),
        ({"padding": -1}, "padding"),
        ({"invert_mask": True, "mask": None}, "invert_mask needs a mask"),
    ],
)
def test_bad_inpaint_fields(tiny_pipe, astronaut, fields, match):
    fields = {"mask": rect_mask((0, 0, 8, 8)), **fields}
    with pytest.raises(InvalidRequestError, match=match):
        run(tiny_pipe, astronaut, **fields)


def test_infotext_uses_a1111_keys(tiny_pipe, astronaut):
    result = tiny_pipe.generate(prompt="x", image=astronaut, mask=rect_mask((20, 16, 44, 40)), steps=2, seed=1,
                                inpaint_area="only_masked", masked_content="latent_noise", invert_mask=True)
    params = parse_infotext(result.infotexts[0])
    assert params["Mask blur"] == "4"
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "32"
    assert params["Masked content"] == "latent noise" and params["Mask mode"] == "Inpaint not masked"
    plain = parse_infotext(tiny_pipe.generate(prompt="x", image=astronaut, steps=2, seed=1).infotexts[0])
    assert "Mask blur" not in plain


def test_plain_img2img_model_inpaints_too(astronaut):
    pipe = load_pipeline("tiny-img2img")
    mask = rect_mask((20, 16, 44, 40))
    out = run(pipe, astronaut, mask=mask, mask_blur=0)
    assert np.array_equal(out[np.asarray(mask) == 0], np.asarray(astronaut).astype(int)[np.asarray(mask) == 0])
    assert changed(out, astronaut)[20:36, 24:40].mean() > 0.9
