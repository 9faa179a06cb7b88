"""Client images in: base64 (A1111's ``decode_base64_to_image`` rules minus URL fetching) and the
pixel limit checked from the header before any pixel is decoded; decoding itself is images.py's
(byte cap, format allow-list, bomb checks, truncated files) and depth.py's for depth maps.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from ..depth import load_depth_map
from ..errors import InvalidImageError, InvalidRequestError
from ..images import ALLOWED_FORMATS, open_image

_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


def decode_b64(text: str, what: str) -> bytes:
    """Bytes of a base64 image. ``http(s)://`` is refused: the server never fetches URLs (no SSRF)."""
    if not isinstance(text, str):
        raise InvalidImageError(f"{what} must be a base64 string")
    head = text[:16].lower()
    if head.startswith(("http://", "https://", "ftp://", "file:")):
        raise InvalidRequestError(
            f"{what}: this server does not fetch URLs (no server-side requests); send the image itself as base64")
    match = _DATA_URL.match(text)
    body = text[match.end():] if match else text
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{what} is not valid base64") from None
    if not data:
        raise InvalidImageError(f"{what} is empty (0 bytes)")
    return data


def check_image(data: bytes, what: str, max_pixels: int, *, depth: bool = False) -> tuple[int, int]:
    """Refuse an image over ``max_pixels`` from its header, then decode it fully (safely); its size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as header:
                width, height = header.size
    except Exception:  # not an image, or a broken header: images.py below says which, in its words
        width = height = 0
    if width * height > max_pixels:
        raise InvalidImageError(f"{what} is too large: {width}x{height} (this server's limit is {max_pixels} pixels)")
    if width == 0 or height == 0:
        if width or height:
            raise InvalidImageError(f"{what} has no pixels ({width}x{height})")
    if depth:
        array = load_depth_map(data)
        return array.shape[1], array.shape[0]
    image = open_image(data, what=what)
    if image.width * image.height > max_pixels:  # a format whose header we could not read above
        raise InvalidImageError(f"{what} is too large: {image.width}x{image.height} (limit {max_pixels} pixels)")
    if 0 in image.size:
        raise InvalidImageError(f"{what} has no pixels ({image.width}x{image.height})")
    return image.size
