"""The PNG info tab: drop an image, read its infotext (``infotext.read_infotext``, so the image is
decoded with every safety check after the server's own admission check), show it and the parsed
fields, and send those fields to the img2img or inpaint form (A1111's "Send to" buttons, which also
switch tab).

Infotext keys are depth2img's own writer's (they are checked against ``a1111.INFOTEXT_KEYS`` at
import); value labels (sampler, masked content, inpaint area, mask mode) are read back through the
tables of ``a1111.py``. Each value is checked against its ``request.PARAMS`` entry; one that does not
fit is left out with a note, never sent half-right.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import a1111
from ..errors import Depth2ImgError
from ..infotext import parse_infotext, read_infotext
from ..request import DEFAULTS, DEPTH_CONTROLS, PARAMS, check_value
from ..server.services import Services
from .generate import Tab, _msg
from .uploads import RawImage, read

# infotext key → request field, for values that are written as plain numbers
NUMBERS = {"Steps": "steps", "CFG scale": "guidance_scale", "Seed": "seed", "Denoising strength": "strength",
           "Eta": "eta", "Mask blur": "mask_blur", "Masked area padding": "padding",
           "Depth strength": "depth_strength", "Depth end": "depth_end"}
_OTHER_KEYS = ("Sampler", "Schedule type", "Size", "Inpaint area", "Masked content", "Mask mode", "Depth invert",
               "Depth clip")
_unknown = sorted((set(NUMBERS) | set(_OTHER_KEYS)) - set(a1111.INFOTEXT_KEYS))
assert not _unknown, f"infotext keys not in a1111.INFOTEXT_KEYS: {_unknown}"
# What the writer leaves out when it is the default: absent means default (so a paste resets them).
OMITTED_WHEN_DEFAULT = ("eta", *DEPTH_CONTROLS)


def fields_from_infotext(params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Request fields from ``parse_infotext``'s result, and notes on values that were left out."""
    fields: dict[str, Any] = {"prompt": params.get("Prompt", ""), "negative_prompt": params.get("Negative prompt", "")}
    notes: list[str] = []
    for key, name in NUMBERS.items():
        if key in params:
            kind = PARAMS[name].kind
            try:
                fields[name] = int(params[key]) if kind in ("int", "seed") else float(params[key])
            except ValueError:
                notes.append(f"{key}: {params[key]!r} is not a number")
    if "Sampler" in params:
        ours = a1111.sampler_from_a1111(params["Sampler"], params.get("Schedule type"))
        if ours is None:
            notes.append(f"Sampler: {params['Sampler']!r} is not one depth2img has")
        else:
            fields["scheduler"] = ours
    if "Size" in params:
        w, sep, h = params["Size"].partition("x")
        if sep and w.isdigit() and h.isdigit():
            fields["width"], fields["height"] = int(w), int(h)
        else:
            notes.append(f"Size: {params['Size']!r} is not WIDTHxHEIGHT")
    labels = {"Inpaint area": ("inpaint_area", {label: ours for ours, (_, label) in a1111.INPAINT_AREAS.items()}),
              "Masked content": ("masked_content", {label: ours for ours, (_, label) in a1111.MASKED_CONTENT.items()}),
              "Mask mode": ("invert_mask", {label: ours for ours, (_, label) in a1111.MASK_MODES.items()})}
    for key, (name, table) in labels.items():
        if key in params:
            if params[key] in table:
                fields[name] = table[params[key]]
            else:
                notes.append(f"{key}: {params[key]!r} is not one depth2img has")
    if "Depth invert" in params:
        fields["invert_depth"] = params["Depth invert"].lower() == "true"
    if "Depth clip" in params:
        far, sep, near = params["Depth clip"].partition("-")
        try:
            fields["depth_clip"] = [float(far), float(near)]
        except ValueError:
            notes.append(f"Depth clip: {params['Depth clip']!r} is not FAR-NEAR")
    for name in OMITTED_WHEN_DEFAULT:
        fields.setdefault(name, list(DEFAULTS[name]) if isinstance(DEFAULTS[name], tuple) else DEFAULTS[name])
    checked: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            check_value(name, tuple(value) if isinstance(value, list) else value, PARAMS[name], name)
        except Depth2ImgError as error:
            notes.append(str(error))
            continue
        checked[name] = value
    return checked, notes


def updates_for(tab: Tab, fields: dict[str, Any]) -> list[Any]:
    """One gr.update per component of ``tab.inputs`` (a pair field has two): the field's value, or unchanged."""
    out: list[Any] = []
    for name in tab.names:
        if PARAMS[name].kind == "pair":
            out.extend(gr.update(value=v) for v in fields.get(name, (None, None)))
        elif name in fields:
            value = fields[name]
            unset = 0 if PARAMS[name].kind in ("size", "int") else ""  # the form's "not given" (ui/form.py)
            out.append(gr.update(value=unset if value is None else value))
        else:
            out.append(gr.update())
    return [gr.update() if u.get("value", 0) is None else u for u in out]


def build_tab(svc: Services, tabs: Any, targets: dict[str, Tab]) -> None:
    from ..server.inputs import check_image

    with gr.Row():
        with gr.Column():
            image = RawImage(label="Image", sources=["upload", "clipboard"], elem_id="pnginfo-image", height=300)
        with gr.Column():
            status = gr.HTML("", elem_id="pnginfo-status")
            text = gr.Textbox(label="Infotext", elem_id="pnginfo-text", lines=6, interactive=False, buttons=["copy"])
            parsed = gr.JSON(label="Parsed", elem_id="pnginfo-parsed")
            with gr.Row():
                buttons = {name: gr.Button(f"Send to {name}", elem_id=f"pnginfo-send-{name}") for name in targets}
    fields_state = gr.State({})

    def show(path):
        if not path:
            return "", "", None, {}
        try:
            data = read(path) or b""
            check_image(data, "image", svc.settings.max_pixels)
            info = read_infotext(data)
        except Depth2ImgError as error:
            return _msg(str(error), error=True), "", None, {}
        if not info:
            return _msg("this image has no generation parameters"), "", None, {}
        fields, notes = fields_from_infotext(parse_infotext(info))
        message = _msg("left out: " + "; ".join(notes), error=True) if notes else ""
        return message, info, {"infotext": parse_infotext(info), "fields": fields}, fields

    image.change(show, image, [status, text, parsed, fields_state], queue=False)

    for name, tab in targets.items():
        def send(fields, path, tab=tab, name=name):
            picture = gr.update()
            if path and tab.image is not None:
                picture = {"background": path, "layers": [], "composite": path} if name == "inpaint" else path
            return [gr.Tabs(selected=name), picture, *updates_for(tab, fields)]

        buttons[name].click(send, [fields_state, image], [tabs, targets[name].image, *tab.inputs], queue=False)
