"""One generation tab (img2img, inpaint): the form from the spec, Generate through the server's
queue with step progress and previews, and the results: gallery, the depth map the job used, the
infotext of each image, and errors as a readable sentence.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..request import PARAMS
from ..server.services import Services
from . import controlnet_section, form
from .jobs import UIError, follow, submit
from .uploads import RawImage, read

GENERATION = ["scheduler", "steps", "guidance_scale", "strength", "seed", "batch_size", "eta"]
SIZE = [n for n, p in PARAMS.items() if p.group == "size"]
DEPTH = [n for n, p in PARAMS.items() if p.group == "depth" and p.kind not in ("depth",)]
SPEED = [n for n, p in PARAMS.items() if p.group == "speed"]  # preset and fast-mode knobs
INPAINT = [n for n, p in PARAMS.items() if p.group == "inpaint" and p.kind != "image"]
MAX_BATCH_COUNT = 16


@dataclass
class Tab:
    """The components of one generation tab, for the app to wire (settings storage, PNG info)."""

    prefix: str
    names: list[str]  # request fields, in the order of ``inputs``
    inputs: list[Any]  # their components (a pair field has two)
    by_name: dict[str, Any] = field(default_factory=dict)
    generate: Any = None
    image: Any = None
    batch_count: Any = None


def build_tab(svc: Services, prefix: str, top: dict[str, Any], *, inpaint: bool = False) -> Tab:
    names: list[str] = []
    comps: list[Any] = []
    by_name: dict[str, Any] = {}

    def add(name: str, **overrides: Any) -> Any:
        if PARAMS[name].kind == "pair":
            c = form.pair(name, prefix)
            comps.extend(c)
        else:
            c = form.component(name, prefix, **overrides)
            comps.append(c)
        names.append(name)
        by_name[name] = c
        return c

    with gr.Row():
        with gr.Column(scale=3):
            add("prompt", lines=2, placeholder="Prompt (Ctrl+Enter to generate)", info=None)
            add("negative_prompt", lines=1, info=None)
            add("styles", label="Styles", choices=style_names(svc))  # the server's --styles-file
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", size="sm", elem_id=f"{prefix}-interrupt")
                skip = gr.Button("Skip", size="sm", elem_id=f"{prefix}-skip")
    with gr.Row():
        with gr.Column():
            if inpaint:
                image = gr.ImageEditor(label="Image: paint the mask (white brush = repaint)", type="pil",
                                       elem_id=f"{prefix}-editor", height=360, sources=["upload", "clipboard"],
                                       brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12),
                                       layers=False, transforms=())
                mask_upload = RawImage(label="…or upload a mask (white = repaint)", sources=["upload"],
                                       elem_id=f"{prefix}-mask", height=160)
            else:
                image = RawImage(label="Image", sources=["upload", "clipboard"], elem_id=f"{prefix}-image", height=300)
                mask_upload = None
            with gr.Row():
                for name in GENERATION[:2]:
                    add(name)
            with gr.Row():
                width, height = add("width"), add("height")
                from_image = gr.Button("from image", size="sm", elem_id=f"{prefix}-from-image", scale=0, min_width=90)
            add("resize_mode")
            with gr.Row():
                add("batch_size")
                batch_count = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label="Batch count",
                                        info="Jobs run one after another (seed + batch size each).",
                                        elem_id=f"{prefix}-batch_count")
            add("guidance_scale")
            add("strength")
            with gr.Row():
                seed = add("seed", scale=4)
                dice = gr.Button("🎲", size="sm", elem_id=f"{prefix}-seed-random", scale=0, min_width=40)
                reuse = gr.Button("♻", size="sm", elem_id=f"{prefix}-seed-reuse", scale=0, min_width=40)
            if inpaint:
                with gr.Accordion("Inpaint", open=True):
                    for name in INPAINT:
                        add(name)
            with gr.Accordion("Depth", open=False, elem_id=f"{prefix}-depth-accordion"):
                depth_upload = RawImage(label="Your own depth map (white = near)", sources=["upload"],
                                        elem_id=f"{prefix}-depth_map", height=160, image_mode=None)
                for name in DEPTH:
                    add(name)
                add("eta")
            with gr.Accordion("Speed", open=False, elem_id=f"{prefix}-speed-accordion"):
                for name in SPEED:
                    add(name)
            controlnet = controlnet_section.build(svc, prefix, top, add)
        with gr.Column():
            status = gr.HTML("", elem_id=f"{prefix}-status")
            gallery = gr.Gallery(label="Results", elem_id=f"{prefix}-gallery", columns=2, height=320,
                                 format="png", interactive=False)
            depth_used = gr.Image(label="Depth map used", elem_id=f"{prefix}-depth-used", interactive=False,
                                  height=200, format="png")
            infotext = gr.Textbox(label="Infotext", elem_id=f"{prefix}-infotext", lines=4, interactive=False,
                                  buttons=["copy"])
            last_seed = gr.State(None)

    tab = Tab(prefix, names, comps, by_name, generate, image, batch_count)
    session = gr.State({"interrupted": False})

    def run(model, depth_model, picture, mask_file, depth_file, net, count, state, *values, progress=gr.Progress()):
        state["interrupted"] = False
        try:
            fields = form.to_fields(names, list(values))
            net = controlnet_section.job_fields(svc, model, net, fields)
            inputs = _inputs(picture, mask_file, depth_file, inpaint)
            if not inpaint:
                for name in INPAINT:
                    fields.pop(name, None)
            images: list[Image.Image] = []
            infos: list[str] = []
            depth_img = None
            seed_used = None
            yield _msg("queued…"), gr.update(), gr.update(), gr.update(), gr.update()
            for n in range(int(count)):
                if state["interrupted"]:
                    break
                if n and fields.get("seed", -1) != -1:
                    fields["seed"] = int(fields["seed"]) + int(fields["batch_size"])
                job = submit(svc, "generate", fields, inputs, model, depth_model, controlnet=net)
                if seed_used is None:
                    seed_used = job.seeds[0]
                for tick in follow(svc, job):
                    if tick.job.state == "queued" or tick.position is not None:
                        yield _msg(f"queue: {tick.position} ahead"), gr.update(), gr.update(), gr.update(), seed_used
                    elif tick.job.state == "running":
                        progress((tick.step, tick.total or None), desc=f"job {n + 1}/{int(count)}", unit="steps")
                        preview = _preview(tick.latents)
                        yield (_msg(f"step {tick.step}/{tick.total}"),
                               images + ([preview] if preview is not None else []), gr.update(), gr.update(), seed_used)
                final = tick.job
                if final.state == "done":
                    for i in range(final.n_images):
                        images.append(Image.open(svc.store.image_path(final.id, i)))
                    infos.extend(final.infotexts)
                    if final.has_depth:
                        depth_img = Image.open(svc.store.depth_path(final.id))
                        depth_img = _view_depth(depth_img)
                elif final.state == "cancelled":
                    if final.error == "skipped":
                        continue
                    break
                else:
                    raise UIError(final.error or "the job failed")
            note = " ".join(final.warnings) if images and final.warnings else ""
            done = f"{len(images)} image(s)" + (f" — {note}" if note else "") if images else "interrupted"
            yield _msg(done), images, depth_img, "\n\n".join(infos), seed_used
        except UIError as error:
            yield _msg(str(error), error=True), gr.update(), gr.update(), gr.update(), gr.update()

    def stop(state, reason):
        state["interrupted"] = reason == "interrupted"
        svc.worker.interrupt(reason)
        return state

    gen_inputs = [top["model"], top["depth_model"], image, mask_upload or gr.State(None), depth_upload, controlnet, batch_count,
                  session, *comps]
    outputs = [status, gallery, depth_used, infotext, last_seed]
    generate.click(run, gen_inputs, outputs, concurrency_limit=None, show_progress="minimal")
    interrupt.click(lambda s: stop(s, "interrupted"), session, session, queue=False)
    skip.click(lambda s: stop(s, "skipped"), session, session, queue=False)
    dice.click(lambda: -1, None, seed, queue=False)
    reuse.click(lambda s, cur: cur if s is None else s, [last_seed, seed], seed, queue=False)
    from_image.click(_size_of, image, [width, height], queue=False)
    return tab


def style_names(svc: Services) -> list[str]:
    """The saved styles the server offers (``serve --styles-file``), in the file's order."""
    return list(svc.registry.extras.styles or {})


