"""Video in and out (imageio-ffmpeg's bundled ffmpeg), the frames folder, and the frame renderer.

- :func:`decode_video` writes the source frames as ``FRAMES/source/000000.png``… (atomic, existing
  frames kept), records the frame rate as an exact fraction and whether there is audio. A folder of
  frames is used as it is (sorted by name).
- :func:`render_frames` runs the pipeline once per frame, writing ``FRAMES/out/000000.png`` (the PNG is
  the "done" mark; fusion starts the next frame from this picture). ``FRAMES/render.json`` holds the
  settings and ``FRAMES/manifest.jsonl`` one record per finished frame with its key: the sha256 of what
  the frame depends on (settings, the source frame's and depth map's file hashes, its depth range and,
  with fusion or colour coherence, the previous frame's key). ``resume`` skips a frame only when its
  output exists and its key is unchanged, so a crash loses at most one frame, a changed source frame is
  rendered again (with the frames that build on it), and the result is byte-identical.
- :func:`encode_video` encodes at the source's exact rate (divided by the stride) with libx264/yuv420p
  and copies the source's audio stream (from the start frame on) without re-encoding.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from .manifest import MANIFEST_NAME, append_record, file_hash, read_manifest, settings_hash

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_NTSC = {23.98: Fraction(24000, 1001), 23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001),
         47.95: Fraction(48000, 1001), 59.94: Fraction(60000, 1001), 119.88: Fraction(120000, 1001)}


@dataclass
class Clip:
    frames: list[Path]  # source frame files, in order (after start/end/stride)
    fps: Fraction  # the output rate: the source's exact rate / stride
    audio: Path | None = None  # the file to copy audio from (None: no audio)
    audio_offset: float = 0.0  # seconds into the source where the first frame is
    notes: list[str] = field(default_factory=list)


def exact_fps(text: str | float) -> Fraction:
    """ffmpeg prints rates rounded ("29.97 fps"); NTSC rates are N·1000/1001, others are taken as printed."""
    value = float(text)
    if round(value, 3) in _NTSC or round(value, 2) in _NTSC:
        return _NTSC.get(round(value, 3), _NTSC.get(round(value, 2)))  # type: ignore[return-value]
    return Fraction(str(text)).limit_denominator(1001)


def probe(path: Path) -> tuple[Fraction, bool]:
    """(frame rate, has audio) of a video file, from ffmpeg's stream header."""
    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    header = proc.stderr
    video = [line for line in header.splitlines() if "Stream #" in line and "Video:" in line]
    if not video:
        raise InvalidRequestError(f"--input '{path}' has no video stream (or is not a video ffmpeg can read)")
    match = re.search(r" ([0-9]+(?:\.[0-9]+)?) fps", video[0]) or re.search(r" ([0-9]+(?:\.[0-9]+)?) tbr", video[0])
    if not match:
        raise InvalidRequestError(f"--input '{path}': ffmpeg reports no frame rate")
    return exact_fps(match.group(1)), any("Stream #" in line and "Audio:" in line for line in header.splitlines())


def decode_video(path: Path, frames_dir: Path, *, start: int = 0, end: int | None = None, stride: int = 1,
                 fps: float | None = None) -> Clip:
    """Frames of ``path`` (a video file or a folder of frames) from ``start`` to ``end`` (frame indices,
    end exclusive) every ``stride``; video frames are written to ``frames_dir/source`` first."""
    from ..outputs import save_image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise InvalidRequestError(f"--input '{path}' holds no frames ({', '.join(FRAME_SUFFIXES)})")
        rate = Fraction(str(fps)).limit_denominator(1001) if fps else Fraction(24)
        return Clip(files[start:end:stride], rate / stride)
    if not path.is_file():
        raise InvalidRequestError(f"--input '{path}' does not exist")
    import imageio_ffmpeg

    rate, has_audio = probe(path)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    kept: list[Path] = []
    for index, raw in enumerate(reader):
        if end is not None and index >= end:
            reader.close()
            break
        if index < start or (index - start) % stride:
            continue
        target = frames_dir / "source" / f"{index:06d}.png"
        frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
        if not _same_pixels(target, frame):  # a frame kept from an earlier run is replaced if the video changed
            from PIL import Image

            save_image(Image.fromarray(frame), target)
        kept.append(target)
    if not kept:
        raise InvalidRequestError(f"--input '{path}': no frames in the range start {start}, end {end}")
    return Clip(kept, rate / stride, audio=path if has_audio else None, audio_offset=float(start / rate))


