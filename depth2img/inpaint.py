"""Inpainting with a non-inpainting model (SD2-depth or plain img2img), the AUTOMATIC1111 way.

Everything here happens in pixel space before and after sampling; the per-step latent blend itself is
:class:`depth2img.sampling.LatentBlend`. The rules follow A1111's ``processing.py`` / ``masking.py``
(reference: original_and_a1111.md §7):

1. mask: the alpha of an RGBA mask with a non-trivial alpha, thresholded at > 128; else luma ("L").
   White = repaint. ``invert_mask`` ("Inpaint not masked") inverts it.
2. blur: two separable Gaussian passes (x then y), OpenCV's kernel size rule ``2·int(2.5σ+0.5)+1``.
3. whole picture: the mask is resized like the image; the overlay mask is ``clip(2·mask)``.
   only masked: crop = mask bounding box + padding, grown to the output aspect ratio, cropped and
   resized with resize-and-fill; the overlay mask is the blurred mask; the result is pasted back.
4. masked content: "fill" replaces the masked pixels by blurred surroundings (``masking.fill``);
   "latent noise"/"latent nothing" fill too, then replace the masked latents by noise / zeros.
5. latent mask: the mask bicubic-resized to the latent size, /255, rounded to 0/1.
6. composite: unmasked pixels are exactly the original (alpha composite over the generated image).

Mask size: a mask whose size differs from the image is resized to it (bilinear, so no ringing outside
the painted area) when the aspect ratios agree within 1 %, the usual case of a mask painted at another
resolution; otherwise it is an error, since a mask for another picture would be silently stretched.
An all-black mask (after ``invert_mask``) is an error (nothing to repaint); an all-white mask is
documented to give exactly the unmasked img2img result (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from scipy.ndimage import gaussian_filter1d

from .errors import InvalidImageError
from .images import floor_to_multiple, open_image, resize_image
from . import a1111
from .request import GenerationRequest, ImageInput, InpaintArea, MaskedContent, ResizeMode


Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2/y2 exclusive


def load_mask(src: ImageInput, size: tuple[int, int], *, invert: bool = False) -> Image.Image:
    """The user's mask as an "L" image of ``size`` (W, H), white = repaint (A1111 ``create_binary_mask``).

    An RGBA mask whose alpha is not all opaque uses its alpha, thresholded at > 128 (A1111's default
    ``mask_round``); any other mode is converted to luma. Raises on a non-image, a mask of another
    aspect ratio than the image, or a mask that is empty (all black) after ``invert``.
    """
    image = open_image(src, what="mask")
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        mask = image.getchannel("A").point(lambda v: 255 if v > 128 else 0)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from .images import to_gray_float

        mask = Image.fromarray(np.round(np.clip(to_gray_float(image), 0.0, 1.0) * 255).astype(np.uint8))
    else:
        mask = image.convert("L")
    if mask.size != size:
        if abs(mask.width / mask.height - size[0] / size[1]) > 0.01 * size[0] / size[1]:
            raise InvalidImageError(
                f"mask is {mask.width}x{mask.height} but the image is {size[0]}x{size[1]}: aspect ratios differ"
            )
        mask = mask.resize(size, Image.Resampling.BILINEAR)  # no ringing: stays inside the painted area ±1 px
    if invert:
        mask = ImageOps.invert(mask)
    if mask.getbbox() is None:
        hint = "the whole image is kept" if not invert else "invert_mask made it all black"
        raise InvalidImageError(f"mask is empty (all black): nothing to repaint, {hint}")
    return mask


# A1111's kernel size 2·int(2.5σ+0.5)+1 is scipy's radius int(truncate·σ+0.5) with truncate 2.5, for every σ
BLUR_TRUNCATE = 2.5


def blur_mask(mask: Image.Image, sigma_x: float, sigma_y: float | None = None) -> Image.Image:
    """A1111's mask blur: ``cv2.GaussianBlur`` with a (k, 1) kernel, then (1, k), each rounded to uint8.

    ``scipy.ndimage.gaussian_filter1d`` with ``truncate=2.5`` is that filter: the same kernel size rule,
    OpenCV's ``getGaussianKernel`` values (normalised Gaussian) and, with ``mode="mirror"``, OpenCV's default
    border BORDER_REFLECT_101 (so an all-white mask stays all white). OpenCV is not a dependency, and
    Pillow's ``GaussianBlur`` is a different filter (box-blur approximation, another extent). Against
    ``cv2.GaussianBlur`` on uint8 (fixed-point arithmetic) the result differs by at most 2 levels; against
    OpenCV's float filter with the same kernel it is equal (tests/test_blur.py).
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    array = np.asarray(mask, dtype=np.float64)  # (H, W)
    for axis, sigma in ((1, sigma_x), (0, sigma_y)):
        if sigma > 0:
            array = np.round(gaussian_filter1d(array, sigma, axis=axis, mode="mirror", truncate=BLUR_TRUNCATE))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """A1111's ``get_crop_region_v2``: the bounding box of non-zero pixels grown by ``padding``, clamped."""
    box = mask.getbbox()
    if box is None or not padding:
        return box
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """A1111's ``masking.expand_crop_region``: grow ``box`` to the aspect ``width:height``, centred,
    shifted back inside the image and clamped (so near an edge the ratio may stay short)."""
    x1, y1, x2, y2 = box
    ratio = width / height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / ratio - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * ratio - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def _grow(low: int, high: int, extra: int, limit: int) -> tuple[int, int]:
    """One side of the box grown by ``extra`` around its centre, shifted back into [0, limit], clamped."""
    low, high = low - extra // 2, high + extra - extra // 2
    if high >= limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, high - low
    return low, min(high, limit)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's ``masking.fill``: masked pixels become blurred colours of their surroundings.

    Premultiplied copies of the unmasked image are Gaussian-blurred at radii 256, 64, 16 (x2), 4 (x4),
    2 (x2), 0 and alpha-composited in that order, coarse to fine (Pillow's blur, as A1111 uses here).
    """
    result = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


@dataclass
class InpaintJob:
    """One prepared inpainting: what the model sees, the latent mask, and how to put the result back.

    ``image``: the (filled, cropped) picture of the processing size that is VAE-encoded and whose depth
    is estimated. ``mask``: the blurred processing-size mask (white = repaint). ``original``: the
    picture the result is composited onto; ``overlay``: its per-pixel keep-weight source (A1111's
    ``mask_for_overlay``). ``box``: the crop in ``original`` coordinates for "only masked", else None.
    """

    image: Image.Image
    mask: Image.Image
    original: Image.Image
    overlay: Image.Image
    box: Box | None
    masked_content: MaskedContent

    def latent_mask(self, latent_size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1, h, w) 1 = repaint, 0 = keep: A1111's ``latmask`` (PIL bicubic to latent size, /255, round)."""
        h, w = latent_size
        small = np.asarray(self.mask.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        latmask = np.around(small[..., 0] / 255.0)  # (h, w)
        return torch.from_numpy(latmask)[None, None].to(device, dtype)

    def prepare_init_latents(
        self, init: torch.Tensor, mask: torch.Tensor, generators: list[torch.Generator]
    ) -> torch.Tensor:
        """Masked content in latent space (A1111 ``inpainting_fill`` 2/3): noise or zeros under the mask.

        "latent noise" draws from a fresh CPU generator per image seeded like image i's own generator
        (A1111 uses the first seeds too), so the main generators' draws, and parity, are unchanged.
        """
        if self.masked_content == "latent_nothing":
            return init * (1 - mask)
        if self.masked_content == "latent_noise":
            noise = torch.cat(
                [torch.randn(init.shape[1:], generator=torch.Generator("cpu").manual_seed(g.initial_seed()))[None] for g in generators]
            ).to(init.device, init.dtype)  # (B, 4, h, w)
            return init * (1 - mask) + noise * mask
        return init

    def composite(self, generated: Image.Image) -> Image.Image:
        """Paste back (only masked) and lay the original over the result where the mask keeps it.

        Equivalent to A1111's ``apply_overlay`` (resize mode "crop and resize", paste, alpha composite of
        the original with alpha = 255 - overlay mask), computed in float so that where the overlay mask is
        0 the pixel is exactly the original's.
        """
        base = self.original.copy()
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            base.paste(resize_image(generated, x2 - x1, y2 - y1, "crop_and_resize"), (x1, y1))
        else:
            base = generated
        alpha = np.asarray(self.overlay, dtype=np.float32)[..., None] / 255.0  # (H, W, 1), 1 = generated
        mixed = np.asarray(self.original, dtype=np.float32) * (1 - alpha) + np.asarray(base, dtype=np.float32) * alpha
        return Image.fromarray(np.round(mixed).clip(0, 255).astype(np.uint8))


def prepare_inpaint(
    image: Image.Image,
    mask_src: ImageInput,
    *,
    size: tuple[int, int] | None,
    resize_mode: ResizeMode,
    mask_blur: float,
    masked_content: MaskedContent,
    inpaint_area: InpaintArea,
    padding: int,
    invert: bool,
    multiple: int = 8,
) -> InpaintJob:
    """Build the :class:`InpaintJob` for ``image`` (decoded, RGB, original size) and its mask.

    ``size`` is the requested (W, H) or None for the image size floored to ``multiple`` (as for plain
    generation). Whole picture: image and mask are resized to it and the output has that size. Only
    masked: the crop is processed at that size and pasted back, so the output has the image's size.
    """
    mask = load_mask(mask_src, image.size, invert=invert)
    if mask_blur > 0:
        mask = blur_mask(mask, mask_blur)
    width, height = size if size is not None else floor_to_multiple(image.width, image.height, multiple)
    box = None
    if inpaint_area == "only_masked":
        region = crop_region(mask, padding)
        assert region is not None  # load_mask refuses empty masks; blurring only widens
        box = expand_crop_region(region, width, height, image.width, image.height)
        original, overlay = image, mask
        work_image = resize_image(image.crop(box), width, height, "resize_and_fill")
        work_mask = resize_image(mask.crop(box), width, height, "resize_and_fill")
    else:
        if (width, height) != image.size:
            image, mask = resize_image(image, width, height, resize_mode), resize_image(mask, width, height, resize_mode)
        original, work_image, work_mask = image, image, mask
        overlay = Image.fromarray(np.clip(np.asarray(mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8))
    if masked_content != "original":
        work_image = fill(work_image, work_mask)
    return InpaintJob(work_image, work_mask, original, overlay, box, masked_content)



def inpaint_params(request: GenerationRequest) -> dict[str, object]:
    """A1111's infotext keys for an inpainting (none without a mask): Mask blur, Inpaint area, Masked
    area padding, Masked content, Mask mode, with A1111's value spellings."""
    if request.mask is None:
        return {}
    only_masked, area = a1111.INPAINT_AREAS[request.inpaint_area]
    return {
        "Mask blur": request.mask_blur,
        "Inpaint area": area,
        "Masked area padding": request.padding if only_masked else None,
        "Masked content": a1111.MASKED_CONTENT[request.masked_content][1],
        "Mask mode": a1111.MASK_MODES[request.invert_mask][1],
    }
