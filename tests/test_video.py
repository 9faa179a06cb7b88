"""Video: I/O round trip, DIS flow, the warping-error metric, depth normalisation over the clip,
fixed noise, fusion, colour coherence, resume. Synthetic clips from scikit-image photos, whose true
motion is known; the tiny random model (64 px, few steps)."""

from __future__ import annotations

import wave
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img.cli import app

PAN = (2.0, 1.0)  # px per frame (dx, dy) of the content's motion source → view
SIZE = 64


def big_photo(name: str = "astronaut", side: int = 256) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).resize((side, side), Image.Resampling.LANCZOS))


def pan_clip(count: int, step=PAN, size: int = SIZE, name: str = "astronaut") -> list[np.ndarray]:
    """Crops of a photo moving right/down by ``step`` a frame: frame t(x) = P(x + o + t·step), so the
    true flow from frame t to t+1 is -step everywhere (integer steps: exact crops)."""
    photo = big_photo(name)
    dx, dy = int(step[0]), int(step[1])
    return [photo[40 + t * dy : 40 + t * dy + size, 60 + t * dx : 60 + t * dx + size].copy() for t in range(count)]


def true_flow(step=PAN, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    forward = np.zeros((size, size, 2), np.float32)
    forward[..., 0], forward[..., 1] = -step[0], -step[1]
    return forward, -forward


def save_frames(frames, folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        paths.append(folder / f"{t:03d}.png")
        Image.fromarray(frame).save(paths[-1])
    return paths


def write_clip(path, frames, fps, audio_seconds: float | None = None):
    """An mp4 written straight through imageio-ffmpeg (not our encoder), optionally with a sine track."""
    import imageio_ffmpeg

    audio = None
    if audio_seconds:
        audio = path.with_suffix(".wav")
        with wave.open(str(audio), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes((np.sin(np.arange(int(8000 * audio_seconds)) * 0.2) * 3000).astype("<i2").tobytes())
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, macro_block_size=1, quality=9,
                                         audio_path=str(audio) if audio else None, audio_codec="aac" if audio else None)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def ffmpeg_header(path) -> str:
    import subprocess

    import imageio_ffmpeg

    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


# -- I/O -------------------------------------------------------------------------------------------


def test_mp4_round_trip_keeps_frame_count_rate_and_audio(tmp_path):
    import imageio_ffmpeg

    from depth2img.batch.video import decode_video, encode_video

    src = write_clip(tmp_path / "src.mp4", pan_clip(7), Fraction(30000, 1001), audio_seconds=0.5)
    clip = decode_video(src, tmp_path / "frames")
    assert len(clip.frames) == 7 and clip.fps == Fraction(30000, 1001) and clip.audio == src
    out = encode_video(clip.frames, tmp_path / "out.mp4", clip.fps, audio=clip.audio)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(out))  # independent of our reader
    assert frames == 7
    header = ffmpeg_header(out)
    assert "29.97 fps" in header and "Audio: aac" in header
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


# -- flow and metric --------------------------------------------------------------------------------


def test_dis_flow_end_point_error_on_the_pan_is_below_a_quarter_pixel():
    from depth2img.batch.flow import dis_flow

    a, b = pan_clip(2, step=(3, 2), size=128)
    flow = dis_flow(a, b)
    inner = flow[16:-16, 16:-16]  # away from the borders where content leaves the frame
    epe = float(np.sqrt(((inner - np.array([-3.0, -2.0], np.float32)) ** 2).sum(-1)).mean())
    assert epe < 0.25, epe


def test_warping_error_ranks_identical_jitter_noise_and_flags_texture_sticking():
    from depth2img.batch.metrics import frame_difference, warping_error

    frames = pan_clip(6, size=96)
    rng = np.random.default_rng(0)
    unit = [f.astype(np.float32) / 255 for f in frames]
    jitter = [np.clip(f * (1 + 0.05 * rng.choice([-1, 1])), 0, 1) for f in unit]
    noise = [np.clip(f + rng.normal(0, 0.05, f.shape), 0, 1).astype(np.float32) for f in unit]
    fixed = rng.normal(0, 0.05, unit[0].shape)
    sticking = [np.clip(f + fixed, 0, 1).astype(np.float32) for f in unit]
    e = {name: warping_error(v, unit) for name, v in
         {"identical": unit, "jitter": jitter, "noise": noise, "sticking": sticking}.items()}
    assert e["identical"] < e["jitter"] < e["noise"], e
    assert e["sticking"] > 5 * e["identical"] and e["sticking"] > e["jitter"], e
    # the plain frame difference cannot tell sticking from the clean clip (within 10 %): E_warp can
    assert abs(frame_difference(sticking) - frame_difference(unit)) < 0.1 * frame_difference(unit)
    # the clip really is an exact shift (numpy), so the identical clip's error is only DIS's own error
    exact = np.mean([((unit[t][1:, 2:] - unit[t + 1][:-1, :-2]) ** 2).sum(-1).mean() for t in range(5)])
    assert exact == 0 and e["identical"] < 2e-3, e


# -- temporal modes on the tiny model -------------------------------------------------------------------


def entering_clip(count: int = 5):
    """A static photo with a near square sliding in from the left; own depth maps: a far background
    ramp (0..0.5) and the square at 1.0 (white = near). Returns frames, depths, background masks."""
    photo = big_photo("coffee")[:SIZE, :SIZE]
    ramp = np.tile(np.linspace(0.0, 0.5, SIZE, dtype=np.float32), (SIZE, 1))
    frames, depths, backgrounds = [], [], []
    for t in range(count):
        frame, depth = photo.copy(), ramp.copy()
        right = 8 + 12 * t if t else 0  # frame 0: nothing has entered yet
        frame[20:44, :right] = (250, 30, 30)
        depth[20:44, :right] = 1.0
        frames.append(frame)
        depths.append(depth)
        background = np.ones((SIZE // 8, SIZE // 8), bool)
        background[1:7, : right // 8 + 2] = False  # the square plus a latent pixel of bicubic reach
        backgrounds.append(background)
    return frames, depths, backgrounds


@pytest.fixture()
def recorded_runs(tiny_pipe, monkeypatch):
    """Every Result the pipeline returns, with the noise each run drew (spy on randn_tensor)."""
    import depth2img.pipeline as pipeline_module

    results, noises = [], []
    run, draw = tiny_pipe.run, pipeline_module.randn_tensor
    monkeypatch.setattr(tiny_pipe, "run", lambda plan, **kw: results.append(run(plan, **kw)) or results[-1])
    monkeypatch.setattr(pipeline_module, "randn_tensor", lambda *a, **kw: noises.append(draw(*a, **kw)) or noises[-1])
    return results, noises


def render(pipe, frames, folder, **options):
    from depth2img import GenerationRequest
    from depth2img.batch.video import VideoOptions, render_frames

    depth_paths = options.pop("depths", None)
    request = GenerationRequest(prompt="a painting", image="(each frame)", steps=4, strength=options.pop("strength", 0.7),
                                seed=3, scheduler="ddim", guidance_scale=1.0)
    done = render_frames(pipe, request, save_frames(frames, folder / "src"), folder / "frames", VideoOptions(**options),
                         depth_frames=depth_paths)
    return [np.asarray(Image.open(p)) for p in done.frames]


def test_clip_depth_normalisation_has_less_background_flicker_than_per_frame(tiny_pipe, recorded_runs, tmp_path):
    frames, depths, backgrounds = entering_clip()
    depth_paths = []
    for t, d in enumerate(depths):
        depth_paths.append(tmp_path / f"d{t}.npy")
        np.save(depth_paths[-1], d)
    results, _ = recorded_runs
    flicker = {}
    for norm in ("frame", "clip", "ema"):
        results.clear()
        render(tiny_pipe, frames, tmp_path / norm, temporal="fixed-noise", depth_norm=norm, depths=depth_paths)
        fed = [r.depth_map.normalized[0, 0].numpy() for r in results]  # what the UNet's 5th channel got
        flicker[norm] = np.mean([np.abs(fed[t] - fed[t + 1])[backgrounds[t] & backgrounds[t + 1]].mean() for t in range(4)])
    # numpy reference for "clip": the background is static, one range → the same values every frame
    assert flicker["clip"] < 1e-6, flicker
    assert flicker["frame"] > 0.1 and flicker["ema"] < flicker["frame"], flicker


def test_fixed_noise_starts_every_frame_from_the_same_noise(tiny_pipe, recorded_runs, tmp_path):
    import torch

    _, noises = recorded_runs
    frames = pan_clip(3)
    render(tiny_pipe, frames, tmp_path / "fixed", temporal="fixed-noise")
    assert len(noises) == 3 and all(torch.equal(noises[0], n) for n in noises[1:])
    noises.clear()
    render(tiny_pipe, frames, tmp_path / "none", temporal="none")
    assert not torch.equal(noises[0], noises[1])
    # same frame thrice + fixed noise → three identical pictures (nothing else varies per frame)
    outs = render(tiny_pipe, [frames[0]] * 3, tmp_path / "same", temporal="fixed-noise")
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[1], outs[2])


def test_warping_error_fusion_below_fixed_noise_below_none(tiny_pipe, tmp_path):
    from depth2img.batch.metrics import warping_error

    frames = pan_clip(6)
    flows = [true_flow()] * 5  # the exact pan flow, not DIS: independent of the code under test
    e = {mode: warping_error(render(tiny_pipe, frames, tmp_path / mode, temporal=mode), flows=flows)
         for mode in ("none", "fixed-noise", "fusion")}
    print("E_warp", e)
    assert e["fixed-noise"] < 0.75 * e["none"], e
    # fusion's target is the previous *picture* warped and VAE-encoded (it does not blur frame after frame,
    # test_video_fixes.py); the tiny random VAE's encode(decode(z)) is far from z, so the pull reaches the
    # picture only in part here: measured 0.974x fixed-noise (the old latent warp gave 0.90x, but blurred)
    assert e["fusion"] < 0.99 * e["fixed-noise"], e


def test_color_coherence_matches_lab_histograms_to_the_first_frame():
    import cv2
    from skimage.exposure import match_histograms

    from depth2img.batch.temporal import match_channel, match_colors

    first = big_photo("astronaut")[:64, :64]
    other = big_photo("coffee")[:64, :64]
    ours = match_colors(other, first)
    source, target = cv2.cvtColor(other, cv2.COLOR_RGB2LAB), cv2.cvtColor(first, cv2.COLOR_RGB2LAB)
    reference = match_histograms(source, target, channel_axis=-1)  # skimage casts back to uint8 (floors)
    for c in range(3):
        assert np.abs(match_channel(source[..., c], target[..., c]).astype(int) - reference[..., c].astype(int)).max() <= 1
    # and the colours moved towards the first frame's
    assert np.abs(ours.mean((0, 1)) - first.mean((0, 1))).sum() < np.abs(other.mean((0, 1)) - first.mean((0, 1))).sum()


# -- the command: encode, metrics, resume -------------------------------------------------------------


def test_video_command_resumes_after_a_kill_byte_identical(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setattr("depth2img.cli.video.load", lambda *a, **k: tiny_pipe)
    src = write_clip(tmp_path / "src.mp4", pan_clip(5), Fraction(12), audio_seconds=0.5)
    args = ["video", "--model", "tiny", "--input", str(src), "--prompt", "a painting", "--steps", "3", "--strength", "1",
            "--seed", "5", "--temporal", "fusion", "--color-coherence"]
    full = CliRunner().invoke(app, args + ["--output", str(tmp_path / "full.mp4")])
    assert full.exit_code == 0, full.output
    assert "warping error" in full.output and "5 frames at 12 fps" in full.output
    header = ffmpeg_header(tmp_path / "full.mp4")
    assert "12 fps" in header and "Audio:" in header

    run, calls = tiny_pipe.run, []

    def killed(plan, **kw):  # the process dies while rendering the 4th frame
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return run(plan, **kw)

    monkeypatch.setattr(tiny_pipe, "run", killed)
    part = CliRunner().invoke(app, args + ["--output", str(tmp_path / "part.mp4")])
    assert part.exit_code == 130 and not (tmp_path / "part.mp4").exists()
    monkeypatch.setattr(tiny_pipe, "run", lambda plan, **kw: calls.append(1) or run(plan, **kw))
    calls.clear()
    resumed = CliRunner().invoke(app, args + ["--output", str(tmp_path / "part.mp4"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 2 and "2 rendered, 3 resumed" in resumed.output
    for name in [f"{t:06d}.png" for t in range(5)]:
        assert (tmp_path / "part.frames" / "out" / name).read_bytes() == (tmp_path / "full.frames" / "out" / name).read_bytes()

    metrics = CliRunner().invoke(app, ["video-metrics", str(tmp_path / "part.mp4"), "--source", str(src)])
    assert metrics.exit_code == 0 and "warping_error" in metrics.output and "frames\t5" in metrics.output


def test_one_depth_map_for_every_frame_and_a_depth_only_video(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setattr("depth2img.cli.video.load", lambda *a, **k: tiny_pipe)
    ramp = np.tile(np.linspace(0, 65535, SIZE, dtype=np.uint16), (SIZE, 1))
    Image.fromarray(ramp).save(tmp_path / "depth.png")
    frames = save_frames(pan_clip(3), tmp_path / "frames")
    common = ["--model", "tiny", "--prompt", "x", "--steps", "2", "--strength", "1", "--seed", "1", "--temporal", "fixed-noise"]
    results, run = [], tiny_pipe.run
    monkeypatch.setattr(tiny_pipe, "run", lambda plan, **kw: results.append(run(plan, **kw)) or results[-1])
    result = CliRunner().invoke(app, ["video", *common, "--input", str(frames[0].parent), "--depth", str(tmp_path / "depth.png"),
                                      "--output", str(tmp_path / "a.mp4")])
    assert result.exit_code == 0, result.output
    assert len(results) == 3  # every frame got the given map (the tiny estimator's output is no ramp)
    assert all(np.corrcoef(r.depth_map.raw.ravel(), ramp.ravel().astype(float))[0, 1] > 0.9999 for r in results)
    depths = tmp_path / "depths"
    depths.mkdir()
    for t in range(4):
        Image.fromarray(np.roll(ramp, 4 * t, axis=1)).save(depths / f"{t:03d}.png")
    result = CliRunner().invoke(app, ["video", *common, "--depth-dir", str(depths), "--output", str(tmp_path / "d.mp4"), "--fps", "8"])
    assert result.exit_code == 0, result.output
    import imageio_ffmpeg

    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "d.mp4"))[0] == 4 and "8 fps" in ffmpeg_header(tmp_path / "d.mp4")


def test_low_memory_video_renders_the_same_frames_and_releases_the_estimator(tiny_pipe, tmp_path):
    """Pass 1 estimates every frame's depth with the estimator restored once (CPU low memory releases it between
    uses); the frames equal the plain pipeline's. 32-px frames: one tile of the tiny VAE, so tiling does not apply."""
    from depth2img import load_pipeline

    low = load_pipeline("tiny", low_memory=True)
    frames = [frame[:32, :32] for frame in pan_clip(3)]
    plain_frames = render(tiny_pipe, frames, tmp_path / "plain", temporal="fixed-noise")
    restores = low.releaser.restores
    low_frames = render(low, frames, tmp_path / "low", temporal="fixed-noise")
    assert all(np.array_equal(a, b) for a, b in zip(plain_frames, low_frames))
    assert low.releaser.restores > restores
    assert all(t.device.type == "meta" for t in [*low.depth_estimator.parameters(), *low.depth_estimator.buffers()])