def _same_pixels(path: Path, frame: np.ndarray) -> bool:
    if not path.exists():
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.array_equal(np.asarray(image.convert("RGB")), frame)
    except OSError:
        return False


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file (or a frames folder) as (H, W, 3) uint8."""
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(path.iterdir()) if p.suffix.lower() in FRAME_SUFFIXES]
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    return [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy() for raw in reader]


def encode_video(frames: Sequence[Path], out: Path, fps: Fraction, *, audio: Path | None = None,
                 audio_offset: float = 0.0, quality: float = 8) -> Path:
    """Encode PNG frames to ``out`` at exactly ``fps`` (libx264, yuv420p; odd sizes padded by ffmpeg's
    macro-block rule), muxing the first audio stream of ``audio`` unchanged. Atomic (outputs.py)."""
    import imageio_ffmpeg
    from PIL import Image

    from ..outputs import atomic_output

    size = Image.open(frames[0]).size
    with atomic_output(out) as final:
        video_only = final.with_name(final.stem + ".video" + final.suffix) if audio is not None else final
        try:
            writer = imageio_ffmpeg.write_frames(str(video_only), size, fps=fps, quality=quality, macro_block_size=1,
                                                 ffmpeg_log_level="error")
            writer.send(None)
            for path in frames:
                writer.send(np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))))
            writer.close()
            if audio is not None:
                command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video_only),
                           "-ss", f"{audio_offset:.6f}", "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                           "-c", "copy", "-shortest", str(final)]
                subprocess.run(command, check=True, capture_output=True)
        finally:
            if video_only != final:
                video_only.unlink(missing_ok=True)
    return out


# -- rendering ----------------------------------------------------------------------------------------


@dataclass
class VideoOptions:
    temporal: str = "fusion"  # none | fixed-noise | fusion
    depth_norm: str = "clip"  # frame | clip | ema
    fusion_strength: float = 0.8
    fusion_end: float = 0.8  # fraction of the steps during which fusion acts
    color_coherence: bool = False

    def check(self) -> VideoOptions:
        from .temporal import DEPTH_NORMS, TEMPORAL_MODES

        if self.temporal not in TEMPORAL_MODES:
            raise InvalidRequestError(f"--temporal {self.temporal!r}: choose one of {', '.join(TEMPORAL_MODES)}")
        if self.depth_norm not in DEPTH_NORMS:
            raise InvalidRequestError(f"--depth-norm {self.depth_norm!r}: choose one of {', '.join(DEPTH_NORMS)}")
        if not 0.0 <= self.fusion_strength <= 1.0:
            raise InvalidRequestError(f"--fusion-strength must be in [0, 1], got {self.fusion_strength:g}")
        return self


@dataclass
class Rendered:
    frames: list[Path]
    rendered: int
    skipped: int
    notes: list[str]


def render_frames(
    pipe: Any,
    request: Any,
    frames: Sequence[Path] | None,
    frames_dir: Path,
    options: VideoOptions,
    *,
    depth_frames: Sequence[Path] | None = None,
    resume: bool = False,
    settings: dict[str, Any] | None = None,
    on_frame: Callable[[int, int, str], None] | None = None,
    executor: Any = None,
) -> Rendered:
    """Render every frame (see the module docstring). ``frames`` None with ``depth_frames``: depth-only
    video. ``request`` carries everything but the per-frame image, depth map and seed.

    Estimated depths are computed once (pass 1, cached in ``FRAMES/depth``) and handed to the pipeline
    as the frame's map, so the clip range is computed on exactly what is normalised; ``Plan.own_depth``
    says which it was, so an estimated frame's infotext says so (not "own map").

    ``executor`` (depth2img/executors; None: this process, ``pipe``): frames that do not depend on each
    other (``--temporal none``/``fixed-noise`` without colour coherence) are handed to it as work items, each
    with its depth map, clip depth range and seed, and render in parallel on a Ray pool. Fusion and
    colour coherence need the previous/first frame, so they always render here, in order. Either way each
    rendered frame is recorded in ``FRAMES/manifest.jsonl`` under the key of what it depends on."""
    from PIL import Image

    from ..depth import estimate_depth, load_depth_map
    from ..devices import depth_device
    from ..lowmem import on_device
    from ..images import load_image
    from ..outputs import atomic_output, save_image
    from ..request import resolve_seeds
    from .flow import dis_flow, occlusion
    from .temporal import LatentFusion, depth_ranges, frame_seed, fusion_target, match_colors, resized_depths

    options.check()
    if request.batch_size != 1:
        raise InvalidRequestError("--batch-size must be 1 for a video (one picture per frame)")
    count = len(frames) if frames is not None else len(depth_frames or [])
    if depth_frames is not None and frames is not None and len(depth_frames) != count:
        raise InvalidRequestError(f"--depth-dir has {len(depth_frames)} depth maps for {count} frames")
    frames_dir = Path(frames_dir)
    state_path = frames_dir / "render.json"
    state = _read_json(state_path) if resume else {}
    base = request.seed
    if base is None or base == -1:
        base = state.get("base_seed") if isinstance(state.get("base_seed"), int) else resolve_seeds(None, 1)[0]
    common = {"options": vars(options), "request": _request_settings(request), "settings": settings or {},
              "base_seed": base, "frames": [str(p) for p in frames or []],
              "depth_frames": [str(p) for p in depth_frames or []]}
    fingerprint = settings_hash(common)
    reuse = resume and state.get("settings_hash") == fingerprint
    with atomic_output(state_path) as tmp:
        tmp.write_text(json.dumps({"settings_hash": fingerprint, "base_seed": base, **common}, indent=1, default=str))

    notes: list[str] = []
    views: dict[int, Image.Image | None] = {}

    def view(t: int) -> Image.Image | None:  # the picture the model sees for frame t
        if t not in views:
            views[t] = None if frames is None else pipe.load_init_image(request.replace(image=load_image(frames[t])))
        return views[t]

    sources = [file_hash(p) for p in frames] if frames is not None else [None] * count
    depth_sources = [file_hash(p) for p in depth_frames] if depth_frames is not None else [None] * count

    # pass 1: every depth map (own, or estimated once and cached per source content), then the ranges
    raws: list[np.ndarray] = []
    estimating = depth_frames is None and pipe.depth_estimator is not None
    # low memory: the estimator is restored (or moved to the GPU) once for the whole pass, released after it
    with on_device(pipe, pipe.depth_estimator if estimating else None, depth_device(pipe.device)):
        for t in range(count):
            if depth_frames is not None:
                raws.append(load_depth_map(depth_frames[t]))
                continue
            cached = frames_dir / "depth" / f"{t:06d}-{sources[t][:16]}.npy"
            if reuse and cached.exists():
                raws.append(np.load(cached))
                continue
            raw = estimate_depth(pipe.depth_estimator, pipe.feature_extractor, view(t))[0].numpy()
            with atomic_output(cached) as tmp, open(tmp, "wb") as handle:
                np.save(handle, raw)
            raws.append(raw)
    first_size = view(0).size if frames is not None else pipe.depth_only_size(raws[0], request)
    latent_size = (first_size[1] // pipe.vae_scale_factor, first_size[0] // pipe.vae_scale_factor)
    ranges = depth_ranges(resized_depths(raws, latent_size, request), options.depth_norm) if pipe.backend.uses_depth else [None] * count

    # pass 2: the frames
    out_paths = [frames_dir / "out" / f"{t:06d}.png" for t in range(count)]
    fusion = options.temporal == "fusion"
    previous: np.ndarray | None = None  # the previous output picture (fusion warps it to this frame)
    first_picture: np.ndarray | None = None
    rendered = skipped = 0
    manifest = frames_dir / MANIFEST_NAME
    done = read_manifest(manifest) if resume else {}
    chained = fusion or options.color_coherence  # a frame built on the previous (or first) output frame
    keys: list[str] = []  # each frame's key: its settings, source, depth, range (and the previous key if chained)
    for t in range(count):
        keys.append(settings_hash({"settings": fingerprint, "source": sources[t], "depth": depth_sources[t],
                                   "range": ranges[t], "previous": keys[-1] if chained and keys else ""}))

    def finished(t: int) -> bool:
        return resume and out_paths[t].exists() and done.get(str(t), {}).get("key") == keys[t]

    def record(t: int) -> None:
        append_record(manifest, {"item": str(t), "key": keys[t], "source": sources[t], "depth": depth_sources[t]})

    if not chained:  # independent frames: work items for the executor
        from ..executors.base import WorkItem
        from ..executors.local import LocalExecutor

        executor = executor if executor is not None else LocalExecutor(lambda: pipe)
        items = []
        for t in range(count):
            if finished(t):
                skipped += 1
                _report(on_frame, t, count, "skipped")
                continue
            items.append(WorkItem(f"{t:06d}", frames[t] if frames is not None else None,
                                  request.replace(depth_map=raws[t]), frame_seed(base, t, options.temporal),
                                  (out_paths[t],), ranges[t], own_depth=depth_frames is not None))
        for result in executor.run(items):
            if result.status != "ok":
                raise InvalidRequestError(f"frame {result.name}: {result.error}")
            notes.extend(w.split(": ", 1)[1] for w in result.warnings if w.split(": ", 1)[1] not in notes)
            record(int(result.name))
            rendered += 1
            _report(on_frame, int(result.name), count, "rendered")
        return Rendered(out_paths, rendered, skipped, notes)
    for t in range(count):
        if finished(t):
            previous = np.asarray(Image.open(out_paths[t]).convert("RGB")) if fusion else None
            skipped += 1
            _report(on_frame, t, count, "skipped")
            continue
        fields: dict[str, Any] = {"depth_map": raws[t], "seed": frame_seed(base, t, options.temporal)}
        if frames is not None:
            fields["image"] = load_image(frames[t])
        plan = pipe.plan(request.replace(**fields))
        plan.depth_range = ranges[t]
        plan.own_depth = depth_frames is not None
        if fusion and t > 0 and previous is not None:
            now, before = _flow_picture(view(t), raws[t]), _flow_picture(view(t - 1), raws[t - 1])
            to_previous, to_current = dis_flow(now, before), dis_flow(before, now)
            target, mask = fusion_target(pipe, previous, to_previous, ~occlusion(to_previous, to_current), latent_size)

            def wrap(scheduler: Any, timesteps: Any, noise: Any, target: Any = target, mask: Any = mask) -> Any:
                return LatentFusion(scheduler, target, noise, mask, timesteps, options.fusion_strength, options.fusion_end)

            plan.wrap_scheduler = wrap
        result = pipe.run(plan)
        notes.extend(w for w in result.warnings if w not in notes)
        picture = np.asarray(result.images[0].convert("RGB"))
        if options.color_coherence:
            if t == 0:
                first_picture = picture
            else:
                if first_picture is None:
                    first_picture = np.asarray(Image.open(out_paths[0]).convert("RGB"))
                picture = match_colors(picture, first_picture)
        previous = picture if fusion else None
        save_image(Image.fromarray(picture), out_paths[t], infotext=result.infotexts[0])
        record(t)
        rendered += 1
        _report(on_frame, t, count, "rendered")
    return Rendered(out_paths, rendered, skipped, notes)


def _flow_picture(image: Any, raw: np.ndarray) -> np.ndarray:
    """What the flow is computed on: the frame the model sees, or (depth-only video) the depth map."""
    if image is not None:
        return np.asarray(image.convert("RGB"))
    span = float(raw.max() - raw.min()) or 1.0
    return np.round((raw - raw.min()) / span * 255).astype(np.uint8)


def _request_settings(request: Any) -> dict[str, Any]:
    import dataclasses

    skip = ("image", "depth_map", "seed")
    values = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in skip}
    if request.mask is not None:
        values["mask"] = "given"
    return values


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _report(on_frame: Callable[[int, int, str], None] | None, t: int, count: int, status: str) -> None:
    if on_frame is not None:
        on_frame(t, count, status)
