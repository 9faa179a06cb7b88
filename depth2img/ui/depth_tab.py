"""The depth tab: estimate with the chosen estimator (a depth job on the server's queue), view it in
grayscale or colour, export 8- and 16-bit PNGs, and look at image + depth in the 3-D parallax view
(static/depth2img-ui.js draws it on a canvas; nothing comes from a CDN).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..depth import depth_to_image
from ..server.services import Services
from .jobs import UIError, follow, submit
from .uploads import RawImage, read

VIEWER = """
<div class="d2i-parallax">
  <canvas id="d2i-parallax-canvas" width="384" height="384"
          style="width:100%;max-width:384px;touch-action:none;background:#111;border-radius:6px"></canvas>
  <label>Depth scale <input id="d2i-parallax-scale" type="range" min="0" max="0.15" step="0.005" value="0.05"></label>
  <div style="opacity:.7;font-size:.9em">Move the mouse (or a finger) over the picture to tilt it.</div>
</div>
"""


def build_tab(svc: Services, top: dict[str, Any]) -> None:
    with gr.Row():
        with gr.Column():
            image = RawImage(label="Image", sources=["upload", "clipboard"], elem_id="depth-image", height=300)
            estimate = gr.Button("Estimate depth", variant="primary", elem_id="depth-estimate")
            view = gr.Radio(["grayscale", "colormap"], value="grayscale", label="View", elem_id="depth-view")
            status = gr.HTML("", elem_id="depth-status")
            shown = gr.Image(label="Depth (white = near)", elem_id="depth-shown", interactive=False, format="png",
                             height=300)
            exports = gr.File(label="Export (8-bit and 16-bit PNG)", file_count="multiple", elem_id="depth-files",
                              interactive=False)
        with gr.Column():
            gr.HTML(VIEWER, elem_id="depth-viewer")
    raw = gr.State(None)
    urls = gr.JSON(visible=False)

    def run(model, depth_model, path, mode):
        from .generate import _msg

        try:
            data = read(path)
            if not data:
                raise UIError("upload an image first")
            job = submit(svc, "depth", {}, {"image": data}, model, depth_model)
            for tick in follow(svc, job):
                if tick.job.state == "queued":
                    yield _msg("queued…"), gr.update(), gr.update(), None, gr.update()
            final = tick.job
            if final.state != "done":
                raise UIError(final.error or f"the depth job {final.state}")
            d16 = svc.store.depth_path(final.id)
            d8 = svc.store.image_path(final.id, 0)
            depth = np.asarray(Image.open(d16)).astype(np.float64) / 65535
            with Image.open(io.BytesIO(data)) as im:
                photo = im.convert("RGB").resize((depth.shape[1], depth.shape[0]))
            payload = {"image": _data_url(photo), "depth": _data_url(Image.open(d8).convert("L"))}
            yield _msg("done"), _render(depth, mode), [str(d8), str(d16)], depth, payload
        except UIError as error:
            yield _msg(str(error), error=True), gr.update(), gr.update(), None, gr.update()

    estimate.click(run, [top["model"], top["depth_model"], image, view], [status, shown, exports, raw, urls],
                   concurrency_limit=None).then(
        None, urls, None, js="(u) => { if (u && window.depth2imgParallax) window.depth2imgParallax.load(u.image, u.depth); }")
    view.change(lambda d, m: gr.update() if d is None else _render(d, m), [raw, view], shown, queue=False)


def _render(depth: np.ndarray, mode: str) -> Image.Image:
    return depth_to_image(depth, bits=8, colormap=mode == "colormap")


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
