"""X/Y comparison grids (A1111's "X/Y/Z plot" script, reduced to what depth2img needs).

An :class:`Axis` varies one request field (strength, cfg, steps, seed, scheduler); rows may also be
different models. :func:`run_grid` renders every cell with the same base request (same seed unless the
seed is an axis) and :func:`draw_grid` lays them out with text labels in Pillow's default font. The
``sweep`` built on it is the img2img-vs-depth2img comparison: one row per model, one column per
strength, plus the input and the depth map the depth model used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import InvalidRequestError
from .request import GenerationRequest, resolve_seeds


@dataclass(frozen=True)
class AxisKind:
    """One thing a grid can vary: the request field, how to parse a value, A1111's infotext name."""

    field: str
    parse: Callable[[str], Any]
    title: str


AXES: dict[str, AxisKind] = {
    "strength": AxisKind("strength", float, "Denoising"),
    "cfg": AxisKind("guidance_scale", float, "CFG Scale"),
    "steps": AxisKind("steps", int, "Steps"),
    "seed": AxisKind("seed", int, "Seed"),
    "scheduler": AxisKind("scheduler", str, "Sampler"),
}


@dataclass(frozen=True)
class Axis:
    """``name`` (a key of :data:`AXES`) and the values it takes, in order."""

    name: str
    values: tuple[Any, ...]

    def apply(self, request: GenerationRequest, value: Any) -> GenerationRequest:
        return request.replace(**{AXES[self.name].field: value})

    def label(self, value: Any) -> str:
        return f"{AXES[self.name].title}: {value:g}" if isinstance(value, float) else f"{AXES[self.name].title}: {value}"


def parse_axis(name: str, text: str) -> Axis:
    """``parse_axis("strength", "0.4,0.6")`` → Axis; one-line errors name the axis and the bad value."""
    if name not in AXES:
        raise InvalidRequestError(f"unknown grid axis {name!r}; choose one of {', '.join(AXES)}")
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidRequestError(f"give at least one {name} value, comma-separated")
    try:
        values = tuple(AXES[name].parse(item) for item in items)
    except ValueError:
        raise InvalidRequestError(f"{name} values must be {AXES[name].parse.__name__}s, got {text!r}") from None
    return Axis(name, values)


@dataclass
class Grid:
    """``cells[r][c]`` (None = nothing to show) under ``column_labels`` and beside ``row_labels``."""

    cells: list[list[Image.Image | None]]
    row_labels: list[str]
    column_labels: list[str]

    def to_image(self) -> Image.Image:
        return draw_grid(self.cells, self.row_labels, self.column_labels)


def run_grid(
    pipelines: Mapping[str, Any],
    request: GenerationRequest,
    x: Axis,
    y: Axis | None = None,
    *,
    on_cell: Callable[[int, int], None] | None = None,
) -> tuple[Grid, dict[str, Any]]:
    """Render one row per (model, y value) and one column per x value; every cell from ``request``.

    ``pipelines`` maps a row label to a loaded :class:`~depth2img.pipeline.Pipeline`. Every request is
    validated before the first image is made, so a bad value fails fast. Returns the grid and, per
    model label, the first cell's :class:`~depth2img.result.Result` (for its depth map and infotext).
    """
    y_values: Sequence[Any] = y.values if y is not None else (None,)
    plan = []
    for model_label, pipe in pipelines.items():
        for y_value in y_values:
            base = y.apply(request, y_value) if y is not None else request
            row = [x.apply(base, value).validate() for value in x.values]
            label = model_label if y is None else f"{model_label}\n{y.label(y_value)}"
            plan.append((label, model_label, pipe, row))
    cells: list[list[Image.Image | None]] = []
    firsts: dict[str, Any] = {}
    total, done = len(plan) * len(x.values), 0
    for _, model_label, pipe, row in plan:
        images: list[Image.Image | None] = []
        for cell in row:
            result = pipe.generate(cell)
            firsts.setdefault(model_label, result)
            images.append(result.images[0])
            done += 1
            if on_cell is not None:
                on_cell(done, total)
        cells.append(images)
    return Grid(cells, [label for label, *_ in plan], [x.label(value) for value in x.values]), firsts


