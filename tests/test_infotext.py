"""infotext.py: A1111 generation parameters text (reference section 9)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from depth2img.errors import InvalidImageError
from depth2img.outputs import save_image as save_png
from depth2img.infotext import build_infotext, parse_infotext, read_infotext

A1111_EXAMPLE = (
    "a stone castle, oil painting\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x512, "
    "Model hash: 0123456789, Model: 512-depth-ema, Denoising strength: 0.75, Mask blur: 4, "
    "Inpaint area: Only masked, Masked area padding: 32, Version: v1.10.1"
)
EXAMPLE_PARAMS: dict[str, object] = {
    "Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7, "Seed": 1234567890,
    "Size": "512x512", "Model hash": "0123456789", "Model": "512-depth-ema", "Denoising strength": 0.75,
    "Mask blur": 4, "Inpaint area": "Only masked", "Masked area padding": 32, "Version": "v1.10.1",
}


def test_build_matches_a1111_example() -> None:
    assert build_infotext("a stone castle, oil painting", "blurry", EXAMPLE_PARAMS) == A1111_EXAMPLE


def test_parse_a1111_example() -> None:
    parsed = parse_infotext(A1111_EXAMPLE)
    assert parsed == {"Prompt": "a stone castle, oil painting", "Negative prompt": "blurry",
                      **{k: str(v) for k, v in EXAMPLE_PARAMS.items()}}
    assert list(parsed)[2:] == list(EXAMPLE_PARAMS)  # key order kept


def test_build_skips_none_keeps_order_and_omits_empty_negative() -> None:
    text = build_infotext(" cat ", "", {"Seed": 1, "VAE": None, "Steps": 2, "Eta": 0.0})
    assert text == "cat \nSeed: 1, Steps: 2, Eta: 0.0"  # like A1111, only the whole string is stripped


def test_a1111_quoting() -> None:
    text = build_infotext("p", "", {"Lora hashes": "a: 12, b: 34", "Plain": "x y", "Multi": "l1\nl2"})
    assert text.splitlines()[-1] == 'Lora hashes: "a: 12, b: 34", Plain: x y, Multi: "l1\\nl2"'
    # A1111-written quoted values parse back.
    assert parse_infotext('p\nSteps: 5, Lora hashes: "a: 12, b: 34", TI hashes: "x: 1"')["Lora hashes"] == "a: 12, b: 34"


AWKWARD = ["a, b", "key: value", "line1\nline2", 'say "hi"', '"quoted"', '"', "back\\slash", "\\n literal",
           "unicode ✓ ünïcödé 日本語", "", " spaced ", "trailing,", "{\"json\": [1, 2]}", "a\r\nb", "x: \"y, z\""]


@pytest.mark.parametrize("value", AWKWARD)
def test_round_trip_awkward_values(value: str) -> None:
    params = {"Steps": 20, "Odd": value, "CFG scale": 7.5, "Flag": True}
    prompt, negative = "a castle: big, old\n(second line)", "blurry, ugly\nsecond: negative"
    parsed = parse_infotext(build_infotext(prompt, negative, params))
    assert parsed == {"Prompt": prompt, "Negative prompt": negative,
                      "Steps": "20", "Odd": value, "CFG scale": "7.5", "Flag": "True"}


def test_parse_without_parameter_line() -> None:
    assert parse_infotext("just a prompt: with a colon") == {"Prompt": "just a prompt: with a colon",
                                                             "Negative prompt": ""}
    assert parse_infotext("a cat\nNegative prompt: dog, ugly") == {"Prompt": "a cat",
                                                                   "Negative prompt": "dog, ugly"}
    assert parse_infotext("line one\nline two, with comma") == {"Prompt": "line one\nline two, with comma",
                                                                "Negative prompt": ""}
    assert parse_infotext("") == {"Prompt": "", "Negative prompt": ""}


def test_parse_empty_prompt_with_parameters() -> None:
    # A1111 drops the empty prompt line by stripping; a lone line needs 3+ pairs to count as parameters.
    text = build_infotext("", "", {"Steps": 20, "Sampler": "Euler", "CFG scale": 7})
    assert text == "Steps: 20, Sampler: Euler, CFG scale: 7"
    assert parse_infotext(text) == {"Prompt": "", "Negative prompt": "", "Steps": "20", "Sampler": "Euler",
                                    "CFG scale": "7"}


@pytest.mark.parametrize("key", ["Prompt", "Negative prompt", "bad:key", "a,b", " lead", "new\nline", ""])
def test_build_rejects_bad_keys(key: str) -> None:
    with pytest.raises(ValueError, match="infotext key"):
        build_infotext("p", "", {key: 1})


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.chelsea()).resize((64, 43))


def test_png_round_trip_through_file(tmp_path: Path, photo: Image.Image) -> None:
    text = build_infotext("a cat ✓, painted", "dog", {"Steps": 20, "Note": "a, b: c\nd", "Size": "64x43"})
    path = save_png(photo, tmp_path / "out.png", infotext=text)
    for src in (path, str(path), path.read_bytes()):
        assert read_infotext(src) == text
    with Image.open(path) as im:
        assert read_infotext(im) == text
    parsed = parse_infotext(read_infotext(path) or "")
    assert parsed["Prompt"] == "a cat ✓, painted" and parsed["Note"] == "a, b: c\nd"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_exif_user_comment(photo: Image.Image, fmt: str, encoding: str) -> None:
    text = build_infotext("château, night", "", {"Steps": 20, "Seed": 1})
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode(encoding)  # how A1111/piexif store it
    buf = io.BytesIO()
    photo.save(buf, fmt, exif=exif)
    assert read_infotext(buf.getvalue()) == text


def test_absent_and_corrupt(tmp_path: Path, photo: Image.Image) -> None:
    plain = save_png(photo, tmp_path / "plain.png", extra_text={"Software": "x"})
    assert read_infotext(plain) is None
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    assert read_infotext(buf.getvalue()) is None
    with pytest.raises(InvalidImageError):
        read_infotext(plain.read_bytes()[:60])


def test_gif_comment(photo: Image.Image) -> None:
    buf = io.BytesIO()
    photo.save(buf, "GIF", comment="a cat\nSteps: 20, Seed: 3".encode())
    assert read_infotext(buf.getvalue()) == "a cat\nSteps: 20, Seed: 3"
