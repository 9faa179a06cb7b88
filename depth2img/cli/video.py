"""``depth2img video`` (a clip or a frames folder restyled with temporal coherence) and
``depth2img video-metrics`` (warping error and frame difference of a result).

The generation options are generate's (GENERATE_FIELDS through request_options) minus ``--image``,
which comes from ``--input``. See depth2img/batch/video.py (frames folder, resume, encoding) and
depth2img/batch/temporal.py (what each --temporal and --depth-norm mode does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..executors.base import ModelSpec
from ..request import GenerationRequest, flag
from .generate import GENERATE_FIELDS
from .handling import err, one_line_errors, say, warn
from .loading import load
from .options import (CompileOpt, DepthModelOpt, DeviceOpt, DtypeOpt, ExecutorOpt, GpusPerWorkerOpt, LowMemoryOpt, ModelOpt,
                      RayAddressOpt, WorkersOpt, decode_inputs, executor_for, request_options, to_request_fields)

VIDEO_FIELDS = tuple(name for name in GENERATE_FIELDS if name != "image")


@one_line_errors
@request_options(VIDEO_FIELDS)
def video(
    model: ModelOpt,
    output: Annotated[Path, typer.Option("--output", help="Output video (.mp4), at the source's frame rate, with its audio.")],
    input: Annotated[Optional[Path], typer.Option("--input", help="A video file (mp4, mov, webm...) or a folder of frames. Omit with --depth-dir for a depth-only video.")] = None,
    frames_dir: Annotated[Optional[Path], typer.Option("--frames-dir", help="Where frames are written first (default: OUTPUT without suffix + '.frames').")] = None,
    start: Annotated[int, typer.Option("--start", help="First frame index.", min=0)] = 0,
    end: Annotated[Optional[int], typer.Option("--end", help="Stop before this frame index.", min=1)] = None,
    stride: Annotated[int, typer.Option("--stride", help="Use every K-th frame (the output rate is divided by K).", min=1)] = 1,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Frame rate of a frames folder (default 24).")] = None,
    depth_dir: Annotated[Optional[Path], typer.Option("--depth-dir", help="Own depth maps, one per frame, in name order.")] = None,
    temporal: Annotated[str, typer.Option("--temporal", help="none (new noise per frame), fixed-noise, or fusion (fixed noise + the previous output frame, flow-warped and encoded, blended into the latents).")] = "fusion",
    depth_norm: Annotated[str, typer.Option("--depth-norm", help="frame (per-frame min-max), clip (one range for the clip) or ema (running range).")] = "clip",
    fusion_strength: Annotated[float, typer.Option("--fusion-strength", help="How strongly fusion pulls towards the warped previous frame, 0..1.")] = 0.8,
    color_coherence: Annotated[bool, typer.Option("--color-coherence", help="Match each frame's colours to the first (LAB histograms).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Keep frames already rendered with the same settings; render only the missing ones.")] = False,
    depth_model: DepthModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    compile: CompileOpt = False,
    low_memory: LowMemoryOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    *,
    fields: dict[str, Any],
) -> None:
    """Restyle a video frame by frame, with less flicker (shared noise, clip depth range, latent fusion)."""
    from ..batch.metrics import frame_difference, warping_error
    from ..batch.video import FRAME_SUFFIXES, VideoOptions, decode_video, encode_video, render_frames
    from ..errors import InvalidRequestError
    from ..outputs import Target, check_targets

    options = VideoOptions(temporal, depth_norm, fusion_strength, color_coherence=color_coherence).check()
    if input is None and depth_dir is None:
        raise InvalidRequestError("give --input (a video or a frames folder), or --depth-dir for a depth-only video")
    request_fields = to_request_fields(fields)
    stand_in = {"image": "(each frame)"} if input is not None else {"depth_map": "(each depth map)"}
    if input is not None and request_fields.get("depth_map") is not None:
        stand_in["depth_map"] = "(given by --depth)"  # read per frame by the renderer
    GenerationRequest(**{**request_fields, **stand_in}).validate(label=flag)
    if request_fields.get("batch_size", 1) != 1:
        raise InvalidRequestError("--batch-size must be 1 for a video (one picture per frame)")
    check_targets([Target("--output", (output,), (".mp4", ".mov", ".mkv", ".webm"))])
    frames_dir = frames_dir or output.with_suffix(".frames")
    depth_frames = None
    if depth_dir is not None:
        if not depth_dir.is_dir():
            raise InvalidRequestError(f"--depth-dir '{depth_dir}' is not a folder")
        depth_frames = sorted(p for p in depth_dir.iterdir() if p.suffix.lower() in FRAME_SUFFIXES + (".npy",))[start:end:stride]
    clip = decode_video(input, frames_dir, start=start, end=end, stride=stride, fps=fps) if input is not None else None
    if request_fields.get("depth_map") is not None:  # one own depth map (--depth) for every frame
        if depth_frames is not None:
            raise InvalidRequestError("give --depth (one map for every frame) or --depth-dir, not both")
        if clip is None:
            raise InvalidRequestError("--depth needs --input; for a depth-only video give --depth-dir")
        depth_frames = [Path(request_fields["depth_map"])] * len(clip.frames)
    request = GenerationRequest(**{**decode_inputs(request_fields), **stand_in})

    spec = ModelSpec(model, device, dtype, depth_model, compile=compile, low_memory=low_memory)  # the load options, once
    _, runner = executor_for(executor, ray_address, workers, gpus_per_worker, None, lambda: pipe, spec)
    if executor == "ray" and (options.temporal == "fusion" or options.color_coherence):
        warn([f"--temporal {options.temporal}{' with --color-coherence' if options.color_coherence else ''}: every "
              "frame needs the one before, so the frames render in order in this process, not on Ray"])
    pipe = load(spec.model, spec.device, spec.dtype, spec.depth_model, low_memory=spec.low_memory, compile=spec.compile)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("", total=None)
        try:
            rendered = render_frames(
                pipe, request, clip.frames if clip else None, frames_dir, options, depth_frames=depth_frames, resume=resume,
                settings={"model": model, "depth_model": depth_model, "device": device, "dtype": dtype,
                          **({"low_memory": True} if low_memory else {})},  # VAE tiling changes big frames' pixels
                on_frame=lambda t, n, status: progress.update(task, total=n, advance=1),
                executor=runner if executor == "ray" else None,
            )
        finally:
            runner.close()
    warn(rendered.notes)
    from fractions import Fraction

    rate = clip.fps if clip else Fraction(str(fps or 24)).limit_denominator(1001) / stride
    encode_video(rendered.frames, output, rate, audio=clip.audio if clip else None, audio_offset=clip.audio_offset if clip else 0.0)
    say(f"wrote {output} ({len(rendered.frames)} frames at {rate} fps; {rendered.rendered} rendered, {rendered.skipped} resumed)")
    outs = [read_frames_png(p) for p in rendered.frames]
    sources = [read_frames_png(p) for p in clip.frames] if clip else None
    if sources is not None and sources[0].shape != outs[0].shape:
        sources = None  # resized output: flow from the output itself
    say(f"warping error {warping_error(outs, sources):.5f} (flow from the {'source' if sources else 'output'}), "
        f"frame difference {frame_difference(outs):.5f}")


def read_frames_png(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@one_line_errors
def video_metrics(
    clip: Annotated[Path, typer.Argument(help="The video to measure (or a frames folder).", show_default=False)],
    source: Annotated[Optional[Path], typer.Option("--source", help="The source clip: the flow is computed on it (Lai et al.).")] = None,
) -> None:
    """Print the warping error (Lai et al. 2018, occlusion-masked) and the mean frame-to-frame difference."""
    from ..batch.metrics import frame_difference, warping_error
    from ..batch.video import read_frames
    from ..errors import InvalidRequestError

    for what, path in (("clip", clip), ("--source", source)):
        if path is not None and not path.exists():
            raise InvalidRequestError(f"{what} '{path}' does not exist")
    outs = read_frames(clip)
    sources = read_frames(source) if source is not None else None
    if sources is not None and (len(sources) != len(outs) or sources[0].shape != outs[0].shape):
        raise InvalidRequestError(f"--source has {len(sources)} frames of {sources[0].shape[1]}x{sources[0].shape[0]}, "
                                  f"the clip {len(outs)} of {outs[0].shape[1]}x{outs[0].shape[0]}: they must match")
    typer.echo(f"warping_error\t{warping_error(outs, sources):.6f}")
    typer.echo(f"frame_difference\t{frame_difference(outs):.6f}")
    typer.echo(f"frames\t{len(outs)}")
