"""Depth export orientation (white = near) everywhere, and CLI contracts: checkpoint cache folder,
Ctrl-C exit code, sweep rows, models --hash.

Orientation is checked against something whose near side is known: an own gradient map (near = large
values on the right), or the depth estimator's raw output computed here (MiDaS convention: larger =
nearer). A flipped export fails every test.
"""

from __future__ import annotations

import hashlib

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from depth2img.cli import app

from ._reference import corr, estimator_depth, minmax_bicubic
from ._sd2_layout import TINY_YAML, tiny_original_state_dict
from .conftest import photo

W, H = 64, 48
GRADIENT = np.tile(np.linspace(0.0, 1.0, W, dtype=np.float32), (H, 1))  # far (0) on the left, near (1) on the right


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.float64)


@pytest.fixture()
def cat(tmp_path):
    path = tmp_path / "cat.png"
    photo("chelsea", (W, H)).save(path)
    return path


@pytest.fixture(scope="module")
def own_result(tiny_pipe):
    return tiny_pipe.generate(prompt="x", image=photo("chelsea", (W, H)), depth_map=GRADIENT, steps=2, seed=1,
                              scheduler="ddim")


# -- DepthMaps.to_image ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["raw", "normalized"])
@pytest.mark.parametrize("bits", [8, 16])
def test_to_image_is_white_near(own_result, which, bits):
    image = np.asarray(own_result.depth_map.to_image(which, bits=bits)).astype(np.float64)
    top = 255 if bits == 8 else 65535
    assert image[:, -1].min() == top and image[:, 0].max() == 0  # near (right) white, far (left) black
    assert (np.diff(image.mean(axis=0)) >= 0).all()


