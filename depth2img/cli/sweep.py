"""``depth2img sweep``: the comparison grid (strength columns, model rows, same seed everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..request import GenerationRequest, flag
from .handling import err, one_line_errors, say
from .loading import load
from .options import ControlNetOpt, DeviceOpt, DtypeOpt, ModelOpt, decode_inputs, request_options, to_request_fields

SWEEP_FIELDS = ("image", "prompt", "negative_prompt", "preset", "steps", "guidance_scale", "seed", "scheduler", "width", "height")


@one_line_errors
@request_options(SWEEP_FIELDS)
def sweep(
    model: ModelOpt,
    strengths: Annotated[str, typer.Option("--strengths", help="Comma-separated denoising strengths, one column each.")] = "0.4,0.6,0.8,1.0",
    compare_model: Annotated[Optional[list[str]], typer.Option(
        "--compare-model", help="Another row (repeatable): MODEL, or MODEL,controlnet=CN for an SD 1.5/SDXL base with a "
        "ControlNet (e.g. tiny-img2img; tiny-sd15,controlnet=tiny-controlnet). One grid can hold SD2-depth, "
        "ControlNet and plain img2img rows.")] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="Also vary AXIS=V1,V2 down the rows: cfg, steps, seed or scheduler.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output grid image (.png/.jpg/.webp).")] = Path("sweep.png"),
    controlnet: ControlNetOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    *,
    fields: dict[str, Any],
) -> None:
    """Compare models across strengths: a labelled grid, one row per model, same seed everywhere."""
    from ..errors import InvalidRequestError
    from ..grid import parse_axis
    from ..grid import sweep as make_sweep
    from ..outputs import Target, check_targets, save_image

    columns = parse_axis("strength", strengths)
    y_axis = None
    if y is not None:
        name, _, values = y.partition("=")
        y_axis = parse_axis(name.strip(), values)
    if fields.get("image") is None:
        raise InvalidRequestError("--image is required: the sweep compares strengths on a photo")
    request = GenerationRequest(**to_request_fields(fields)).validate(label=flag)
    check_targets([Target("--out", (out,))])
    request = request.replace(**decode_inputs(to_request_fields(fields))).validate(label=flag)
    rows = [(model, controlnet)] + [row_spec(text) for text in compare_model or ()]
    pipelines = {}
    for name, net in rows:
        pipe = load(name, device, dtype, None, net)
        pipelines[f"{name} ({pipe.backend.label}{f': {Path(net).name}' if net else ''})"] = pipe
    with err.status("rendering the grid...", spinner="dots") as status:
        def on_cell(done: int, total: int) -> None:
            status.update(f"rendering the grid: {done}/{total} cells")

        picture = make_sweep(pipelines, request, columns.values, y=y_axis, on_cell=on_cell)
    save_image(picture, out)
    say(f"wrote {out}")


def row_spec(text: str) -> tuple[str, str | None]:
    """``MODEL`` or ``MODEL,controlnet=CN`` (one ``--compare-model`` value) -> (model, ControlNet or None)."""
    from ..errors import InvalidRequestError

    name, sep, rest = text.partition(",")
    key, eq, net = rest.partition("=")
    if not name.strip() or (sep and (key.strip() != "controlnet" or not eq or not net.strip())):
        raise InvalidRequestError(f"--compare-model {text!r}: expected MODEL or MODEL,controlnet=CONTROLNET")
    return name.strip(), (net.strip() or None) if sep else None
