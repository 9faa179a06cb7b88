"""ControlNet through the CLI: options, the A1111 ControlNet infotext read back by `depth2img info`, the
saved control image, own 16-bit depth maps, and depth + mask inpainting with a ControlNet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img import load_pipeline
from depth2img.cli import app
from depth2img.infotext import parse_infotext, read_infotext

from ._reference import corr, minmax_bicubic
from .conftest import photo

MODEL = ["--model", "tiny-sd15", "--controlnet", "tiny-controlnet"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cn")
    photo("astronaut", (64, 48)).save(folder / "in.png")
    y, x = np.mgrid[0:48, 0:64].astype(np.float64)
    depth = np.sin(x / 6.0) + 0.8 * np.cos(y / 5.0) + 0.03 * x  # near = large
    unit = (depth - depth.min()) / (depth.max() - depth.min())
    Image.fromarray(np.round(unit * 65535).astype(np.uint16)).save(folder / "depth16.png")
    small = unit[::2, ::2]  # 32x24: the ControlNet gets it bicubic-resized to the 64x48 output
    Image.fromarray(np.round(small * 65535).astype(np.uint16)).save(folder / "depth16_small.png")
    return folder, unit


def test_generate_writes_the_a1111_controlnet_infotext_and_info_reads_it(files):
    folder, _ = files
    out = folder / "out.png"
    result = run("generate", *MODEL, "--image", str(folder / "in.png"), "--steps", "4", "--seed", "3", "-p", "a cat",
                 "--control-weight", "0.8", "--control-start", "0.25", "--control-end", "0.75",
                 "--control-mode", "controlnet", "--resize-mode", "crop_and_resize", "--width", "64", "--height", "48",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    fields = parse_infotext(read_infotext(out))
    assert fields["ControlNet 0"] == (
        "Module: depth_midas, Model: tiny-controlnet, Weight: 0.8, Resize Mode: Crop and Resize, Guidance Start: 0.25, "
        "Guidance End: 0.75, Pixel Perfect: False, Control Mode: ControlNet is more important")
    shown = run("info", str(out))
    assert shown.exit_code == 0
    assert 'ControlNet 0: "Module: depth_midas, Model: tiny-controlnet, Weight: 0.8,' in shown.output


def test_defaults_are_a1111s(files):
    folder, _ = files
    out = folder / "default.png"
    assert run("generate", *MODEL, "--depth", str(folder / "depth16.png"), "--steps", "2", "--seed", "1",
               "--out", str(out)).exit_code == 0
    unit = parse_infotext(read_infotext(out))["ControlNet 0"]
    assert "Module: none," in unit  # own map: no preprocessor
    assert "Weight: 1, " in unit and "Guidance Start: 0, Guidance End: 1," in unit and "Control Mode: Balanced" in unit


def test_saved_control_image_is_the_own_16_bit_map(files):
    folder, unit = files
    out, saved = folder / "own.png", folder / "control.png"
    small = np.asarray(Image.open(folder / "depth16_small.png")).astype(np.float64)
    result = run("generate", *MODEL, "--image", str(folder / "in.png"), "--depth", str(folder / "depth16_small.png"),
                 "--steps", "2", "--seed", "2", "--out", str(out), "--save-depth", str(saved))
    assert result.exit_code == 0, result.output
    control = np.asarray(Image.open(saved)).astype(np.float64) / 65535
    assert control.shape == (48, 64)  # full output size, not the map's or the latent's
    assert corr(control, unit) > 0.99
    expected = (minmax_bicubic(small, (48, 64))[0, 0].numpy().astype(np.float64) + 1) / 2  # diffusers' resize
    assert np.abs(control - expected).max() < 2 / 65535  # normalised in float, quantised once


def test_control_options_are_refused_without_a_controlnet(files):
    folder, _ = files
    result = run("generate", "--model", "tiny", "--image", str(folder / "in.png"), "--steps", "2",
                 "--control-weight", "0.5", "--out", str(folder / "x.png"))
    assert result.exit_code == 2
    assert "without a ControlNet" in result.output


def test_inpainting_with_a_controlnet_keeps_unmasked_pixels_exactly(files):
    folder, unit = files
    pipe = load_pipeline("tiny-sd15", controlnet="tiny-controlnet")
    image = photo("astronaut", (64, 48))
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 8, 48, 40))
    result = pipe.generate(prompt="a cat", image=image, mask=mask, mask_blur=0, depth_map=unit.astype(np.float32),
                           steps=4, seed=4, strength=1.0, scheduler="ddim")
    out = np.asarray(result.images[0]).astype(int)
    kept = np.asarray(mask) == 0
    assert np.array_equal(out[kept], np.asarray(image).astype(int)[kept])
    assert np.abs(out - np.asarray(image).astype(int))[~kept].mean() > 10  # the masked region was repainted
    control = (result.depth_map.normalized[0, 0].numpy() + 1) / 2
    assert corr(control, unit) > 0.99  # the own map went to the ControlNet
