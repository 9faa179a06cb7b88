"""AUTOMATIC1111's names and codes, in one place: samplers, resize modes, masked content, inpaint area,
mask mode, the API's field names, and the infotext keys depth2img writes.

The infotext (infotext.py), the parameter spec (request.py), the HTTP API's ``/sdapi/v1`` translation
and the UI read these tables; nothing else spells an A1111 name. Sources: A1111's ``sd_samplers_*.py``
and ``sd_schedulers.py`` (sampler and schedule-type labels), ``modules/api/models.py`` and
``processing.py`` (API fields and integer codes), ``img2img.py`` (UI labels), reference
ux_anchors.md §2. Light on purpose: no torch, no diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# -- our names (the request's Literal types); the tables below are keyed by them -------------------

SchedulerName = Literal["pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lms"]
ResizeMode = Literal["just_resize", "crop_and_resize", "resize_and_fill"]
MaskedContent = Literal["original", "fill", "latent_noise", "latent_nothing"]
InpaintArea = Literal["whole", "only_masked"]
ControlMode = Literal["balanced", "prompt", "controlnet"]


@dataclass(frozen=True)
class Sampler:
    """A1111's sampler label and (1.9+) schedule type for one of our scheduler names."""

    name: str
    schedule_type: str | None = None  # None: A1111's "Automatic" (the sampler's own schedule)


SAMPLERS: dict[str, Sampler] = {
    "pndm": Sampler("PLMS"),  # diffusers' PNDM with skip_prk_steps is PLMS
    "ddim": Sampler("DDIM"),
    "euler": Sampler("Euler"),
    "euler_a": Sampler("Euler a"),
    "dpmpp_2m": Sampler("DPM++ 2M"),
    "dpmpp_2m_karras": Sampler("DPM++ 2M", "Karras"),
    "unipc": Sampler("UniPC"),
    "lms": Sampler("LMS"),
}

# img2img resize modes: A1111's integer code (API ``resize_mode``) and UI label. Code 3 (latent
# upscale) has no equivalent here.
RESIZE_MODES: dict[str, tuple[int, str]] = {
    "just_resize": (0, "Just resize"),
    "crop_and_resize": (1, "Crop and resize"),
    "resize_and_fill": (2, "Resize and fill"),
}

# Masked content: API ``inpainting_fill`` code and the infotext/UI spelling.
MASKED_CONTENT: dict[str, tuple[int, str]] = {
    "fill": (0, "fill"),
    "original": (1, "original"),
    "latent_noise": (2, "latent noise"),
    "latent_nothing": (3, "latent nothing"),
}

# Inpaint area: API ``inpaint_full_res`` (True = only masked) and the infotext/UI spelling.
INPAINT_AREAS: dict[str, tuple[bool, str]] = {
    "whole": (False, "Whole picture"),
    "only_masked": (True, "Only masked"),
}

# Mask mode: API ``inpainting_mask_invert`` code and the infotext spelling.
MASK_MODES: dict[bool, tuple[int, str]] = {False: (0, "Inpaint masked"), True: (1, "Inpaint not masked")}

# -- sd-webui-controlnet (Mikubill/sd-webui-controlnet @56cec5b: scripts/enums.py, internal_controlnet/
# external_code.py, infotext.py). Its unit fields are written as one quoted infotext entry per unit.

# Control mode: the unit's integer code (API ``control_mode`` also takes the label) and its label.
CONTROL_MODES: dict[str, tuple[int, str]] = {
    "balanced": (0, "Balanced"),
    "prompt": (1, "My prompt is more important"),
    "controlnet": (2, "ControlNet is more important"),
}
# The extension's resize-mode labels (its own capitalisation, unlike img2img's RESIZE_MODES).
CONTROLNET_RESIZE_MODES: dict[str, str] = {
    "just_resize": "Just Resize",
    "crop_and_resize": "Crop and Resize",
    "resize_and_fill": "Resize and Fill",
}
# The extension's integer codes for its resize modes (ResizeMode.int_value) and the old labels it still reads.
CONTROLNET_RESIZE_CODES: dict[str, int] = {"just_resize": 0, "crop_and_resize": 1, "resize_and_fill": 2}
CONTROLNET_RESIZE_ALIASES: dict[str, str] = {
    "Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill",
}
CONTROLNET_DEPTH_MODULE = "depth_midas"  # the label of the extension's MiDaS depth preprocessor
CONTROLNET_NO_MODULE = "none"  # the control image is used as given (an own depth map)
CONTROLNET_API_VERSION = 3  # GET /controlnet/version (external_code.get_api_version)
CONTROLNET_SCRIPT = "controlnet"  # the always-on script title, matched case-insensitively (A1111's script_name_to_index)


