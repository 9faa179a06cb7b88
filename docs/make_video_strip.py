"""Builds docs/video-strip.png, the README's before/after strip for video: the first frames of a
synthetic pan (crops of scikit-image's astronaut moving 2 px right and 1 px down a frame) rendered with
``--temporal none`` (top row: new noise every frame) and ``--temporal fusion`` (bottom row), with the
warping error of each row (flow from the source frames). The built-in ``tiny`` model has random
weights: the strip shows the flicker machinery, not a meaningful style.
Run: .venv/bin/python docs/make_video_strip.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from depth2img import GenerationRequest, load_pipeline
from depth2img.batch.metrics import warping_error
from depth2img.batch.video import VideoOptions, render_frames

SIZE, FRAMES, SCALE = 64, 6, 2


def main() -> None:
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS))
    work = Path(tempfile.mkdtemp(prefix="d2i-strip-"))
    paths = []
    for t in range(FRAMES):
        paths.append(work / f"{t:03d}.png")
        Image.fromarray(photo[40 + t : 40 + t + SIZE, 60 + 2 * t : 60 + 2 * t + SIZE]).save(paths[-1])
    sources = [np.asarray(Image.open(p)) for p in paths]
    pipe = load_pipeline("tiny")
    request = GenerationRequest(prompt="an oil painting", image="(frame)", steps=4, strength=0.7, seed=3,
                                scheduler="ddim", guidance_scale=1.0)
    side = SIZE * SCALE
    strip = Image.new("RGB", (FRAMES * side + 150, 3 * side), "white")
    draw = ImageDraw.Draw(strip)
    rows = [("source", sources)]
    for mode in ("none", "fusion"):
        done = render_frames(pipe, request, paths, work / mode, VideoOptions(temporal=mode))
        rows.append((mode, [np.asarray(Image.open(p)) for p in done.frames]))
    for r, (label, frames) in enumerate(rows):
        for t, frame in enumerate(frames):
            strip.paste(Image.fromarray(frame).resize((side, side), Image.Resampling.NEAREST), (150 + t * side, r * side))
        text = label if label == "source" else f"{label}\nE_warp {warping_error(frames, sources):.3f}"
        draw.multiline_text((8, r * side + side // 2 - 12), text, fill="black")
    out = Path(__file__).with_name("video-strip.png")
    strip.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
