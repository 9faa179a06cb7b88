"""The one request type that carries a generation from the edge (CLI, HTTP API, UI, Python) to the engine.

Edges only translate their inputs into a :class:`GenerationRequest`; the engine only reads this type.
Each parameter is declared once, here: its type, default, range, choices, help text, CLI flag and
AUTOMATIC1111 API name live on the field (:class:`Param`, ComfyUI's INPUT_TYPES idea). ``validate()``,
the CLI options, the HTTP schemas and the UI form are derived from :data:`PARAMS`; adding a parameter
is one edit. Field names and defaults follow diffusers' ``StableDiffusionDepth2ImgPipeline.__call__``
where it has the field (strength 0.8, guidance 7.5, eta 0; sampler and steps come from :data:`PRESETS`:
``preset="reference"`` is diffusers' pndm and 50 steps) and AUTOMATIC1111's img2img where it does not (resize modes, seed -1 = random, per-image seeds ``seed + i``, the inpainting options).
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args

from . import a1111
from .a1111 import ControlMode, InpaintArea, MaskedContent, ResizeMode, SchedulerName
from .errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

__all__ = ["GenerationRequest", "Param", "PARAMS", "ImageInput", "DepthInput", "ResizeMode", "MaskedContent",
           "InpaintArea", "SchedulerName", "Preset", "PRESETS", "PRESET_NAMES", "RESIZE_MODES", "MASKED_CONTENTS", "INPAINT_AREAS", "SCHEDULER_NAMES"]

RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
MASKED_CONTENTS: tuple[str, ...] = get_args(MaskedContent)
INPAINT_AREAS: tuple[str, ...] = get_args(InpaintArea)
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)
CONTROL_MODE_NAMES: tuple[str, ...] = get_args(ControlMode)

# An image is a PIL image, an HWC uint8/float array, a path, or encoded bytes; a depth map may also
# be an (H, W) array/tensor. Decoding (and its safety checks) happens in images.py / depth.py.
ImageInput = Union["Image.Image", "np.ndarray", str, Path, bytes]
DepthInput = Union["Image.Image", "np.ndarray", "torch.Tensor", str, Path, bytes]

MAX_SEED = 2**32 - 1  # A1111's range; seeds are per image seed + i, so keep headroom below 2**63
MAX_BATCH = 64
MAX_STEPS = 1000
MAX_SIDE = 4096
PERCENTILES = (0.0, 100.0)  # depth_clip's range and its "no clip" default

Preset = Literal["default", "reference"]
PRESET_NAMES: tuple[str, ...] = get_args(Preset)
# What a preset gives the fields the user left out (None). "reference" is diffusers'
# StableDiffusionDepth2ImgPipeline.__call__ with the model's own scheduler: PNDM (PLMS), 50 steps; bit-exact
# parity with diffusers (tests/test_parity.py). "default" is DPM-Solver++(2M) with Karras sigmas at 20 steps:
# Lu et al. 2022 (arXiv 2211.01095) report high-quality guided samples "within only 15 to 20 steps" for
# latent DPMs where DDIM/PLMS need far more; AUTOMATIC1111's UI defaults to 20 steps and, since v1.9, to
# DPM++ 2M with the Karras schedule (its sampler PR #4304: "very detailed at all steps starting from 15").
# 20 steps x strength 0.8 = 16 UNet steps instead of 40 (0.4 of the UNet work); benchmarks/ measure it.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"scheduler": "dpmpp_2m_karras", "steps": 20},
    "reference": {"scheduler": "pndm", "steps": 50},
}

Kind = Literal["text", "image", "depth", "float", "int", "seed", "size", "choice", "bool", "pair", "extra", "names"]


@dataclass(frozen=True)
class Param:
    """How one request field is typed, bounded, explained and named at every edge.

    ``kind`` says how edges read it (``image``/``depth``: a file or encoded image; ``pair``: two numbers
    "a,b"; ``size``: an optional multiple of 8; ``seed``: -1 = random). ``flag`` is the CLI option
    (default ``--field-name``), ``a1111`` the field of A1111's ``/sdapi/v1/img2img`` it maps to (None:
    depth2img's own), ``group`` the section it is shown under.
    """

    kind: Kind
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    flag: str = ""
    short: str | None = None
    a1111: str | None = None
    group: str = "generation"
    cli: bool = True
    optional: bool = False  # None allowed: "not given", resolved in one place (GenerationRequest.resolved)


def param(default: Any, kind: Kind, help: str, **options: Any) -> Any:
    """A dataclass field carrying its :class:`Param` (``default_factory`` for tuples stays a plain default)."""
    return field(default=default, metadata={"param": Param(kind, help, **options)})


@dataclass
class GenerationRequest:
    """Everything one generation needs. Validate with :meth:`validate` (the pipeline does)."""

    prompt: str = param("", "text", "What the new picture shows.", short="-p", a1111="prompt", group="prompt")
    image: ImageInput | None = param(
        None, "image", "The photo whose 3-D layout is kept (PNG/JPEG/WebP/TIFF/BMP). Without it: depth-only "
        "generation from --depth.", short="-i", a1111="init_images", group="input")
    negative_prompt: str = param("", "text", "What to steer away from.", short="-n", a1111="negative_prompt", group="prompt")
    strength: float = param(
        0.8, "float", "Denoising strength; with depth, 1.0 still keeps the layout. 0 returns the photo unchanged "
        "(as A1111). Ignored in depth-only generation.", low=0.0, high=1.0, a1111="denoising_strength")
    preset: Preset = param(
        "default", "choice", "Defaults for the sampler and steps you do not give: default (DPM++ 2M Karras, 20 steps) "
        "or reference (diffusers' depth2img: pndm, 50 steps, bit-exact).", choices=PRESET_NAMES, group="speed")
    steps: int | None = param(None, "int", "Sampling steps (before strength truncation); default: the preset's.",
                              low=1, high=MAX_STEPS, a1111="steps", optional=True)
    guidance_scale: float = param(7.5, "float", "Classifier-free guidance scale (1 or less: off).", low=0.0, high=100.0,
                                  flag="--cfg", a1111="cfg_scale")
    seed: int | None = param(-1, "seed", "Seed; -1 = random (the seed drawn is reported). Image i of a batch uses "
                             "seed + i.", low=-1, high=MAX_SEED, a1111="seed")
    batch_size: int = param(1, "int", "Images to make (files OUT-0.png, OUT-1.png...).", low=1, high=MAX_BATCH,
                            short="-b", a1111="batch_size")
    width: int | None = param(None, "size", "Output width, a multiple of 8; default: the image's, floored.",
                              low=8, high=MAX_SIDE, a1111="width", group="size")
    height: int | None = param(None, "size", "Output height, a multiple of 8; give with the width.",
                               low=8, high=MAX_SIDE, a1111="height", group="size")
    resize_mode: ResizeMode = param("just_resize", "choice", "How the photo fits the output size (A1111's modes).",
                                    choices=RESIZE_MODES, a1111="resize_mode", group="size")
    scheduler: SchedulerName | None = param(None, "choice", "Sampler (pndm is the model's own); default: the preset's.",
                                            choices=SCHEDULER_NAMES, a1111="sampler_name", optional=True)
    styles: tuple[str, ...] = param(
        (), "names", "A saved style to apply (A1111 styles.csv, see --styles-file); repeat for several, applied in order.",
        flag="--style", a1111="styles", group="prompt")
    loras: tuple[str, ...] = param(
        (), "names", "A LoRA to apply, NAME:WEIGHT (a file in --lora-dir; as <lora:NAME:WEIGHT> in the prompt); repeatable.",
        flag="--lora", group="prompt")
    depth_map: DepthInput | None = param(
        None, "depth", "Your own depth map (8/16-bit PNG/TIFF or .npy; white = near), instead of the estimate.",
        flag="--depth", group="depth")
    eta: float = param(0.0, "float", "DDIM eta (0 = deterministic); only the ddim sampler uses it.", low=0.0, high=1.0,
                       a1111="eta")
    # Inpainting (A1111's names and defaults; see inpaint.py). Without a mask these must stay at their defaults.
    mask: ImageInput | None = param(None, "image", "Inpaint: white = repaint (an RGBA mask's alpha is used).",
                                    a1111="mask", group="inpaint")
    mask_blur: float = param(4, "float", "Mask blur sigma in pixels (A1111).", low=0.0, high=64.0, a1111="mask_blur",
                             group="inpaint")
    masked_content: MaskedContent = param("original", "choice", "What starts under the mask (A1111's masked content).",
                                          choices=MASKED_CONTENTS, a1111="inpainting_fill", group="inpaint")
    inpaint_area: InpaintArea = param(
        "whole", "choice", "whole picture, or only_masked (crop around the mask, generate, paste back).",
        choices=INPAINT_AREAS, a1111="inpaint_full_res", group="inpaint")
    padding: int = param(32, "int", "only_masked: pixels kept around the mask.", low=0, high=256,
                         a1111="inpaint_full_res_padding", group="inpaint")
    invert_mask: bool = param(False, "bool", "Repaint what is black instead (A1111's 'Inpaint not masked').",
                              a1111="inpainting_mask_invert", group="inpaint")
    # Depth controls (depth models only; the defaults leave the reference behaviour bit for bit).
    invert_depth: bool = param(False, "bool", "The depth map uses black = near (Blender Z, depth cameras).", group="depth")
    depth_clip: tuple[float, float] = param(
        PERCENTILES, "pair", "FAR,NEAR percentiles to clip the depth to, then renormalise, e.g. 2,98.",
        low=PERCENTILES[0], high=PERCENTILES[1], group="depth")
    depth_strength: float = param(1.0, "float", "How strongly the depth is followed (1 = as trained, 0 = flat).",
                                  low=0.0, high=1.0, group="depth")
    depth_end: float = param(1.0, "float", "Fraction of the steps that get the depth; a flat map after.",
                             low=0.0, high=1.0, group="depth")
    # ControlNet (models loaded with a ControlNet only; A1111's unit knobs and defaults, not diffusers').
    control_weight: float = param(1.0, "float", "ControlNet weight (A1111's default 1; diffusers' img2img uses 0.8).",
                                  low=0.0, high=2.0, group="controlnet")
    control_start: float = param(0.0, "float", "Fraction of the steps that run before the ControlNet starts.",
                                 low=0.0, high=1.0, group="controlnet")
    control_end: float = param(1.0, "float", "Fraction of the steps that run after which the ControlNet stops.",
                               low=0.0, high=1.0, group="controlnet")
    control_mode: ControlMode = param(
        "balanced", "choice", "balanced; prompt (my prompt is more important: soft injection); controlnet "
        "(ControlNet is more important: diffusers' guess mode).", choices=CONTROL_MODE_NAMES, group="controlnet")
    control_resize: ResizeMode = param(
        "crop_and_resize", "choice", "How your own depth map fits the output size with a ControlNet (sd-webui-controlnet's "
        "resize modes; its default crop_and_resize). An estimated depth comes from the photo already fitted by "
        "--resize-mode.", choices=RESIZE_MODES, group="controlnet")
    processor_res: int = param(512, "int", "Resolution (short side) the depth estimator runs at for a ControlNet, "
                               "then the map is resized to the output (sd-webui-controlnet's Preprocessor resolution).",
                               low=64, high=2048, group="controlnet")
    pixel_perfect: bool = param(False, "bool", "Derive the estimator's resolution from the output size and "
                                "--control-resize instead of --processor-res (sd-webui-controlnet's Pixel Perfect).",
                                group="controlnet")
    # Approximate fast mode (fast.py): each knob off by default and switchable alone; fast=True turns on the
    # bundle for the knobs left off (fast.resolve_fast). Off, the output is the exact path's bit for bit.
    fast: bool = param(False, "bool", "Approximate fast mode: turns on the speed knobs left off (uncond sigma 1, "
                       "DeepCache every 3 steps, 16-bit compute where the hardware has it natively).", group="speed")
    uncond_sigma: float = param(0.0, "float", "Skip the unconditional pass on every other step once sigma is below "
                                "this (A1111's NGMS); 0 = off.", low=0.0, high=20.0, group="speed")
    deepcache_interval: int = param(1, "int", "DeepCache: the whole UNet every N-th step, its deep features reused "
                                    "in between; 1 = off.", low=1, high=10, group="speed")
    low_precision: bool = param(False, "bool", "UNet in 16-bit autocast: bfloat16 on CPU (fast only with "
                                "AVX512-BF16/AMX) and CUDA, float16 on MPS/older CUDA.", group="speed")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"param": Param(
        "extra", "Free-form infotext entries (A1111 keys; cannot override depth2img's own).", cli=False)})

    def replace(self, **changes: Any) -> GenerationRequest:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidRequestError(f"unknown request field {unknown[0]!r}")
        return dataclasses.replace(self, **changes)

    def resolved(self) -> GenerationRequest:
        """The fields left out (None) filled from the preset; what the user gave always wins. The one place
        where "not given" is decided: the pipeline plans with the resolved request, so the infotext records
        the sampler and steps actually used."""
        preset = PRESETS.get(self.preset, PRESETS["default"])
        changes = {name: value for name, value in preset.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **changes) if changes else self

    def validate(self, *, label: Callable[[str], str] | None = None) -> GenerationRequest:
        """Raise :class:`InvalidRequestError` naming the first bad field; return self when all is well.

        ``label`` turns a field name into what the user typed (the CLI passes its flags, so an error
        says ``--cfg``, not ``guidance_scale``).
        """
        name = label or (lambda f: f)
        if (self.width is None) != (self.height is None):
            raise InvalidRequestError(
                f"give both {name('width')} and {name('height')}, or neither (to keep the image size)")
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), f.metadata["param"], name(f.name))
        self._validate_combination(name)
        return self

    def _validate_combination(self, name: Callable[[str], str]) -> None:
        if self.image is None and self.depth_map is None:
            raise InvalidRequestError(
                f"an image is required ({name('image')}), or a depth map ({name('depth_map')}) for depth-only generation")
        if self.mask is not None and self.image is None:
            raise InvalidRequestError(f"{name('mask')} needs an image to inpaint")
        if self.mask is None:
            changed = [f for f in INPAINT_OPTIONS if getattr(self, f) != DEFAULTS[f]]
            if changed:
                raise InvalidRequestError(f"{name(changed[0])} needs a mask ({name('mask')})")
        if self.depth_clip[0] >= self.depth_clip[1]:
            raise InvalidRequestError(
                f"{name('depth_clip')} far percentile must be below near, got {tuple(self.depth_clip)}")
        if self.control_start >= self.control_end:
            raise InvalidRequestError(
                f"{name('control_start')} {self.control_start:g} must be below {name('control_end')} {self.control_end:g}")
        steps = self.resolved().steps
        if self.image is not None and 0 < self.strength and int(steps * self.strength) == 0:
            raise InvalidRequestError(
                f"{name('strength')} {self.strength:g} with {steps} {name('steps')} runs no denoising step; "
                "raise either (or use strength 0 to keep the photo unchanged)")
        if self.width is None and self.image is not None and hasattr(self.image, "size"):
            check_image_size(self.image.size, name("width"), name("height"))

    def field_notes(self) -> list[str]:
        """Fields that were given but do nothing for this request (warned about, never silently dropped)."""
        notes = []
        if self.image is None and self.strength != DEFAULTS["strength"]:
            notes.append("strength is ignored in depth-only generation (no image): every step runs from noise")
        scheduler = self.resolved().scheduler
        if self.eta != DEFAULTS["eta"] and scheduler != "ddim":
            notes.append(f"eta is ignored by the {scheduler} sampler (only ddim uses it)")
        return notes

    @property
    def depth_controls_default(self) -> bool:
        """True when no depth control is set, so the reference path runs untouched."""
        return all(getattr(self, f) == DEFAULTS[f] for f in DEPTH_CONTROLS) and tuple(self.depth_clip) == PERCENTILES

    @property
    def changed_control_options(self) -> list[str]:
        """The ControlNet fields set to something else than their default (refused without a ControlNet)."""
        return [f for f in CONTROL_OPTIONS if getattr(self, f) != DEFAULTS[f]]


INPAINT_OPTIONS: tuple[str, ...] = ("mask_blur", "masked_content", "inpaint_area", "padding", "invert_mask")
DEPTH_CONTROLS: tuple[str, ...] = ("invert_depth", "depth_clip", "depth_strength", "depth_end")
CONTROL_OPTIONS: tuple[str, ...] = ("control_weight", "control_start", "control_end", "control_mode", "control_resize",
                                     "processor_res", "pixel_perfect")


def resolve_seeds(seed: int | None, batch: int) -> list[int]:
    """Per-image seeds ``seed + i`` (A1111); None or -1 draws a random base seed."""
    if seed is None or seed == -1:
        seed = secrets.randbelow(MAX_SEED - batch)
    return [seed + i for i in range(batch)]


def spec_of(request_type: type) -> tuple[Mapping[str, Param], Mapping[str, Any]]:
    """``(params, defaults)`` of a request dataclass (GenerationRequest, or a subclass that adds fields)."""
    fields = dataclasses.fields(request_type)
    return ({f.name: f.metadata["param"] for f in fields},
            {f.name: f.default for f in fields if f.default is not dataclasses.MISSING})


PARAMS, DEFAULTS = spec_of(GenerationRequest)  # field → Param, field → default: what every edge derives from


def flag(name: str, params: Mapping[str, Param] | None = None) -> str:
    """The CLI option of a request field: ``--cfg`` for guidance_scale, ``--depth`` for depth_map..."""
    return (params or PARAMS)[name].flag or "--" + name.replace("_", "-")


def check_image_size(size: tuple[int, int], width_name: str = "width", height_name: str = "height") -> None:
    """The size taken from an image obeys the limits a requested size does (one rule for both)."""
    w, h = size
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        hint = f"{int(w * scale) // 8 * 8}x{int(h * scale) // 8 * 8}"
        raise InvalidRequestError(
            f"the image is {w}x{h}; the largest side depth2img generates is {MAX_SIDE}: give {width_name} and "
            f"{height_name} (e.g. {hint}) or resize the photo")


_EXTRA_KEY = re.compile(a1111.INFOTEXT_KEY_PATTERN)


def check_value(field_name: str, value: Any, spec: Param, name: str) -> None:
    """Check one field against its :class:`Param`; ``name`` is how the error refers to it."""
    kind = spec.kind
    if value is None and spec.optional:
        return
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}")
    elif kind == "float":
        _check_number(name, value, spec.low, spec.high)
    elif kind == "int":
        _check_int(name, value, int(spec.low), int(spec.high))
    elif kind == "seed":
        if value is not None:
            _check_int(name, value, int(spec.low), int(spec.high))
    elif kind == "size":
        if value is not None:
            _check_int(name, value, int(spec.low), int(spec.high))
            if value % 8:
                lower, upper = value - value % 8, value - value % 8 + 8
                raise InvalidRequestError(f"{name} must be a multiple of 8, got {value} (try {lower} or {upper})")
    elif kind == "choice":
        if value not in spec.choices:
            where = "" if name == field_name else f"{name}: "
            raise InvalidRequestError(
                f"{where}unknown {field_name} {value!r}; choose one of {', '.join(spec.choices)}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRequestError(f"{name} must be true or false, got {value!r}")
    elif kind == "pair":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise InvalidRequestError(f"{name} must be two percentiles (far, near), got {value!r}")
        for part, v in zip(("far", "near"), value):
            _check_number(f"{name} {part}", v, spec.low, spec.high)
    elif kind == "extra":
        _check_extra(name, value)
    elif kind == "names":
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
            raise InvalidRequestError(f"{name} must be a list of names, got {value!r}")


def _check_extra(name: str, extra: Any) -> None:
    if not isinstance(extra, dict):
        raise InvalidRequestError(f"{name} must be a mapping of infotext keys to values")
    for key, value in extra.items():
        if not isinstance(key, str) or not _EXTRA_KEY.fullmatch(key) or key != key.strip():
            raise InvalidRequestError(f"{name}: {key!r} is not a valid infotext key (letters, digits, space, -, /)")
        if key in a1111.RESERVED_INFOTEXT_KEYS:
            raise InvalidRequestError(f"{name}: {key!r} is written by depth2img itself and cannot be overridden")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidRequestError(f"{name}: the value of {key!r} must be text or a number")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be in [{low}, {high}], got {value}")
