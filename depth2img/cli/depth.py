"""``depth2img depth``: estimate a depth map and write it at the photo's size (white = near)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .handling import one_line_errors, say
from .loading import load
from .options import DepthModelOpt, DeviceOpt


@one_line_errors
def depth_command(
    image: Annotated[str, typer.Option("--image", "-i", help="The photo to estimate depth for.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG (white = near).", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Use this model's own depth estimator ('tiny': random weights).")] = None,
    depth_model: DepthModelOpt = None,
    bits: Annotated[int, typer.Option(help="8 or 16 bits per pixel (grayscale).")] = 8,
    colormap: Annotated[bool, typer.Option("--colormap", help="Write a colour (Turbo) preview instead of grayscale (8-bit).")] = False,
    sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Also write photo | depth | Turbo preview side by side.")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Estimate a depth map and write it as an image the size of the photo (white = near)."""
    from ..depth import depth_sheet, depth_to_image, resize_depth
    from ..errors import InvalidRequestError
    from ..images import load_image
    from ..outputs import Target, check_targets, save_image

    if bits not in (8, 16):
        raise InvalidRequestError(f"--bits must be 8 or 16, got {bits}")
    if colormap and bits == 16:
        raise InvalidRequestError("--colormap writes an 8-bit colour preview; drop --bits 16 (or --colormap)")
    if model is not None and depth_model is not None:
        raise InvalidRequestError("give --model or --depth-model, not both")
    if model is None and depth_model is None:
        raise InvalidRequestError("give --model (its own estimator) or --depth-model (a transformers depth model)")
    check_targets([Target("--out", (out,), (".png",))] + ([Target("--sheet", (sheet,))] if sheet else []))
    picture = load_image(image)  # decoded before any weights load
    pipe = load(model or "tiny", device, "float32", depth_model)
    raw = resize_depth(pipe.estimate_depth(picture).raw, (picture.height, picture.width))
    save_image(depth_to_image(raw, bits=bits, colormap=colormap), out)
    say(f"wrote {out}")
    if sheet is not None:
        save_image(depth_sheet(picture, raw), sheet)
        say(f"wrote {sheet}")
