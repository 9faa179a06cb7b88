"""The ControlNet section of a generation tab: the ControlNet to load and the request's ``controlnet``
group (weight, start, end, mode, resize), derived from the spec like the rest of the form. It is shown
only while the chosen checkpoint is a base a ControlNet fits (SD 1.x/2.x or SDXL: the registry's kind is
not ``depth``; an SD2-depth model takes the depth directly), as sd-webui-controlnet's panel sits under a
Stable Diffusion checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from ..request import PARAMS
from ..server.services import Services

CONTROLNET = [n for n, p in PARAMS.items() if p.group == "controlnet"]
NO_CONTROLNET = ""


def applies(svc: Services, model: str | None) -> bool:
    """Whether a ControlNet fits ``model`` (a registry id): any base but an SD2-depth model."""
    entry = svc.registry.entries.get(model or svc.registry.default)
    return entry is not None and entry.kind != "depth"


def choices(svc: Services) -> list[tuple[str, str]]:
    return [("(none)", NO_CONTROLNET)] + [(entry.title, name) for name, entry in svc.registry.controlnets.items()]


def build(svc: Services, prefix: str, top: dict[str, Any], add: Callable[..., Any]) -> Any:
    """The section inside the current gradio context; returns the ControlNet dropdown (its value: a registry name)."""
    with gr.Accordion("ControlNet", open=True, visible=applies(svc, svc.registry.default),
                      elem_id=f"{prefix}-controlnet-accordion") as section:
        net = gr.Dropdown(choices(svc), value=NO_CONTROLNET, label="ControlNet model", elem_id=f"{prefix}-controlnet",
                          info="The depth goes through this ControlNet (models/ControlNet); (none): plain img2img.")
        for name in CONTROLNET:
            add(name)
    top["model"].change(lambda model: gr.update(visible=applies(svc, model)), top["model"], section, queue=False)
    return net


def job_fields(svc: Services, model: str | None, net: str | None, fields: dict[str, Any]) -> str | None:
    """The ControlNet a job loads (None: none), dropping the section's fields when there is none."""
    if net and applies(svc, model):
        return net
    for name in CONTROLNET:
        fields.pop(name, None)
    return None
