"""images.py: safe decoding, per-mode conversion, A1111 resize modes (reference B2, 6.2)."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from depth2img import images
from depth2img.errors import InvalidImageError
from depth2img.images import (
    floor_to_multiple, load_image, open_image, resize_image, to_gray_float, to_rgb,
)


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A real PNG of ~70 bytes whose IHDR declares width x height (8-bit gray), pixel data cut short.

    The zlib stream is cut mid-way: Pillow decodes a *complete* stream that holds fewer rows than
    declared without any error (missing rows come out black), so only a cut stream shows as truncated.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 2)
    idat = idat[: len(idat) // 2]
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())  # 512x512 RGB


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(data.chelsea())  # 451x300 RGB


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())  # 600x400 RGB


def diff(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


# --- decoding: failures ---------------------------------------------------------------------------

def test_good_png_from_path_bytes_and_pil(tmp_path: Path, astronaut: Image.Image) -> None:
    path = tmp_path / "a.png"
    astronaut.save(path)
    for src in (path, str(path), path.read_bytes(), astronaut):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (512, 512)
        assert diff(out, astronaut) == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_invalid(tmp_path: Path, chelsea: Image.Image, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    blob = encode(chelsea, fmt)
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InvalidImageError, match=r"^image '.*cut\..*' is truncated or corrupt$"):
        open_image(path)


def test_random_and_corrupt_bytes(chelsea: Image.Image) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidImageError, match="not a supported image"):
        open_image(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    blob = bytearray(encode(chelsea, "PNG"))
    blob[200:400] = bytes(200)  # corrupt the compressed data, keep the header
    with pytest.raises(InvalidImageError, match="mask data is truncated or corrupt"):
        open_image(bytes(blob), what="mask")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"image '.*empty.png' is empty"):
        open_image(tmp_path / "empty.png")
    with pytest.raises(InvalidImageError, match="image data is empty"):
        open_image(b"")
    with pytest.raises(InvalidImageError, match=r"depth map file not found: '.*nope.png'"):
        open_image(tmp_path / "nope.png", what="depth map")
    with pytest.raises(InvalidImageError, match="is a directory"):
        open_image(tmp_path)


def test_byte_cap(monkeypatch: pytest.MonkeyPatch, chelsea: Image.Image) -> None:
    monkeypatch.setattr(images, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(InvalidImageError, match="too big"):
        open_image(encode(chelsea, "PNG"))


@pytest.mark.parametrize("side", [8200, 10000, 20000])  # own cap / Pillow's warning / Pillow's error
def test_bomb_rejected_from_header(side: int) -> None:
    blob = png_header_only(side, side)
    assert len(blob) < 200
    filters_before, limit_before = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    with pytest.raises(InvalidImageError, match="too large"):
        open_image(blob)
    assert warnings.filters == filters_before and Image.MAX_IMAGE_PIXELS == limit_before


def test_pillow_bomb_warning_is_escalated_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 10**9)  # take our own cap out of the way
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # even when the caller silences warnings
        with pytest.raises(InvalidImageError, match="too large"):
            open_image(png_header_only(10000, 10000))  # Pillow only warns at this size


def test_header_only_png_below_cap_reaches_decoder() -> None:
    # Same crafted file, small size: it gets past the size check and fails in decoding, which shows
    # that the bomb cases above were stopped before any decoding.
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        open_image(png_header_only(64, 64))


def test_non_allowed_formats_rejected(chelsea: Image.Image) -> None:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2",
             "NAXIS1  =                    4", "NAXIS2  =                    4", "END"]
    fits = "".join(c.ljust(80) for c in cards).ljust(2880).encode() + bytes(2880)
    assert Image.open(io.BytesIO(fits)).format == "FITS"  # Pillow would decode it without the allow-list
    for blob in (fits, encode(chelsea, "PPM"), encode(chelsea, "TGA")):
        with pytest.raises(InvalidImageError, match="not a supported image"):
            open_image(blob)


# --- decoding: modes ------------------------------------------------------------------------------

def test_16bit_png_is_scaled_not_clipped(tmp_path: Path, astronaut: Image.Image) -> None:
    gray8 = np.asarray(astronaut.convert("L"))
    path = tmp_path / "g16.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path)
    im = open_image(path)
    assert im.mode == "I;16"  # left as decoded
    rgb = np.asarray(to_rgb(im))
    assert abs(rgb.mean() - gray8.mean()) < 0.01 and (rgb[..., 0] == gray8).all()
    assert np.allclose(to_gray_float(im), gray8 / 255.0, atol=1e-6)


def test_int32_image_scaling() -> None:
    im = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert im.mode == "I"
    assert np.asarray(to_rgb(im))[0, :, 0].tolist() == [0, 255]
    big = Image.fromarray(np.array([[100, 100_000]], dtype=np.int32))
    assert np.asarray(to_rgb(big))[0, :, 0].tolist() == [0, 255]  # own range, no clipping
    assert to_gray_float(big).tolist() == [[pytest.approx(0.001), 1.0]]


def test_float_tiff(tmp_path: Path, coffee: Image.Image) -> None:
    gray = np.asarray(coffee.convert("L")).astype(np.float32) / 255.0
    path = tmp_path / "f.tif"
    Image.fromarray(gray).save(path)
    im = open_image(path)
    assert im.mode == "F"
    assert abs(np.asarray(to_rgb(im)).mean() - gray.mean() * 255) < 0.5
    assert np.array_equal(to_gray_float(im), gray)


def test_float_images_are_scaled_never_clipped() -> None:
    """Issue 7: a float TIFF outside [0, 1] was clipped to white although the README promises scaling."""
    def red(values):
        return np.asarray(to_rgb(Image.fromarray(np.array([values], dtype=np.float32))))[0, :, 0].tolist()

    assert red([0.0, 0.5, 1.0]) == [0, 128, 255]  # unit range: x255
    assert red([0.0, 100.0, 200.0]) == [0, 100, 200]  # 8-bit levels stored as float
    assert red([-1.0, 0.0, 3.0]) == [0, 64, 255]  # any other range: its own min..max
    with pytest.raises(InvalidImageError, match="NaN"):
        to_rgb(Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)))
    im = Image.fromarray(np.array([[-1.0, 0.5, 2.0, 200.0]], dtype=np.float32))
    assert to_gray_float(im)[0, :4].tolist() == [-1.0, 0.5, 2.0, 200.0]  # not clipped there


def test_cmyk_jpeg(coffee: Image.Image) -> None:
    im = open_image(encode(coffee.convert("CMYK"), "JPEG", quality=95))
    assert im.mode == "CMYK"
    assert diff(to_rgb(im), coffee) < 4


def test_palette_without_and_with_transparency(chelsea: Image.Image) -> None:
    pal = chelsea.quantize(64)
    im = open_image(encode(pal, "PNG"))
    assert im.mode == "P" and diff(to_rgb(im), pal.convert("RGB")) == 0

    p = Image.new("P", (4, 2), 0)
    p.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    p.paste(1, (2, 0, 4, 2))
    im = open_image(encode(p, "PNG", transparency=0))
    assert im.mode == "P" and "transparency" in im.info
    out = np.asarray(to_rgb(im))
    assert (out[:, :2] == 255).all() and (out[:, 2:] == [200, 0, 0]).all()
    assert (np.asarray(to_rgb(im, background=(0, 0, 255)))[:, :2] == [0, 0, 255]).all()


def test_rgba_hidden_colour_does_not_leak(astronaut: Image.Image) -> None:
    rgba = astronaut.convert("RGBA")
    arr = np.array(rgba)
    arr[:100, :, :3], arr[:100, :, 3] = (10, 20, 30), 0  # colour hidden under alpha 0
    arr[100:200, :, :3], arr[100:200, :, 3] = (0, 0, 0), 128
    im = open_image(encode(Image.fromarray(arr), "PNG"))
    out = np.asarray(to_rgb(im)).astype(int)
    assert (out[:100] == 255).all()
    assert np.abs(out[100:200] - 127).max() <= 1  # half black over white
    assert (out[200:] == np.asarray(astronaut)[200:]).all()
    la = Image.fromarray(arr).convert("LA")
    assert (np.asarray(to_rgb(la, background=(0, 255, 0)))[:100] == [0, 255, 0]).all()


def test_exif_orientation_6_rotates(chelsea: Image.Image) -> None:
    small = chelsea.resize((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("PNG", "JPEG"):
        im = open_image(encode(small, fmt, exif=exif))
        assert im.size == (20, 40)
        assert 0x0112 not in im.getexif()
    im = open_image(encode(small, "PNG", exif=exif))
    assert diff(im, small.transpose(Image.Transpose.ROTATE_270)) == 0


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    blob = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(blob)).n_frames == 3
    im = load_image(blob)
    assert getattr(im, "n_frames", 1) == 1
    assert (np.asarray(im) == [255, 0, 0]).all()


def test_other_pillow_modes_convert(coffee: Image.Image) -> None:
    for mode in ("YCbCr", "HSV", "L", "1"):
        out = to_rgb(coffee.convert(mode))
        assert out.mode == "RGB" and out.size == coffee.size
    assert diff(to_rgb(coffee.convert("YCbCr")), coffee) < 2
    assert to_rgb(coffee) is coffee


# --- numpy inputs ---------------------------------------------------------------------------------

def test_numpy_inputs_by_dtype(astronaut: Image.Image) -> None:
    rgb = np.asarray(astronaut)
    gray = rgb[..., 0]
    assert diff(load_image(rgb), rgb) == 0
    assert diff(load_image(gray[..., None]), np.stack([gray] * 3, -1)) == 0
    assert open_image(gray).mode == "L"
    assert open_image(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])).mode == "RGBA"
    assert open_image(gray.astype(np.uint16) * 257).mode == "I;16"
    assert diff(load_image(rgb.astype(np.uint16) * 257), rgb) == 0
    assert open_image(gray > 128).mode == "1"
    assert (np.asarray(load_image(np.dstack([gray > 128] * 3)))[..., 0] == (gray > 128) * 255).all()
    assert diff(load_image(rgb / 255.0), rgb) == 0
    f = open_image((gray / 255.0).astype(np.float64))
    assert f.mode == "F" and diff(to_rgb(f), np.stack([gray] * 3, -1)) == 0


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4), np.int64), "dtype int64"),
    (np.zeros((4, 4, 5), np.uint8), "shape"),
    (np.zeros((0, 4), np.uint8), "shape"),
    (np.full((4, 4, 3), 1.5), r"\[0, 1\]"),
    (np.full((4, 4), np.nan), "NaN"),
])
def test_numpy_rejects(bad: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match):
        open_image(bad)


def test_to_gray_float_by_dtype_and_mode(astronaut: Image.Image) -> None:
    rgb = np.asarray(astronaut)
    assert to_gray_float(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_gray_float(np.array([[1, 65535]], np.uint16)).tolist() == [[pytest.approx(1 / 65535), 1.0]]
    assert to_gray_float(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    assert to_gray_float(np.array([[3.5]], np.float64)).dtype == np.float32
    same = np.stack([rgb[..., 1]] * 3, -1)
    assert np.array_equal(to_gray_float(same), rgb[..., 1] / np.float32(255))
    luma = to_gray_float(astronaut)
    assert luma.shape == (512, 512) and luma.dtype == np.float32
    assert np.abs(luma * 255 - np.asarray(astronaut.convert("L"))).max() <= 1.0  # Pillow's L weights
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(0)
    assert np.array_equal(to_gray_float(rgba), luma)  # alpha ignored
    assert np.array_equal(to_gray_float(astronaut.convert("L")), np.asarray(astronaut.convert("L")) / np.float32(255))


# --- geometry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["just_resize", "crop_and_resize", "resize_and_fill"])
@pytest.mark.parametrize("pil_mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize("size", [(256, 128), (100, 300), (101, 51), (512, 512)])
def test_resize_exact_size_and_mode(astronaut: Image.Image, mode: str, pil_mode: str, size: tuple[int, int]) -> None:
    out = resize_image(astronaut.convert(pil_mode), *size, mode)  # type: ignore[arg-type]
    assert out.size == size and out.mode == pil_mode


def test_crop_and_resize_keeps_centre(astronaut: Image.Image) -> None:
    out = resize_image(astronaut, 256, 128, "crop_and_resize")
    centre = astronaut.crop((0, 128, 512, 384)).resize((256, 128), Image.Resampling.LANCZOS)
    assert diff(out, centre) < 1
    assert diff(out, astronaut.resize((256, 128), Image.Resampling.LANCZOS)) > 10  # not a stretch


def test_resize_and_fill_centres_and_repeats_edges(astronaut: Image.Image) -> None:
    out = np.asarray(resize_image(astronaut, 256, 128, "resize_and_fill"))
    whole = np.asarray(astronaut.resize((128, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(out[:, 64:192], whole)  # the whole picture, centred
    assert (out[:, :64] == whole[:, :1]).all() and (out[:, 192:] == whole[:, -1:]).all()

    tall = np.asarray(resize_image(astronaut, 101, 300, "resize_and_fill"))  # odd leftover: 199 rows
    fitted = np.asarray(astronaut.resize((101, 101), Image.Resampling.LANCZOS))
    y0 = (300 - 101) // 2
    assert np.array_equal(tall[y0:y0 + 101], fitted)
    assert (tall[:y0] == fitted[:1]).all() and (tall[y0 + 101:] == fitted[-1:]).all()


def test_floor_to_multiple() -> None:
    assert floor_to_multiple(513, 770, 8) == (512, 768)
    assert floor_to_multiple(512, 512, 64) == (512, 512)
    with pytest.raises(InvalidImageError, match="smaller than 8"):
        floor_to_multiple(7, 100, 8)
