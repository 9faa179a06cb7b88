"""The one request type that carries a generation from the edge (CLI, HTTP API, UI, Python) to the engine.

Edges only translate their inputs into a :class:`GenerationRequest`; the engine only reads this type.
Field names and defaults follow diffusers' ``StableDiffusionDepth2ImgPipeline.__call__`` where it has
the field (strength 0.8, 50 steps, guidance 7.5, eta 0) and AUTOMATIC1111's img2img where it does not
(resize modes, seed -1 = random, per-image seeds ``seed + i``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from .errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

ResizeMode = Literal["just_resize", "crop_and_resize", "resize_and_fill"]
RESIZE_MODES: tuple[str, ...] = ("just_resize", "crop_and_resize", "resize_and_fill")
MaskedContent = Literal["original", "fill", "latent_noise", "latent_nothing"]  # A1111's "Masked content"
MASKED_CONTENTS: tuple[str, ...] = ("original", "fill", "latent_noise", "latent_nothing")
InpaintArea = Literal["whole", "only_masked"]  # A1111's "Whole picture" / "Only masked"
INPAINT_AREAS: tuple[str, ...] = ("whole", "only_masked")

# An image is a PIL image, an HWC uint8/float array, a path, or encoded bytes; a depth map may also
# be an (H, W) array/tensor. Decoding (and its safety checks) happens in images.py / depth.py.
ImageInput = Union["Image.Image", "np.ndarray", str, Path, bytes]
DepthInput = Union["Image.Image", "np.ndarray", "torch.Tensor", str, Path, bytes]

MAX_SEED = 2**32 - 1  # A1111's range; seeds are per image seed + i, so keep headroom below 2**63
MAX_BATCH = 64
MAX_STEPS = 1000
MAX_SIDE = 4096


@dataclass
class GenerationRequest:
    """Everything one generation needs. Validate with :meth:`validate` (the pipeline does)."""

    prompt: str
    image: ImageInput | None = None
    negative_prompt: str = ""
    strength: float = 0.8  # ignored in depth-only generation (no image), which runs all steps from noise
    steps: int = 50
    guidance_scale: float = 7.5
    seed: int | None = None  # None or -1: random; image i uses seed + i
    batch_size: int = 1
    width: int | None = None  # both or neither; None keeps the image size (floored to a multiple of 8)
    height: int | None = None
    resize_mode: ResizeMode = "just_resize"
    scheduler: str = "pndm"
    depth_map: DepthInput | None = None  # own depth map (white = near), replaces the estimate
    eta: float = 0.0  # DDIM eta; ignored by schedulers without it
    # Inpainting (A1111's names and defaults; see inpaint.py). Without a mask these are ignored.
    mask: ImageInput | None = None  # white = repaint; an RGBA mask's alpha is used; resized if same aspect
    mask_blur: float = 4  # Gaussian sigma in pixels (A1111 kernel), 0..64
    masked_content: MaskedContent = "original"
    inpaint_area: InpaintArea = "whole"
    padding: int = 32  # only_masked: pixels around the mask's bounding box, 0..256
    invert_mask: bool = False  # A1111's "Inpaint not masked"
    # Depth controls (depth models only; the defaults leave the reference behaviour bit for bit).
    invert_depth: bool = False  # the map (own or estimated) uses black = near (Blender Z, depth cameras)
    depth_clip: tuple[float, float] = (0.0, 100.0)  # far/near clip as percentiles of the map, then renormalised
    depth_strength: float = 1.0  # 1 = as trained; 0 = flat map (no structure); blends toward mid-depth
    depth_end: float = 1.0  # fraction of the steps that get the depth; flat map afterwards
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, copied into the infotext

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def validate(self) -> GenerationRequest:
        """Raise :class:`InvalidRequestError` naming the first bad field; return self when all is well."""
        from .sampling import SCHEDULER_NAMES  # late import: sampling pulls in diffusers

        if not isinstance(self.prompt, str):
            raise InvalidRequestError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if not isinstance(self.negative_prompt, str):
            raise InvalidRequestError("negative_prompt must be a string")
        _check_number("strength", self.strength, 0.0, 1.0)
        _check_int("steps", self.steps, 1, MAX_STEPS)
        _check_number("guidance_scale", self.guidance_scale, 0.0, 100.0)
        _check_number("eta", self.eta, 0.0, 1.0)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        if self.seed is not None and self.seed != -1:
            _check_int("seed", self.seed, 0, MAX_SEED)
        if (self.width is None) != (self.height is None):
            raise InvalidRequestError("give both width and height, or neither (to keep the image size)")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 8, MAX_SIDE)
                if value % 8:
                    lower, upper = value - value % 8, value - value % 8 + 8
                    raise InvalidRequestError(f"{name} must be a multiple of 8, got {value} (try {lower} or {upper})")
        if self.resize_mode not in RESIZE_MODES:
            raise InvalidRequestError(f"unknown resize_mode {self.resize_mode!r}; choose one of {', '.join(RESIZE_MODES)}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise InvalidRequestError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
        if self.image is None and self.depth_map is None:
            raise InvalidRequestError("an image is required (or a depth map for depth-only generation)")
        self._validate_inpaint()
        self._validate_depth_controls()
        return self

    def _validate_inpaint(self) -> None:
        """A1111's UI ranges: blur 0-64, padding 0-256."""
        if self.mask is not None and self.image is None:
            raise InvalidRequestError("a mask needs an image to inpaint")
        if self.invert_mask and self.mask is None:
            raise InvalidRequestError("invert_mask needs a mask")
        _check_number("mask_blur", self.mask_blur, 0.0, 64.0)
        if self.masked_content not in MASKED_CONTENTS:
            raise InvalidRequestError(
                f"unknown masked_content {self.masked_content!r}; choose one of {', '.join(MASKED_CONTENTS)}"
            )
        if self.inpaint_area not in INPAINT_AREAS:
            raise InvalidRequestError(f"unknown inpaint_area {self.inpaint_area!r}; choose one of {', '.join(INPAINT_AREAS)}")
        _check_int("padding", self.padding, 0, 256)

    def _validate_depth_controls(self) -> None:
        if not isinstance(self.invert_depth, bool):
            raise InvalidRequestError(f"invert_depth must be true or false, got {self.invert_depth!r}")
        if not isinstance(self.depth_clip, (tuple, list)) or len(self.depth_clip) != 2:
            raise InvalidRequestError(f"depth_clip must be two percentiles (far, near), got {self.depth_clip!r}")
        _check_number("depth_clip far", self.depth_clip[0], 0.0, 100.0)
        _check_number("depth_clip near", self.depth_clip[1], 0.0, 100.0)
        if self.depth_clip[0] >= self.depth_clip[1]:
            raise InvalidRequestError(f"depth_clip far percentile must be below near, got {tuple(self.depth_clip)}")
        _check_number("depth_strength", self.depth_strength, 0.0, 1.0)
        _check_number("depth_end", self.depth_end, 0.0, 1.0)

    @property
    def depth_controls_default(self) -> bool:
        """True when no depth control is set, so the reference path runs untouched."""
        return (
            not self.invert_depth
            and tuple(self.depth_clip) == (0.0, 100.0)
            and self.depth_strength == 1.0
            and self.depth_end == 1.0
        )


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
