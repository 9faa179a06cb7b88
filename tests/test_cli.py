"""The CLI contract: option names, output files, one-line errors with exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img.cli import app
from depth2img.infotext import parse_infotext, read_infotext

from ._reference import corr, estimator_depth, minmax_bicubic
from .conftest import photo


@pytest.fixture()
def cat(tmp_path):
    path = tmp_path / "cat.png"
    photo("chelsea", (64, 48)).save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_generate_batch_writes_numbered_files_with_infotext(cat, tmp_path):
    out = tmp_path / "res" / "out.png"
    result = run(
        "generate", "--model", "tiny", "--image", str(cat), "--prompt", "a tiger", "--negative-prompt", "blur",
        "--strength", "0.9", "--steps", "4", "--cfg", "6", "--seed", "10", "--scheduler", "ddim",
        "--batch-size", "2", "--width", "48", "--height", "32", "--resize-mode", "crop_and_resize",
        "--out", str(out), "--save-depth", str(tmp_path / "depth.npy"),
    )
    assert result.exit_code == 0, result.output
    for i in range(2):
        fields = parse_infotext(read_infotext(tmp_path / "res" / f"out-{i}.png"))
        assert (fields["Seed"], fields["Size"], fields["Negative prompt"]) == (str(10 + i), "48x32", "blur")
    depth = np.load(tmp_path / "depth.npy")
    assert depth.shape == (4, 6) and depth.min() == -1 and depth.max() == 1
    assert not (tmp_path / "res" / "out.png").exists()


def test_own_depth_map_option(cat, tmp_path):
    depth_png = tmp_path / "depth.png"
    gradient = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1))
    Image.fromarray(gradient).save(depth_png)
    out = tmp_path / "o.png"
    result = run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "2", "--strength", "1",
                 "--depth", str(depth_png), "--out", str(out), "--seed", "1", "--save-depth", str(tmp_path / "d.npy"))
    assert result.exit_code == 0, result.output
    assert parse_infotext(read_infotext(out))["Depth"] == "own map"
    # the map was used: what the UNet got is the 16-bit gradient, resized and min-max normalised
    used = np.load(tmp_path / "d.npy")
    assert np.allclose(used, minmax_bicubic(gradient.astype(np.float32) / 65535, (6, 8))[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--strength", "1.5"], "strength must be in [0, 1], got 1.5"),
        (["--scheduler", "nope"], "unknown scheduler 'nope'"),
        (["--steps", "0"], "steps must be in [1, 1000], got 0"),
        (["--width", "50", "--height", "64"], "width must be a multiple of 8"),
        (["--model", "/no/such/model"], "no model '/no/such/model'"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(cat, tmp_path, args, message):
    out = tmp_path / "never.png"
    result = run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("content,message", [(b"", "is empty"), (b"not an image at all", "is not a supported image"), (None, "not found")])
def test_bad_image_files(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    result = run("generate", "--model", "tiny", "--image", str(path), "--prompt", "x", "--steps", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output.lower()


def test_existing_output_survives_a_failed_run(cat, tmp_path):
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    result = run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--strength", "7", "--out", str(out))
    assert result.exit_code == 2 and out.read_bytes() == b"precious"


def test_depth_command_16_bit_and_colormap(cat, tmp_path):
    gray, colour = tmp_path / "d16.png", tmp_path / "dc.png"
    assert run("depth", "--model", "tiny", "--image", str(cat), "--out", str(gray), "--bits", "16").exit_code == 0
    assert run("depth", "--model", "tiny", "--image", str(cat), "--out", str(colour), "--colormap").exit_code == 0
    with Image.open(gray) as g, Image.open(colour) as c:
        assert (g.mode, g.size) == ("I;16", (64, 48))
        assert (c.mode, c.size) == ("RGB", (64, 48))
        gray16, rgb = np.asarray(g).astype(float), np.asarray(c).astype(float)
    # orientation: white (and Turbo red) where the estimator says near (larger output), computed here
    from depth2img import load_pipeline

    with Image.open(cat) as picture:
        expected = estimator_depth(load_pipeline("tiny"), picture.convert("RGB"))
    assert corr(gray16, expected) > 0.99
    unit = (expected - expected.min()) / (expected.max() - expected.min())
    nearest, far = np.unravel_index(np.argmax(unit), unit.shape), (unit > 0.1) & (unit < 0.3)
    assert rgb[nearest][0] > rgb[nearest][2] + 100  # Turbo's near end is red
    assert far.sum() > 20 and (rgb[far][:, 2] > rgb[far][:, 0]).all()  # its far side blue
    bad = run("depth", "--model", "tiny", "--image", str(cat), "--out", str(gray), "--bits", "12")
    assert bad.exit_code == 2 and "--bits must be 8 or 16" in bad.output


def test_info_reads_back_and_refuses_plain_images(cat, tmp_path):
    out = tmp_path / "o.png"
    assert run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "a, b: c", "--steps", "2", "--seed", "3", "--out", str(out)).exit_code == 0
    shown = run("info", str(out))
    assert shown.exit_code == 0 and "Prompt: a, b: c" in shown.output and "Seed: 3" in shown.output
    plain = run("info", str(cat))
    assert plain.exit_code == 2 and "carries no generation parameters" in plain.output


def test_help_explains_every_option():
    text = run("generate", "--help").output
    for option in ("--model", "--image", "--prompt", "--negative-prompt", "--strength", "--steps", "--cfg", "--seed",
                   "--scheduler", "--batch-size", "--width", "--height", "--resize-mode", "--depth", "--depth-model",
                   "--out", "--save-depth", "--device", "--dtype"):
        assert option in text
