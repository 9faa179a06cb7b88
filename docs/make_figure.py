"""Builds docs/depth2img.png, the README picture: photo → depth map → depth2img → new image.

The depth panel is scikit-image's *true* disparity of the motorcycle stereo pair, given as an own
depth map; the output panel comes from the built-in ``tiny`` model (random weights, so it shows the
machinery, not a meaningful image). Run: .venv/bin/python docs/make_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from depth2img import load_pipeline
from depth2img.depth import depth_to_image

W, H = 296, 200


def main() -> None:
    left, _, disparity = data.stereo_motorcycle()
    disparity = np.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0)
    photo = Image.fromarray(left).resize((W, H), Image.Resampling.LANCZOS)
    depth = depth_to_image(disparity, colormap=True).resize((W, H), Image.Resampling.BICUBIC)
    result = load_pipeline("tiny").generate(
        prompt="a chrome motorcycle in a neon-lit garage", image=photo, depth_map=disparity, strength=1.0,
        steps=20, seed=1, width=W - W % 8, height=H - H % 8,
    )
    output = result.images[0].resize((W, H))
    captions = ["1. your photo", "2. its depth (white/red = near)", "3. tiny model output (random weights)"]
    canvas = Image.new("RGB", (3 * W + 4 * 12, H + 48), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, caption) in enumerate(zip((photo, depth, output), captions)):
        x = 12 + i * (W + 12)
        canvas.paste(panel, (x, 12))
        draw.text((x, H + 20), caption, fill="black")
    out = Path(__file__).with_name("depth2img.png")
    canvas.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
