"""Issue 7: the CLI's edges as a new, somewhat adversarial user meets them.

Every class: exit code 2, one line on stderr, no traceback, and — for mistakes that can be seen before
any weights load — no model loaded (checked by making the loader fail loudly, not by timing).
Subprocess tests also prove what a real terminal-less run prints and that no network is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img.cli import app
from depth2img.infotext import read_infotext

from .conftest import photo


@pytest.fixture()
def cat(tmp_path):
    path = tmp_path / "cat.png"
    photo("chelsea", (64, 48)).save(path)
    return path


@pytest.fixture()
def no_loading(monkeypatch):
    """A model load is a failure here: these mistakes must be caught before any weights are read."""
    import depth2img.cli.depth as depth_cmd
    import depth2img.cli.generate as generate_cmd

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was reported")

    monkeypatch.setattr(generate_cmd, "load", refuse)
    monkeypatch.setattr(depth_cmd, "load", refuse)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def gen(cat, *args: str):
    return run("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "2", *args)


def one_line_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expected in lines[0], lines[0]


# -- 1, 2: output targets are checked before any model loads; collisions refused --------------------

@pytest.mark.parametrize(
    "make_args,expected",
    [
        (lambda d: ["--out", str(d) + "/"], "is a folder"),
        (lambda d: ["--out", str(d)], "is a folder"),
        (lambda d: ["--out", ""], "--out is empty"),
        (lambda d: ["--out", str(d / "file.png" / "x.png")], "is a file, not a folder"),
        (lambda d: ["--out", str(d / "o.gif")], "unknown extension '.gif'"),
        (lambda d: ["--out", str(d / "o")], "unknown extension '(none)'"),
        (lambda d: ["--save-depth", str(d / "file.png" / "d.png")], "--save-depth"),
        (lambda d: ["--save-depth", str(d / "d.txt")], "unknown extension '.txt'"),
        (lambda d: ["--out", str(d / "a.png"), "--save-depth", str(d / "a.png")], "same path as --out"),
        (lambda d: ["--out", str(d / "b.png"), "--batch-size", "2", "--save-depth", str(d / "b-1.png")], "same path as --out"),
    ],
    ids=["trailing-slash", "folder", "empty", "parent-is-file", "gif", "no-extension", "depth-parent-is-file",
         "depth-extension", "depth-overwrites-out", "depth-overwrites-batch"],
)
def test_bad_output_targets_fail_before_loading(cat, tmp_path, no_loading, make_args, expected):
    (tmp_path / "file.png").write_bytes(b"x")
    one_line_error(gen(cat, *make_args(tmp_path)), expected)


def test_depth_command_checks_its_outputs_and_flags_first(cat, tmp_path, no_loading):
    one_line_error(run("depth", "--model", "tiny", "--image", str(cat), "--out", str(tmp_path) + "/"), "is a folder")
    one_line_error(run("depth", "--model", "tiny", "--image", str(cat), "--out", str(tmp_path / "d.png"),
                       "--bits", "16", "--colormap"), "--colormap writes an 8-bit")
    one_line_error(run("depth", "--image", str(cat), "--out", str(tmp_path / "d.png")), "give --model")


def test_convert_refuses_bad_targets_before_reading(tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(b"never read")
    (tmp_path / "f").write_bytes(b"x")
    one_line_error(run("convert", str(src), str(tmp_path / "f" / "out.safetensors")), "is a file, not a folder")
    one_line_error(run("convert", str(src), str(src)), "is SRC itself")


def test_a_failed_write_after_generation_keeps_the_picture(cat, tmp_path, monkeypatch):
    """A disk that fails after minutes of generation must not lose the result."""
    import depth2img.outputs as outputs

    target = tmp_path / "out.png"
    real_save = outputs.save_image

    def flaky_save(img, path, **kwargs):
        if Path(path) == target:
            raise OSError(28, "No space left on device")
        return real_save(img, path, **kwargs)

    monkeypatch.setattr(outputs, "save_image", flaky_save)
    result = gen(cat, "--seed", "3", "--out", str(target))
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "No space left on device" in result.output
    fallback = [p for p in tmp_path.glob("out.*.png")]
    assert len(fallback) == 1 and f"wrote {fallback[0]}" in result.output
    assert "Seed: 3" in read_infotext(fallback[0])


# -- 4: the extension names the format -------------------------------------------------------------

@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".webp", "WEBP"), (".png", "PNG")])
def test_out_extension_names_the_format(cat, tmp_path, suffix, fmt):
    out = tmp_path / f"o{suffix}"
    assert gen(cat, "--seed", "5", "--out", str(out)).exit_code == 0
    with Image.open(out) as im:
        assert im.format == fmt
    assert "Seed: 5" in read_infotext(out)  # JPEG/WebP: EXIF UserComment, where A1111 reads it


# -- 5: sizes taken from the image obey the limits -------------------------------------------------

def test_an_oversized_image_is_refused_with_a_hint(tmp_path, no_loading):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (4200, 64), "white").save(wide)
    one_line_error(gen(wide), "largest side depth2img generates is 4096")


def test_an_oversized_image_is_refused_through_the_python_api(tiny_pipe, tmp_path):
    from depth2img.errors import InvalidRequestError

    wide = tmp_path / "wide.png"
    Image.new("RGB", (4200, 64), "white").save(wide)
    with pytest.raises(InvalidRequestError, match="4200x64"):
        tiny_pipe.plan(tiny_pipe.check_inputs(__import__("depth2img").GenerationRequest(prompt="x", image=str(wide))))


# -- 6: options that cannot apply are refused or warned about ---------------------------------------

def test_save_depth_with_a_plain_model_is_refused(cat, tmp_path):
    result = run("generate", "--model", "tiny-img2img", "--image", str(cat), "--prompt", "x", "--steps", "2",
                 "--out", str(tmp_path / "o.png"), "--save-depth", str(tmp_path / "d.png"))
    one_line_error(result, "uses no depth map")
    assert not (tmp_path / "o.png").exists()


def test_strength_in_depth_only_mode_is_warned_about(tmp_path):
    depth = tmp_path / "d.npy"
    np.save(depth, np.tile(np.linspace(0, 1, 32, dtype=np.float32), (24, 1)))
    result = run("generate", "--model", "tiny", "--depth", str(depth), "--prompt", "x", "--steps", "2",
                 "--strength", "0.5", "--out", str(tmp_path / "o.png"))
    assert result.exit_code == 0 and "warning: strength is ignored in depth-only generation" in result.output


def test_mask_options_without_a_mask_are_refused(cat, no_loading):
    one_line_error(gen(cat, "--mask-blur", "8"), "--mask-blur needs a mask")
    one_line_error(gen(cat, "--invert-mask"), "--invert-mask needs a mask")


# -- 8, 9: request + fields; strength 0 ------------------------------------------------------------

def test_fields_override_a_request(tiny_pipe):
    from depth2img import GenerationRequest

    request = GenerationRequest(prompt="x", image=photo("astronaut", (32, 32)), steps=2, seed=1)
    assert tiny_pipe.generate(request, seed=5).seeds == [5]
    with pytest.raises(Exception, match="unknown request field 'sead'"):
        tiny_pipe.generate(request, sead=5)


@pytest.mark.parametrize("scheduler", ["pndm", "ddim"])
def test_strength_zero_returns_the_photo_unchanged(tiny_pipe, scheduler):
    """A1111 returns the input for denoising strength 0; PNDM used to run a step and DDIM to fail."""
    picture = photo("astronaut", (32, 32))
    result = tiny_pipe.generate(prompt="x", image=picture, strength=0.0, steps=4, scheduler=scheduler, seed=1)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(picture))


def test_strength_that_runs_no_step_is_refused_before_loading(cat, no_loading):
    one_line_error(gen(cat, "--strength", "0.1", "--steps", "4"), "runs no denoising step")


# -- 11, 12, 13: required model, flag names, URLs ---------------------------------------------------

def test_model_is_required(cat):
    result = run("generate", "--image", str(cat), "--prompt", "x")
    assert result.exit_code == 2 and "--model" in result.output


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--cfg", "-1"], "--cfg must be in [0, 100], got -1"),
        (["--batch-size", "0"], "--batch-size must be in [1, 64], got 0"),
        (["--resize-mode", "x"], "--resize-mode: unknown resize_mode 'x'"),
        (["--mask-blur", "99"], "--mask-blur must be in [0, 64], got 99"),
        (["--depth-clip", "90,10"], "--depth-clip far percentile must be below near"),
        (["--width", "64"], "give both --width and --height"),
    ],
)
def test_errors_name_the_flags_typed(cat, no_loading, args, expected):
    one_line_error(gen(cat, *args), expected)


def test_a_url_is_not_fetched_and_says_so(no_loading):
    one_line_error(run("generate", "--model", "tiny", "--image", "https://example.com/a.png", "--prompt", "x"),
                   "'https://example.com/a.png' is a URL; depth2img does not fetch URLs")


def test_version():
    from depth2img import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"depth2img {__version__}"


def test_random_seed_is_reported(cat, tmp_path):
    out = tmp_path / "o.png"
    result = gen(cat, "--out", str(out))
    assert result.exit_code == 0
    reported = int(result.output.split("seed ")[1].split()[0])
    assert f"Seed: {reported}," in read_infotext(out)


def test_help_shows_flags_not_python_types():
    text = run("generate", "--help").output
    assert "<bool>" not in text and "--invert-mask" in text and "--version" in run("--help").output


# -- in a real process: stderr shape, no torch for a typo, no network -------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from depth2img.cli import app\n"
        "try:\n    app(prog_name='depth2img', args=sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    sys.stdout.write('torch loaded: %s\\n' % ('torch' in sys.modules)); raise\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_a_typo_fails_fast_in_a_real_process_without_importing_torch(cat, tmp_path):
    done = _cli("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--strength", "7", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --strength must be in [0, 1], got 7"]
    assert "torch loaded: False" in done.stdout


def test_a_real_run_prints_no_blank_line_and_touches_no_network(cat, tmp_path):
    done = _cli("generate", "--model", "tiny", "--image", str(cat), "--prompt", "x", "--steps", "2", "--seed", "4",
                "--out", str(tmp_path / "o.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and lines[0].strip() != "" and lines[-1] == f"wrote {tmp_path / 'o.png'}"


def test_serve_refuses_a_public_bind_without_auth_in_one_line(monkeypatch):
    import depth2img.server.command as command

    monkeypatch.setattr(command, "run", lambda settings: (_ for _ in ()).throw(AssertionError("server started")))
    one_line_error(run("serve", "--host", "0.0.0.0"), "auth")
