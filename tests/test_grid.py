"""X/Y grids, the img2img-vs-depth2img sweep, and the CLI options of issue 4 (mask, depth controls, sheet)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img import GenerationRequest, load_pipeline
from depth2img.cli import app
from depth2img.errors import InvalidRequestError
from depth2img.grid import Axis, draw_grid, parse_axis, run_grid, sweep
from depth2img.infotext import parse_infotext, read_infotext

from ._reference import corr, estimator_depth
from .conftest import photo


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture()
def cat(tmp_path):
    path = tmp_path / "cat.png"
    photo("chelsea", (48, 32)).save(path)
    return path


def test_parse_axis():
    assert parse_axis("strength", "0.4, 0.6,1") == Axis("strength", (0.4, 0.6, 1.0))
    assert parse_axis("scheduler", "ddim,euler").values == ("ddim", "euler")
    assert parse_axis("steps", "2,4").values == (2, 4)
    with pytest.raises(InvalidRequestError, match="unknown grid axis 'eta'"):
        parse_axis("eta", "0,1")
    with pytest.raises(InvalidRequestError, match="steps values must be ints"):
        parse_axis("steps", "2,four")


def test_run_grid_cells_match_single_generations(tiny_pipe):
    request = GenerationRequest(prompt="x", image=photo("coffee", (32, 24)), steps=4, seed=9, scheduler="ddim")
    grid, firsts = run_grid({"tiny": tiny_pipe}, request, parse_axis("cfg", "1,7"), parse_axis("seed", "9,10"))
    assert grid.row_labels == ["tiny\nSeed: 9", "tiny\nSeed: 10"] and grid.column_labels == ["CFG Scale: 1", "CFG Scale: 7"]
    alone = tiny_pipe.generate(request.replace(guidance_scale=7.0, seed=10)).images[0]
    assert np.array_equal(np.asarray(grid.cells[1][1]), np.asarray(alone))
    assert not np.array_equal(np.asarray(grid.cells[0][0]), np.asarray(grid.cells[0][1]))
    assert firsts["tiny"].seeds == [9]


def test_bad_axis_value_fails_before_any_image(tiny_pipe):
    request = GenerationRequest(prompt="x", image=photo("coffee", (32, 24)), steps=2, seed=1)
    with pytest.raises(InvalidRequestError, match="strength must be in"):
        run_grid({"tiny": tiny_pipe}, request, parse_axis("strength", "0.5,1.5"), on_cell=lambda *_: pytest.fail("ran"))


def test_draw_grid_layout():
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    sheet = draw_grid([[red, None], [blue, red]], ["a", "b"], ["one", "two"])
    a = np.asarray(sheet)
    label_w, header_h = sheet.width - 80, sheet.height - 60
    assert label_w > 0 and header_h > 0
    assert tuple(a[header_h + 15, label_w + 20]) == (255, 0, 0)  # row a, column one
    assert tuple(a[header_h + 45, label_w + 20]) == (0, 0, 255)  # row b, column one
    assert tuple(a[header_h + 2, label_w + 42]) == (224, 224, 224)  # the empty cell
    assert (a[: header_h - 1, label_w:] < 128).any()  # header text was drawn


def test_sweep_rows_models_columns_strengths(tiny_pipe):
    img2img = load_pipeline("tiny-img2img")
    request = GenerationRequest(prompt="x", image=photo("chelsea", (32, 24)), steps=4, seed=2, scheduler="ddim")
    sheet = sweep({"depth": tiny_pipe, "img2img": img2img}, request, [0.5, 1.0])
    assert sheet.height > 2 * 24 and sheet.width > 4 * 32
    cells = sheet.crop((sheet.width - 4 * 32, sheet.height - 2 * 24, sheet.width, sheet.height))
    a = np.asarray(cells).astype(int)
    expected = tiny_pipe.generate(request.replace(strength=1.0)).images[0]
    assert np.abs(a[:24, 96:] - np.asarray(expected).astype(int)).max() <= 1  # row depth, column 1.0
    assert tuple(a[24 + 2, 32 + 2]) == (224, 224, 224)  # img2img has no depth map


def test_cli_sweep_writes_a_grid(cat, tmp_path):
    out = tmp_path / "sweep.png"
    result = run_cli("sweep", "--image", str(cat), "--prompt", "x", "--strengths", "0.5,1.0", "--model", "tiny",
                     "--compare-model", "tiny-img2img", "--steps", "3", "--seed", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        assert sheet.width > 4 * 48 and sheet.height > 2 * 32
    bad = run_cli("sweep", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--strengths", "0.5,x", "--out", str(out))
    assert bad.exit_code == 2 and "strength values must be floats" in bad.output


def test_cli_inpaint_and_depth_controls(cat, tmp_path):
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 16:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "o.png"
    result = run_cli("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "3", "--seed", "1", "--out", str(out),
                     "--mask", str(tmp_path / "mask.png"), "--mask-blur", "0", "--masked-content", "fill",
                     "--inpaint-area", "only_masked", "--padding", "8", "--invert-depth", "--depth-clip", "2,98",
                     "--depth-strength", "0.7", "--depth-end", "0.5")
    assert result.exit_code == 0, result.output
    fields = parse_infotext(read_infotext(out))
    assert fields["Inpaint area"] == "Only masked" and fields["Masked content"] == "fill"
    assert (fields["Depth strength"], fields["Depth end"], fields["Depth clip"]) == ("0.7", "0.5", "2-98")
    with Image.open(out) as got, Image.open(cat) as original:
        kept = mask == 0
        assert np.array_equal(np.asarray(got)[kept], np.asarray(original.convert("RGB"))[kept])


def test_cli_depth_only_and_bad_options(tmp_path):
    depth = tmp_path / "d.npy"
    np.save(depth, np.tile(np.linspace(0, 1, 40, dtype=np.float32), (24, 1)))
    out = tmp_path / "o.png"
    result = run_cli("generate", "--model", "tiny", "--depth", str(depth), "--prompt", "x", "--steps", "2", "--seed", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as got:
        assert got.size == (40, 24)
    for args, message in [
        (["--depth-clip", "2"], "--depth-clip must be two numbers"),
        (["--depth-strength", "2"], "--depth-strength must be in [0, 1]"),  # the flag typed, not the field
        (["--mask", str(depth)], "--mask needs an image to inpaint"),  # depth only: nothing to inpaint
        (["--masked-content", "lama"], "unknown masked_content"),
    ]:
        bad = run_cli("generate", "--model", "tiny", "--depth", str(depth), "--prompt", "x", "--out", str(out), *args)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output


def test_cli_depth_sheet(cat, tmp_path):
    result = run_cli("depth", "--model", "tiny", "--image", str(cat), "--out", str(tmp_path / "d.png"), "--sheet", str(tmp_path / "s.png"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "s.png") as sheet, Image.open(cat) as original:
        assert sheet.size == (3 * 48, 32)
        assert np.array_equal(np.asarray(sheet)[:, :48], np.asarray(original.convert("RGB")))
        gray = np.asarray(sheet)[:, 48:96]
        assert (gray[..., 0] == gray[..., 1]).all() and not (np.asarray(sheet)[:, 96:, 0] == np.asarray(sheet)[:, 96:, 2]).all()
        # white = near: the gray panel follows the estimator's output (larger = nearer), computed here
        expected = estimator_depth(load_pipeline("tiny"), original.convert("RGB"))
        assert corr(gray[..., 0], expected) > 0.99
        with Image.open(tmp_path / "d.png") as single:
            assert corr(np.asarray(single), expected) > 0.99


def test_cli_sweep_mixes_sd2_depth_controlnet_and_img2img_rows(cat, tmp_path):
    """Issue 12: one grid with an SD2-depth row, an SD 1.5 + ControlNet row and a plain img2img row; each row's
    cell equals that model's own generate() on the same request (the library called directly)."""
    out = tmp_path / "mixed.png"
    settings = ["--prompt", "x", "--steps", "3", "--seed", "4", "--scheduler", "ddim"]
    result = run_cli("sweep", "--image", str(cat), *settings, "--strengths", "1.0", "--model", "tiny",
                     "--compare-model", "tiny-sd15,controlnet=tiny-controlnet", "--compare-model", "tiny-img2img",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        a = np.asarray(sheet.convert("RGB")).astype(int)
    w, h = 48, 32
    cells = a[-3 * h:, -3 * w:]  # 3 rows x (input, depth map, strength 1.0)
    request = GenerationRequest(prompt="x", image=photo("chelsea", (48, 32)), steps=3, seed=4, scheduler="ddim", strength=1.0)
    rows = [load_pipeline("tiny"), load_pipeline("tiny-sd15", controlnet="tiny-controlnet"), load_pipeline("tiny-img2img")]
    for r, pipe in enumerate(rows):
        expected = np.asarray(pipe.generate(request).images[0]).astype(int)
        assert np.abs(cells[r * h:(r + 1) * h, 2 * w:] - expected).max() <= 1, r
    controlnet_depth = cells[h:2 * h, w:2 * w]
    assert controlnet_depth.std() > 5  # the control image the ControlNet saw, not the "n/a" cell
    assert tuple(cells[2 * h + 2, w + 2]) == (224, 224, 224)  # plain img2img has no depth map
    bad = run_cli("sweep", "--image", str(cat), *settings, "--model", "tiny", "--compare-model", "tiny-sd15,cn=x",
                  "--out", str(out))
    assert bad.exit_code == 2 and "expected MODEL or MODEL,controlnet=CONTROLNET" in bad.output