@dataclass(frozen=True)
class ControlNetModule:
    """A depth preprocessor of the extension: its internal name, UI label, and the processor-resolution
    slider (scripts/preprocessor/legacy/preprocessor_compiled.py; None: the module has no slider)."""

    name: str
    label: str
    resolution: tuple[int, int, int] | None  # (default, min, max)


# The modules depth2img serves (internal name → module). "depth" (label depth_midas) is the model's own
# MiDaS/DPT estimator; "none" takes the unit's image as the depth map.
CONTROLNET_MODULES: dict[str, ControlNetModule] = {
    "none": ControlNetModule("none", "none", None),
    "depth": ControlNetModule("depth", CONTROLNET_DEPTH_MODULE, (512, 64, 2048)),
}
# The extension's other depth modules, named in the refusal (depth2img has no such estimator).
CONTROLNET_OTHER_DEPTH_MODULES: tuple[str, ...] = (
    "depth_anything", "depth_anything_v2", "depth_leres", "depth_leres++", "depth_zoe", "depth_hand_refiner")
CONTROLNET_UNIT_KEY = "ControlNet {index}"  # infotext key of unit ``index``
# The unit's fields in the order the extension serialises them ("Module: depth_midas, Model: ...").
CONTROLNET_UNIT_FIELDS: tuple[str, ...] = (
    "Module", "Model", "Weight", "Resize Mode", "Processor Res", "Threshold A", "Threshold B",
    "Guidance Start", "Guidance End", "Pixel Perfect", "Control Mode",
)


def controlnet_unit_text(fields: dict[str, object]) -> str:
    """One unit's infotext value as the extension writes it: ``Key: value`` joined by ", "; whole floats
    without ".0" (``Weight: 1``), booleans as ``True``/``False``; None values are left out."""
    def show(value: object) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return ", ".join(f"{key}: {show(fields[key])}" for key in CONTROLNET_UNIT_FIELDS
                     if key in fields and fields[key] is not None)


def parse_controlnet_unit(text: str) -> dict[str, str]:
    """Inverse of :func:`controlnet_unit_text` (values as text); the extension's own parser splits the same way."""
    out: dict[str, str] = {}
    for part in text.split(", "):
        key, sep, value = part.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


# An infotext key: A1111's re_param_code key pattern (it uses ``+``, i.e. at least two characters); the
# infotext parser reads with it and GenerationRequest.extra is checked against it.
INFOTEXT_KEY_PATTERN = r"\w[\w \-/]*"

# The infotext keys depth2img writes itself, in A1111's order. ``GenerationRequest.extra`` may add
# keys but never one of these (it cannot rewrite the seed or the steps a picture was made with).
INFOTEXT_KEYS: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
    "Denoising strength", "Eta", "Depth",
    "Mask blur", "Inpaint area", "Masked area padding", "Masked content", "Mask mode",
    "Depth invert", "Depth clip", "Depth strength", "Depth end",
    "Styles",  # not written by A1111 (it stores the styled prompt only); kept so the names survive a paste
    CONTROLNET_UNIT_KEY.format(index=0),
    "TI hashes", "Lora hashes",  # A1111: "name: 12-digit sha256 short hash" per embedding / LoRA used
    "NGMS",  # A1111's key for s_min_uncond ("Negative Guidance minimum sigma"), depth2img's uncond_sigma
    "DeepCache", "Precision",  # depth2img's fast-mode knobs (fast.py): written only when on
    "Version",
)
RESERVED_INFOTEXT_KEYS: tuple[str, ...] = ("Prompt", "Negative prompt", *INFOTEXT_KEYS)


def sampler_from_a1111(name: str, schedule_type: str | None = None) -> str | None:
    """Our scheduler name for an A1111 sampler label (+ schedule type; "Automatic" = none), or None.

    Also accepts pre-1.9 combined labels such as "DPM++ 2M Karras", which A1111 1.9+ itself rejects
    with 404 (mix1009/sdwebuiapi#164): we take them, since their meaning is unambiguous.
    """
    schedule = None if schedule_type in (None, "", "Automatic", "automatic") else schedule_type
    for ours, sampler in SAMPLERS.items():
        if sampler.name == name and sampler.schedule_type == schedule:
            return ours
        if schedule is None and sampler.schedule_type and name == f"{sampler.name} {sampler.schedule_type}":
            return ours
    return None