def test_to_image_colormap_is_red_near_blue_far(own_result):
    rgb = np.asarray(own_result.depth_map.to_image("raw", colormap=True)).astype(float)
    far, near = rgb[:, 2 : W // 4].mean((0, 1)), rgb[:, -W // 4 : -2].mean((0, 1))
    assert near[0] > near[2] + 100 and far[2] > far[0] + 100  # Turbo: red = near, blue = far


# -- CLI exports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", ["8", "16"])
def test_depth_command_exports_the_estimate_white_near(tiny_pipe, cat, tmp_path, bits):
    out = tmp_path / "d.png"
    result = run("depth", "--model", "tiny", "--image", str(cat), "--out", str(out), "--bits", bits)
    assert result.exit_code == 0, result.output
    expected = estimator_depth(tiny_pipe, photo("chelsea", (W, H)))
    assert corr(read(out), expected) > 0.99


def test_save_depth_png_and_npy_are_white_near(cat, tmp_path):
    np.save(tmp_path / "own.npy", GRADIENT)
    for name in ("d.png", "d.npy"):
        result = run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "2", "--seed", "1",
                     "--depth", str(tmp_path / "own.npy"), "--out", str(tmp_path / "o.png"),
                     "--save-depth", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    png = read(tmp_path / "d.png")
    assert png[:, -1].min() == 65535 and png[:, 0].max() == 0  # 16-bit, white = near
    npy = np.load(tmp_path / "d.npy")
    assert np.allclose(npy, minmax_bicubic(GRADIENT, (H // 8, W // 8))[0, 0].numpy(), atol=1e-5)
    assert npy[:, -1].min() > 0.9 and npy[:, 0].max() < -0.9


def test_sweep_depth_column_is_white_near(tiny_pipe, cat, tmp_path):
    out = tmp_path / "sweep.png"
    result = run("sweep", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--strengths", "1.0", "--steps", "2", "--seed", "1",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    grid = read(out)
    label_w, header_h = grid.shape[1] - 3 * W, grid.shape[0] - H  # columns: input, depth map, 1.0
    cell = grid[header_h:, label_w + W : label_w + 2 * W, 0]
    assert corr(cell, estimator_depth(tiny_pipe, photo("chelsea", (W, H)))) > 0.95


def test_sweep_y_axis_adds_rows_with_those_values(tiny_pipe, cat, tmp_path):
    """--y cfg=5,9: one row per value (height = header + 2 cell heights), each row rendered at that cfg:
    every cell equals a generation made here with that cfg and strength (so rows and order are pinned)."""
    two = tmp_path / "two.png"
    result = run("sweep", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--strengths", "0.5,1.0", "--steps", "2", "--seed", "4",
                 "--y", "cfg=5,9", "--out", str(two))
    assert result.exit_code == 0, result.output
    double = read(two)
    label_w, header_h = double.shape[1] - 4 * W, double.shape[0] - 2 * H
    assert 0 < header_h < H and label_w > 0  # a label band on top and on the left, then 2 rows of cells
    assert (double[:header_h] == 255).mean() > 0.8  # the header is a (mostly white) label band, not a cell row
    picture = photo("chelsea", (W, H))
    for row, cfg in enumerate((5.0, 9.0)):
        for col, strength in enumerate((0.5, 1.0)):
            x, y = label_w + (2 + col) * W, header_h + row * H
            want = np.asarray(tiny_pipe.generate(prompt="x", image=picture, steps=2, seed=4, strength=strength,
                                                 guidance_scale=cfg).images[0]).astype(np.float64)
            assert np.abs(double[y : y + H, x : x + W] - want).max() <= 1, (cfg, strength)


# -- checkpoint cache, Ctrl-C, models --hash -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    path = d / "tiny-depth.ckpt"
    torch.save({"state_dict": tiny_original_state_dict(seed=1)}, path)
    (d / "tiny-depth.yaml").write_text(TINY_YAML)
    return path


def _generate_from(ckpt, cat, out):
    return run("generate", "--model", str(ckpt), "--image", str(cat), "--prompt", "x", "--steps", "1",
               "--strength", "1", "--seed", "1", "--out", str(out))


def test_ckpt_is_converted_once_into_depth2img_cache(tiny_ckpt, cat, tmp_path, monkeypatch):
    cache = tmp_path / "mycache"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEPTH2IMG_CACHE", str(cache))
    assert _generate_from(tiny_ckpt, cat, tmp_path / "a.png").exit_code == 0
    entries = list(cache.rglob("*.safetensors"))
    assert len(entries) == 1
    stamp = entries[0].stat().st_mtime_ns
    assert _generate_from(tiny_ckpt, cat, tmp_path / "b.png").exit_code == 0
    assert list(cache.rglob("*.safetensors")) == entries and entries[0].stat().st_mtime_ns == stamp  # not redone
    assert not (tmp_path / "home" / ".cache").exists()
    assert np.array_equal(read(tmp_path / "a.png"), read(tmp_path / "b.png"))  # the cached copy is the model


def test_ckpt_cache_defaults_to_home_and_empty_turns_it_off(tiny_ckpt, cat, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DEPTH2IMG_CACHE", raising=False)
    assert _generate_from(tiny_ckpt, cat, tmp_path / "a.png").exit_code == 0
    assert len(list((home / ".cache" / "depth2img").rglob("*.safetensors"))) == 1
    off = tmp_path / "home2"
    monkeypatch.setenv("HOME", str(off))
    monkeypatch.setenv("DEPTH2IMG_CACHE", "")
    assert _generate_from(tiny_ckpt, cat, tmp_path / "b.png").exit_code == 0
    assert not list(off.rglob("*.safetensors"))


def test_ctrl_c_during_generation_exits_130_and_writes_nothing(cat, tmp_path, monkeypatch):
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "forward", interrupted)
    out = tmp_path / "never.png"
    result = run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "2", "--out", str(out))
    assert calls, "the interrupt did not come from inside generation"
    assert result.exit_code == 130
    assert "interrupted" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_models_hash_prints_a1111_short_hash(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = tmp_path / "models" / "Stable-diffusion"
    root.mkdir(parents=True)
    path = root / "mini-depth.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.arange(5 * 9 * 4.0).reshape(4, 5, 3, 3)}, str(path))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    result = run("models", str(tmp_path / "models"), "--hash", "--no-hf-cache")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "mini-depth" in line)
    assert row.split()[-1] == expected
