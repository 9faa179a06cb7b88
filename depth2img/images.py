"""Decode, normalise and resize images, safely (writing them is outputs.py's job).

Follows the hazards measured on Pillow 13 (reference B2): byte cap -> format allow-list -> header
pixel cap -> ``load()`` with every decoder failure mapped to :class:`InvalidImageError` ->
``exif_transpose`` -> first frame -> an explicit per-mode conversion (never a naive
``convert("RGB")``, which clips 16-bit, blackens float and leaks colour hidden under alpha 0).
Resize modes follow A1111's ``images.resize_image`` (reference 6.2). Nothing here touches Pillow's
globals (``Image.MAX_IMAGE_PIXELS``, warning filters): all checks are local.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError
from .request import ImageInput, ResizeMode

MAX_INPUT_PIXELS = 64 * 1024 * 1024
MAX_INPUT_BYTES = 100 * 1024 * 1024
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
WHITE: tuple[int, int, int] = (255, 255, 255)  # A1111's default img2img_background_color (#ffffff)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# What Pillow's decoders raise on bad input; some plugins still use SyntaxError / struct.error.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, struct.error)


def open_image(src: ImageInput, *, what: str = "image") -> Image.Image:
    """Decode ``src`` (PIL image, ndarray, path or encoded bytes) with every safety check.

    The mode is left as decoded (``I;16``, ``F``... survive); EXIF orientation is applied and only
    the first frame of a multi-frame file is kept. A PIL image passed in is used at its current frame
    and never modified. ``what`` ("image", "mask", "depth map") names the input in error messages.
    """
    if isinstance(src, Image.Image):
        _check_pixels(src.size, what, "")
        return _load(src, what, "")
    if isinstance(src, np.ndarray):
        return _from_array(src, what)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        _check_bytes(len(data), what, "data")
        return _decode(io.BytesIO(data), what, "data")
    if isinstance(src, (str, Path)):
        label = f"{str(src)!r}"
        refuse_url(str(src), what)
        try:
            with open(src, "rb") as fp:
                _check_bytes(os.fstat(fp.fileno()).st_size, what, label)
                return _decode(fp, what, label)
        except FileNotFoundError:
            raise InvalidImageError(f"{what} file not found: {label}") from None
        except IsADirectoryError:
            raise InvalidImageError(f"{what} {label} is a directory, not a file") from None
        except PermissionError:
            raise InvalidImageError(f"{what} {label} is not readable (permission denied)") from None
    raise InvalidImageError(f"{what} must be a PIL image, array, path or bytes, got {type(src).__name__}")


def refuse_url(text: str, what: str) -> None:
    """A URL is never fetched (no network access from the library, no SSRF from a server): say so."""
    if _URL.match(text):
        raise InvalidImageError(f"{what} {text!r} is a URL; depth2img does not fetch URLs: download it and give the file's path")


def load_image(src: ImageInput, *, background: tuple[int, int, int] = WHITE, what: str = "image") -> Image.Image:
    """:func:`open_image` then :func:`to_rgb`: an 8-bit RGB image ready for the pipeline."""
    return to_rgb(open_image(src, what=what), background=background)


def _check_bytes(size: int, what: str, label: str) -> None:
    if size == 0:
        raise InvalidImageError(f"{what} {label} is empty (0 bytes)")
    if size > MAX_INPUT_BYTES:
        raise InvalidImageError(f"{what} {label} is too big: {size} bytes (limit {MAX_INPUT_BYTES})")


def _check_pixels(size: tuple[int, int], what: str, label: str) -> None:
    if size[0] * size[1] > MAX_INPUT_PIXELS:
        name = f"{what} {label}".strip()
        raise InvalidImageError(f"{name} is too large: {size[0]}x{size[1]} (limit {MAX_INPUT_PIXELS} pixels)")


def _decode(fp: io.BufferedIOBase | io.BytesIO, what: str, label: str) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp, formats=list(ALLOWED_FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImageError(f"{what} {label} is too large (limit {MAX_INPUT_PIXELS} pixels)") from None
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"{what} {label} is not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})") from None
        except _DECODE_ERRORS:
            raise InvalidImageError(f"{what} {label} is truncated or corrupt") from None
        with im:
            _check_pixels(im.size, what, label)  # header size, before any pixel is decoded
            im.seek(0)
            return _load(im, what, label)


def _load(im: Image.Image, what: str, label: str) -> Image.Image:
    """Decode the current frame and return an upright, detached copy (``exif_transpose`` copies)."""
    name = f"{what} {label}".strip()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im.load()
            return ImageOps.exif_transpose(im)  # type: ignore[return-value]  # never None (not in place)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImageError(f"{name} is too large (limit {MAX_INPUT_PIXELS} pixels)") from None
        except _DECODE_ERRORS:
            raise InvalidImageError(f"{name} is truncated or corrupt") from None


def _from_array(a: np.ndarray, what: str) -> Image.Image:
    """HW or HWC (C in 1..4) arrays of uint8, uint16, bool or float; float HWC must be in [0, 1]."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or 0 in a.shape:
        raise InvalidImageError(f"{what} array must be HW or HWC with 1-4 channels, got shape {a.shape}")
    _check_pixels((a.shape[1], a.shape[0]), what, "array")
    if a.dtype == np.bool_:
        return Image.fromarray(a) if a.ndim == 2 else Image.fromarray(a.astype(np.uint8) * 255)
    if a.dtype == np.uint8:
        return Image.fromarray(a)
    if a.dtype == np.uint16:
        # Pillow has a 16-bit gray mode (I;16) but no 16-bit colour mode: colour goes to 8 bits.
        return Image.fromarray(a) if a.ndim == 2 else Image.fromarray(_u16_to_u8(a))
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InvalidImageError(f"{what} array contains NaN or infinite values")
        if a.ndim == 2:
            return Image.fromarray(a.astype(np.float32))  # mode F, range kept for depth maps
        if a.min() < 0.0 or a.max() > 1.0:
            raise InvalidImageError(f"{what} float array must be in [0, 1], got [{a.min():g}, {a.max():g}]")
        return Image.fromarray(np.round(a * 255.0).astype(np.uint8))
    raise InvalidImageError(f"{what} array dtype {a.dtype} is not supported (use uint8, uint16, bool or float)")


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)  # 65535 / 257 = 255 exactly


