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
    strength: float = 0.8
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
        return self


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
