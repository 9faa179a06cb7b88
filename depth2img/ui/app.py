"""The gr.Blocks: A1111's top bar (checkpoint + refresh, depth estimator, queue length) and the tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..server.services import Services
from . import STATIC_URL

OWN_ESTIMATOR = "(the model's own)"

CSS = """
.d2i-error { color: #b91c1c; background: #fef2f2; border: 1px solid #fecaca; padding: 6px 10px; border-radius: 6px; }
.d2i-info { color: inherit; opacity: .8; padding: 2px 4px; }
#topbar { align-items: end; }
"""
HEAD = f'<script src="{STATIC_URL}/depth2img-ui.js"></script>'


def model_choices(svc: Services) -> list[tuple[str, str]]:
    return [(f"{name} [{entry.kind}]", name) for name, entry in svc.registry.entries.items()]


def queue_text(svc: Services) -> str:
    current = svc.worker.current
    running = f"running {current.step}/{current.total}" if current else "idle"
    return f"Queue: {svc.store.count('queued')} waiting · {running}"


def build(svc: Services) -> gr.Blocks:
    from . import depth_tab, generate, pnginfo, sweep_tab

    with gr.Blocks(title="depth2img", analytics_enabled=False) as blocks:
        with gr.Row(elem_id="topbar"):
            model = gr.Dropdown(model_choices(svc), value=svc.registry.default, label="Checkpoint",
                                elem_id="top-model", scale=3)
            refresh = gr.Button("🔄", elem_id="top-refresh", scale=0, min_width=40)
            depth_model = gr.Dropdown([(OWN_ESTIMATOR, "")] + model_choices(svc), value="", label="Depth estimator",
                                      elem_id="top-depth-model", scale=2,
                                      info="A depth model's estimator to use instead of the checkpoint's own.")
            queue = gr.Markdown(queue_text(svc), elem_id="top-queue")
        top: dict[str, Any] = {"model": model, "depth_model": depth_model}
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("img2img", id="img2img"):
                img2img = generate.build_tab(svc, "img2img", top)
            with gr.Tab("inpaint", id="inpaint"):
                inpaint = generate.build_tab(svc, "inpaint", top, inpaint=True)
            with gr.Tab("depth", id="depth"):
                depth_tab.build_tab(svc, top)
            with gr.Tab("sweep", id="sweep"):
                sweep_tab.build_tab(svc, top)
            with gr.Tab("PNG info", id="pnginfo"):
                pnginfo.build_tab(svc, tabs, {"img2img": img2img, "inpaint": inpaint})

        def do_refresh(current):
            svc.registry.refresh()
            choices = model_choices(svc)
            value = current if current in svc.registry.entries else svc.registry.default
            return gr.update(choices=choices, value=value), gr.update(choices=[(OWN_ESTIMATOR, "")] + choices)

        remember(blocks, [img2img, inpaint])
        refresh.click(do_refresh, model, [model, depth_model], queue=False)
        gr.Timer(2.0).tick(lambda: queue_text(svc), None, queue, queue=False, show_progress="hidden")
    return blocks


def remember(blocks: gr.Blocks, tabs: list[Any]) -> None:
    """The last used settings of the generation tabs survive a reload: every change is saved in the
    browser (gr.BrowserState: localStorage, encrypted with a per-server secret), and restored on load.

    Keyed by elem_id, so a renamed field is simply not restored; a saved choice that is no longer
    offered is skipped (every value is still checked at submit, as any other).
    """
    from ..request import PARAMS

    comps = [c for tab in tabs for c in (*tab.inputs, tab.batch_count)]
    keys = [c.elem_id for c in comps]
    choices = {}
    for tab in tabs:
        for name, c in tab.by_name.items():
            if PARAMS[name].kind == "choice":
                choices[c.elem_id] = PARAMS[name].choices
            elif PARAMS[name].kind == "names":  # a saved style no longer on offer: not restored
                choices[c.elem_id] = [value for _, value in c.choices]
    stored = gr.BrowserState({}, storage_key="depth2img-settings")

    def save(*values):
        return dict(zip(keys, values))

    def restore(saved):
        saved = saved if isinstance(saved, dict) else {}
        def offered(k):
            values = saved[k] if isinstance(saved[k], list) else [saved[k]]
            return k not in choices or all(v in choices[k] for v in values)

        return [gr.update(value=saved[k]) if k in saved and offered(k) else gr.update() for k in keys]

    gr.on([c.change for c in comps], save, comps, stored, queue=False, show_progress="hidden")
    blocks.load(restore, stored, comps, queue=False, show_progress="hidden")
