"""The sweep tab: ``depth2img sweep``'s comparison grid (columns: input, depth map, one per strength;
rows: the checkpoint, and a compare model if chosen; the same seed everywhere).

The server has no sweep job type, so each cell is one ordinary generate job on the server's queue
(``Services.submit``: the same admission, the same single worker), never a pipeline call beside a
running job. Every cell is admitted before the first runs, so a bad value fails at once; if the
handler stops (cancel, page closed, a cell failed) the cells not yet finished are cancelled too. The
picture is drawn with ``grid.draw_grid`` and the strength labels come from ``grid.parse_axis``.
"""

from __future__ import annotations

import inspect
import io
from typing import Any

import gradio as gr
from PIL import Image

from ..errors import Depth2ImgError
from ..grid import draw_grid, parse_axis
from ..request import resolve_seeds
from ..server.jobs import Job
from ..server.services import Services
from . import form
from .generate import _msg, _view_depth
from .jobs import UIError, follow, submit
from .uploads import RawImage, read


def _cli_sweep() -> tuple[tuple[str, ...], str]:
    """The CLI's sweep fields and default strengths (one definition for both edges)."""
    from ..cli.sweep import SWEEP_FIELDS, sweep

    return SWEEP_FIELDS, inspect.signature(sweep).parameters["strengths"].default


def build_tab(svc: Services, top: dict[str, Any]) -> None:
    from .app import model_choices

    sweep_fields, default_strengths = _cli_sweep()
    names = [n for n in sweep_fields if n != "image"]
    comps: list[Any] = []
    with gr.Row():
        with gr.Column():
            image = RawImage(label="Image", sources=["upload", "clipboard"], elem_id="sweep-image", height=240)
            for name in names:
                comps.append(form.component(name, "sweep", **({"lines": 1} if name in ("prompt", "negative_prompt")
                                                               else {})))
            strengths = gr.Textbox(default_strengths, label="Strengths", elem_id="sweep-strengths",
                                   info="Comma-separated denoising strengths, one column each.")
            compare = gr.Dropdown([("(none)", "")] + model_choices(svc), value="", label="Compare model",
                                  elem_id="sweep-compare", info="A second row, e.g. a plain img2img model.")
            go = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
        with gr.Column():
            status = gr.HTML("", elem_id="sweep-status")
            grid = gr.Image(label="Grid", elem_id="sweep-grid", interactive=False, format="png")

    def run(model, depth_model, compare_model, path, strengths_text, *values):
        jobs: list[tuple[str, Job]] = []
        try:
            try:
                columns = parse_axis("strength", strengths_text or "")
            except Depth2ImgError as error:
                raise UIError(str(error)) from None
            data = read(path)
            if not data:
                raise UIError("upload an image first: the sweep compares strengths on a photo")
            fields = form.to_fields(names, list(values))
            if fields.get("seed") in (None, -1):
                fields["seed"] = resolve_seeds(None, 1)[0]  # one seed for every cell
            rows = [model or svc.registry.default] + ([compare_model] if compare_model else [])
            for row in rows:
                for value in columns.values:
                    jobs.append((row, submit(svc, "generate", {**fields, "strength": value}, {"image": data}, row,
                                             depth_model)))
            cells: dict[str, list[Image.Image]] = {row: [] for row in rows}
            depths: dict[str, Image.Image | None] = {}
            for n, (row, job) in enumerate(jobs, 1):
                for tick in follow(svc, job):
                    where = "queued" if tick.job.state == "queued" else f"step {tick.step}/{tick.total}"
                    yield _msg(f"cell {n}/{len(jobs)}: {where}"), gr.update()
                final = tick.job
                if final.state != "done":
                    raise UIError(final.error or f"cell {n} {final.state}")
                cells[row].append(Image.open(svc.store.image_path(final.id, 0)).convert("RGB"))
                if row not in depths:
                    depths[row] = _view_depth(Image.open(svc.store.depth_path(final.id))) if final.has_depth else None
            size = cells[rows[0]][0].size
            with Image.open(io.BytesIO(data)) as im:
                source = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            kinds = {name: entry.kind for name, entry in svc.registry.entries.items()}
            picture = draw_grid(
                [[source, None if depths[row] is None else depths[row].resize(size, Image.Resampling.BILINEAR),
                  *cells[row]] for row in rows],
                [f"{row} ({kinds[row]})" if row in kinds else row for row in rows],
                ["input", "depth map", *(columns.label(v) for v in columns.values)])
            yield _msg(f"{len(jobs)} cells, seed {fields['seed']}"), picture
        except UIError as error:
            yield _msg(str(error), error=True), gr.update()
        finally:  # stopped or failed: the cells that did not run are not left in the queue
            for _, job in jobs:
                svc.worker.cancel(job.id)

    go.click(run, [top["model"], top["depth_model"], compare, image, strengths, *comps], [status, grid],
             concurrency_limit=None, show_progress="minimal")