def draw_grid(
    cells: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str], column_labels: Sequence[str]
) -> Image.Image:
    """Cells resized to the first cell's size, a header row and a label column, on white.

    Labels use Pillow's default font (the bundled scalable font when FreeType is available); an empty
    cell is a light-grey tile marked "n/a".
    """
    first = next((im for row in cells for im in row if im is not None), None)
    if first is None:
        raise InvalidRequestError("the grid has no images")
    cw, ch = first.size
    font = _font(max(10, min(cw, ch) // 12))
    pad = 4
    line_h = _text_size("Ag", font)[1] + 2
    header_h = pad * 2 + line_h * max(len(_wrap(lab, font, cw)) for lab in column_labels)
    label_w = max(_text_size(line, font)[0] for lab in row_labels for line in lab.split("\n")) + pad * 2
    sheet = Image.new("RGB", (label_w + cw * len(column_labels), header_h + ch * len(cells)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(column_labels):
        for i, line in enumerate(_wrap(label, font, cw)):
            tw = _text_size(line, font)[0]
            draw.text((label_w + c * cw + (cw - tw) // 2, pad + i * line_h), line, fill="black", font=font)
    for r, (label, row) in enumerate(zip(row_labels, cells)):
        lines = label.split("\n")
        top = header_h + r * ch + (ch - line_h * len(lines)) // 2
        for i, line in enumerate(lines):
            draw.text((pad, top + i * line_h), line, fill="black", font=font)
        for c, cell in enumerate(row):
            box = (label_w + c * cw, header_h + r * ch)
            if cell is None:
                draw.rectangle((*box, box[0] + cw - 1, box[1] + ch - 1), fill=(224, 224, 224))
                tw, th = _text_size("n/a", font)
                draw.text((box[0] + (cw - tw) // 2, box[1] + (ch - th) // 2), "n/a", fill=(96, 96, 96), font=font)
            else:
                sheet.paste(cell.convert("RGB").resize((cw, ch), Image.Resampling.LANCZOS), box)
    return sheet


def sweep(
    pipelines: Mapping[str, Any],
    request: GenerationRequest,
    strengths: Sequence[float],
    *,
    y: Axis | None = None,
    on_cell: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """The img2img-vs-depth2img comparison: rows = models (x ``y`` values), columns = input, depth map,
    strengths.

    Same seed in every cell (a random one is drawn once when the request has none). The depth column
    shows the map each depth model actually used (gray, white = near); img2img rows show "n/a".
    """
    if request.image is None:
        raise InvalidRequestError("a sweep needs an image")
    if request.seed is None or request.seed == -1:
        request = request.replace(seed=resolve_seeds(None, 1)[0])  # the pipeline's own random-seed rule
    grid, firsts = run_grid(pipelines, request, Axis("strength", tuple(strengths)), y, on_cell=on_cell)
    row_models = [label for label in pipelines for _ in (y.values if y is not None else (None,))]
    size = next(im for row in grid.cells for im in row if im is not None).size
    from .images import load_image

    source = load_image(request.image).resize(size, Image.Resampling.LANCZOS)
    cells: list[list[Image.Image | None]] = []
    for row, label in zip(grid.cells, row_models):
        depth = firsts[label].depth_map
        depth_cell = None if depth is None else depth.to_image("raw").resize(size, Image.Resampling.BILINEAR)
        cells.append([source, depth_cell, *row])
    return draw_grid(cells, grid.row_labels, ["input", "depth map", *grid.column_labels])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, OSError):  # pragma: no cover - old Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a long single word stays on its line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_size(f"{lines[-1]} {word}", font)[0] <= width - 4:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
