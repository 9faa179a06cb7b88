"""Per-frame cost of each temporal mode relative to plain per-frame generation (a ratio), and E_warp.

A synthetic pan (crops of scikit-image's astronaut moving (2, 1) px a frame) rendered with the chosen
model: plain per-frame generation (``pipe.generate`` per frame, fresh seed), then
``render_frames`` with ``--temporal none``, ``fixed-noise`` and ``fusion`` (clip depth range). The
overhead of the video path (frames folder writes, the depth pass, DIS flow, latent warping, fusion
blends) is what the ratio shows. Timings are printed, never asserted; not part of the tests.

    .venv/bin/python benchmarks/bench_video.py [--model tiny] [--size 128] [--frames 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=0.6)
    args = parser.parse_args()

    from skimage import data

    from depth2img import GenerationRequest, load_pipeline
    from depth2img.batch.metrics import warping_error
    from depth2img.batch.video import VideoOptions, render_frames

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((4 * args.size, 4 * args.size), Image.Resampling.LANCZOS))
    work = Path(tempfile.mkdtemp(prefix="d2i-bench-video-"))
    paths = []
    for t in range(args.frames):
        paths.append(work / f"src{t:03d}.png")
        Image.fromarray(photo[40 + t : 40 + t + args.size, 60 + 2 * t : 60 + 2 * t + args.size]).save(paths[-1])
    sources = [np.asarray(Image.open(p)) for p in paths]
    pipe = load_pipeline(args.model)
    request = GenerationRequest(prompt="an oil painting", image="(frame)", steps=args.steps, strength=args.strength,
                                seed=1, scheduler="ddim")
    pipe.generate(request.replace(image=paths[0]))  # warm-up

    start = time.perf_counter()
    for t, path in enumerate(paths):
        pipe.generate(request.replace(image=path, seed=1 + t))
    plain = (time.perf_counter() - start) / args.frames
    print(f"model {args.model}, {args.size}px, {args.frames} frames, {args.steps} steps x strength {args.strength}")
    print(f"{'mode':<12} {'s/frame':>8} {'x plain':>8} {'E_warp':>8}")
    print(f"{'plain':<12} {plain:8.3f} {1.0:8.2f} {'':>8}")
    for mode in ("none", "fixed-noise", "fusion"):
        start = time.perf_counter()
        done = render_frames(pipe, request, paths, work / mode, VideoOptions(temporal=mode, depth_norm="clip"))
        per_frame = (time.perf_counter() - start) / args.frames
        outs = [np.asarray(Image.open(p)) for p in done.frames]
        print(f"{mode:<12} {per_frame:8.3f} {per_frame / plain:8.2f} {warping_error(outs, sources):8.4f}")


if __name__ == "__main__":
    main()
