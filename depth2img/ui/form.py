"""The generation form, derived from ``request.PARAMS``: one component per parameter, its range,
choices, default and help taken from the spec (never retyped here), grouped by ``Param.group``.

Only labels are the UI's own (A1111's words where its users know them), and choices show A1111's
names (``Euler a`` for ``euler_a``) while the value stays ours.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..a1111 import CONTROL_MODES, CONTROLNET_RESIZE_MODES, INPAINT_AREAS, MASKED_CONTENT, RESIZE_MODES, SAMPLERS
from ..request import DEFAULTS, PARAMS, Param

LABELS = {  # A1111's labels where its users look for them
    "guidance_scale": "CFG scale", "strength": "Denoising strength", "scheduler": "Sampling method",
    "steps": "Sampling steps", "negative_prompt": "Negative prompt", "batch_size": "Batch size",
    "depth_clip": "Depth clip", "invert_mask": "Inpaint not masked (invert mask)",
    "control_weight": "Control Weight", "control_start": "Starting Control Step", "control_end": "Ending Control Step",
    "control_mode": "Control Mode", "control_resize": "Resize Mode",  # sd-webui-controlnet's panel labels
}
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "scheduler": {k: s.name + (f" {s.schedule_type}" if s.schedule_type else "") for k, s in SAMPLERS.items()},
    "resize_mode": {k: label for k, (_, label) in RESIZE_MODES.items()},
    "masked_content": {k: label for k, (_, label) in MASKED_CONTENT.items()},
    "inpaint_area": {k: label for k, (_, label) in INPAINT_AREAS.items()},
    "control_mode": {k: label for k, (_, label) in CONTROL_MODES.items()},
    "control_resize": dict(CONTROLNET_RESIZE_MODES),
}
PRESET_CHOICE = "Preset's choice"
# Fields a form collects (images and the free-form extra are handled by each tab).
SCALARS = [n for n, p in PARAMS.items() if p.kind not in ("image", "depth", "extra")]


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def component(name: str, prefix: str, **overrides: Any) -> Any:
    """The gradio component for request field ``name`` (elem_id ``{prefix}-{name}``)."""
    spec: Param = PARAMS[name]
    default = DEFAULTS[name]
    common: dict[str, Any] = dict(label=label(name), info=spec.help, elem_id=f"{prefix}-{name}")
    common.update(overrides)
    kind = spec.kind
    if kind == "text":
        return gr.Textbox(**{"value": default, "lines": 3, **common})
    if kind == "float":
        return gr.Slider(spec.low, spec.high, value=default, step=_step(spec), **common)
    if kind == "int" and spec.optional:  # 0 = not given (the spec's None): the preset decides
        common["info"] = f"{spec.help} 0 = the preset's."
        return gr.Slider(0, int(spec.high), value=default or 0, step=1, **common)
    if kind == "int":
        return gr.Slider(int(spec.low), int(spec.high), value=default, step=1, **common)
    if kind == "seed":
        return gr.Number(value=default, minimum=spec.low, maximum=spec.high, precision=0, **common)
    if kind == "size":  # 0 = the image's own size (the spec's None); a number box sends 0 when empty
        common["info"] = f"{spec.help} 0 = from the image."
        return gr.Number(value=default or 0, minimum=0, maximum=spec.high, step=8, precision=0, **common)
    if kind == "choice":
        names = CHOICE_LABELS.get(name, {})
        unset = [(PRESET_CHOICE, "")] if spec.optional else []  # "" = not given (the spec's None): the preset decides
        return gr.Dropdown(choices=unset + [(names.get(c, c), c) for c in spec.choices],
                           value="" if default is None else default, **common)
    if kind == "bool":
        return gr.Checkbox(value=default, **common)
    if kind == "names":  # the names on offer are the server's (e.g. its styles): the caller passes choices=
        return gr.Dropdown(**{"choices": [], "value": list(default), "multiselect": True, **common})
    raise ValueError(f"no single component for {name} ({kind})")


def pair(name: str, prefix: str) -> tuple[Any, Any]:
    """Two sliders for a ``pair`` field (depth_clip: far, near)."""
    spec, default = PARAMS[name], DEFAULTS[name]
    return tuple(gr.Slider(spec.low, spec.high, value=v, step=_step(spec), label=f"{label(name)} {part}",
                           info=spec.help if part == "far" else None, elem_id=f"{prefix}-{name}-{part}")
                 for part, v in zip(("far", "near"), default))


def _step(spec: Param) -> float:
    span = float(spec.high) - float(spec.low)
    return 0.01 if span <= 1 else 0.05 if span <= 10 else 0.5


def to_fields(names: list[str], values: list[Any]) -> dict[str, Any]:
    """Form values → GenerationRequest fields in JSON types (what the native API takes)."""
    out: dict[str, Any] = {}
    it = iter(values)
    for name in names:
        spec = PARAMS[name]
        if spec.kind == "pair":
            out[name] = [float(next(it)), float(next(it))]
            continue
        value = next(it)
        if spec.optional and value in (None, "", 0):
            value = None  # not given: the preset decides (GenerationRequest.resolved)
        elif spec.kind in ("int", "seed"):
            value = DEFAULTS[name] if value is None else int(value)
        elif spec.kind == "size":
            value = None if value in (None, "", 0) else int(value)
        elif spec.kind == "float":
            value = float(value)
        elif spec.kind == "bool":
            value = bool(value)
        elif spec.kind == "text":
            value = value or ""
        elif spec.kind == "names":
            value = [str(v) for v in value or ()]
        out[name] = value
    return out