def _msg(text: str, error: bool = False) -> str:
    import html

    cls = "d2i-error" if error else "d2i-info"
    return f'<div class="{cls}" role="{"alert" if error else "status"}">{html.escape(text)}</div>'


def _inputs(picture: Any, mask_file: str | None, depth_file: str | None, inpaint: bool) -> dict[str, bytes]:
    inputs: dict[str, bytes] = {}
    if inpaint:
        if picture is not None and picture.get("background") is not None:
            background = picture["background"].convert("RGB")
            inputs["image"] = _png(background)
            layers = [layer for layer in picture.get("layers") or [] if layer is not None]
            if mask_file:
                inputs["mask"] = read(mask_file)  # type: ignore[assignment]
            elif layers:
                alpha = np.zeros(background.size[::-1], np.uint8)
                for layer in layers:
                    a = np.asarray(layer.convert("RGBA").resize(background.size))[..., 3]
                    alpha = np.maximum(alpha, a)
                if not alpha.any():
                    raise UIError("paint the area to repaint on the image (or upload a mask) first")
                inputs["mask"] = _png(Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8)))
            else:
                raise UIError("paint the area to repaint on the image (or upload a mask) first")
    elif picture:
        inputs["image"] = read(picture)  # type: ignore[assignment]
    if depth_file:
        inputs["depth_map"] = read(depth_file)  # type: ignore[assignment]
    if not inputs.get("image") and not inputs.get("depth_map"):
        raise UIError("upload an image first (or your own depth map in the Depth section)")
    return inputs


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _preview(latents: Any) -> Image.Image | None:
    if latents is None:
        return None
    from ..server.preview import latent_preview

    return latent_preview(latents)


def _view_depth(image: Image.Image) -> Image.Image:
    """A 16-bit depth PNG as 8-bit gray for the browser (same map, shown)."""
    array = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.round(array / 257).astype(np.uint8)) if array.max() > 255 else image.convert("L")


def _size_of(path: str | dict | None):
    if not path:
        return gr.update(), gr.update()
    try:
        if isinstance(path, dict):
            w, h = path["background"].size
        else:
            with Image.open(path) as im:
                w, h = im.size
    except Exception:
        return gr.update(), gr.update()
    return w // 8 * 8, h // 8 * 8