def to_rgb(img: Image.Image, *, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with a defined rule per mode (reference B2 mode table).

    * RGB is returned as is; 1, L, P (opaque), CMYK, YCbCr, LAB, HSV go through Pillow's converters.
    * I;16*: 0..65535 -> 0..255 by /257 (never clipped). I (32-bit): same when its values fit
      0..65535, otherwise its own min..max range is stretched to 0..255.
    * F (float TIFF): scaled, never clipped: values in [0, 1] x255; values in [0, 255] taken as
      8-bit levels; any other range has its own min..max stretched to 0..255. NaN/Inf are refused.
    * Alpha (RGBA, LA, PA, P/L/RGB with a ``transparency`` key) is composited over ``background``,
      like A1111's ``flatten`` with img2img_background_color (default white): the colour hidden under
      alpha 0 never leaks.
    """
    mode = img.mode
    if mode == "RGB" and not img.has_transparency_data:
        return img
    if mode in _GRAY16_MODES:
        return Image.fromarray(_u16_to_u8(np.asarray(img))).convert("RGB")
    if mode == "I":
        a = np.asarray(img).astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 65535:
            a = a / 257.0
        else:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8)).convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise InvalidImageError("image has NaN or infinite pixel values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            a = (a - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.round(a).astype(np.uint8)).convert("RGB")
    if img.has_transparency_data:  # alpha modes, tRNS key, or a P image with an RGBA palette
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", img.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def to_gray_float(img: Image.Image | np.ndarray) -> np.ndarray:
    """One channel as float32 (H, W), normalised by the image's own bit depth, full precision.

    uint8/L -> /255, uint16/I;16 -> /65535, I -> /65535 when it fits else / its max, bool/1 -> 0 or 1,
    float/F as is (neither clipped nor rescaled; the caller decides). Colour: one channel when all
    channels are equal, else ITU-R 601 luma (the weights of Pillow's ``convert("L")``) computed in
    float instead of rounded to 8 bits. Alpha is ignored. Used for masks and depth maps.
    """
    if isinstance(img, Image.Image) and img.mode in ("P", "PA", "RGBa", "La"):
        img = img.convert("RGBA")  # RGBA, not RGB: Pillow warns converting P+transparency to RGB
    elif isinstance(img, Image.Image) and img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] in (1, 2):  # gray(+alpha)
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, :3]
        if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
            a = rgb[:, :, 0]
        else:
            return _scale(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]), rgb.dtype)
    if a.ndim != 2:
        raise InvalidImageError(f"expected an HW or HWC image, got shape {a.shape}")
    return _scale(a, a.dtype)


def _scale(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return a.astype(np.float32)
    if dtype == np.uint8:
        return (a / 255.0).astype(np.float32)
    if dtype.kind == "u" and dtype.itemsize == 2:  # I;16B arrays are big-endian uint16
        return (a / 65535.0).astype(np.float32)
    if dtype.kind in "iu":
        hi = float(a.max())
        return (a / (65535.0 if hi <= 65535 else hi)).astype(np.float32)
    if dtype.kind == "f":
        return a.astype(np.float32)
    raise InvalidImageError(f"image dtype {dtype} is not supported")


def floor_to_multiple(width: int, height: int, multiple: int) -> tuple[int, int]:
    """Round both sides down to a multiple (8 for the VAE, 64 to be safe with the UNet)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    w, h = width - width % multiple, height - height % multiple
    if w == 0 or h == 0:
        raise InvalidImageError(f"image {width}x{height} is smaller than {multiple} pixels on a side")
    return w, h


def resize_image(img: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """A1111's img2img resize modes (``images.resize_image`` 0/1/2, reference 6.2) with LANCZOS.

    just_resize stretches; crop_and_resize scales to cover then centre-crops (``ImageOps.fit``);
    resize_and_fill scales to fit, centres, and fills the empty bands by stretching the picture's
    outermost rows or columns outward, as A1111's mode 2 does. The result keeps ``img.mode``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    if mode == "just_resize":
        return img.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "crop_and_resize":
        return ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    if mode == "resize_and_fill":
        return _resize_and_fill(img, width, height)
    raise ValueError(f"unknown resize mode {mode!r}")


def _resize_and_fill(img: Image.Image, width: int, height: int) -> Image.Image:
    # Pillow's ImageOps.pad fills with a flat colour; A1111 repeats the edge, so this is by hand.
    # Unlike A1111 (which computes both bands from height // 2 - src_h // 2 and can leave a black
    # row when the leftover is odd), the second band takes whatever remains.
    src_ratio, ratio = img.width / img.height, width / height
    if ratio < src_ratio:  # picture is wider: full width, bands above and below
        fw, fh = width, max(1, min(height, round(img.height * width / img.width)))
    else:  # picture is taller (or same ratio): full height, bands left and right
        fw, fh = max(1, min(width, round(img.width * height / img.height))), height
    fitted = img.resize((fw, fh), Image.Resampling.LANCZOS)
    out = Image.new(img.mode, (width, height))
    x0, y0 = (width - fw) // 2, (height - fh) // 2
    out.paste(fitted, (x0, y0))
    near = Image.Resampling.NEAREST  # exact repetition of the 1-pixel edge
    if fh < height:
        top, bottom = fitted.crop((0, 0, fw, 1)), fitted.crop((0, fh - 1, fw, fh))
        if y0:
            out.paste(top.resize((fw, y0), near), (0, 0))
        out.paste(bottom.resize((fw, height - y0 - fh), near), (0, y0 + fh))
    elif fw < width:
        left, right = fitted.crop((0, 0, 1, fh)), fitted.crop((fw - 1, 0, fw, fh))
        if x0:
            out.paste(left.resize((x0, fh), near), (0, 0))
        out.paste(right.resize((width - x0 - fw, fh), near), (x0 + fw, 0))
    return out
