"""What a generation returns, and what the step callback sees."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .depth import DepthMaps
from .request import GenerationRequest


@dataclass
class Result:
    """``images[i]`` was made from ``seeds[i]`` and is described by ``infotexts[i]`` (A1111 format)."""

    images: list[Image.Image]
    depth_map: DepthMaps | None  # None for a plain img2img model
    seeds: list[int]
    infotexts: list[str]
    request: GenerationRequest


@dataclass
class StepInfo:
    """Passed to the step callback after every denoising step. Return False from the callback to cancel."""

    step: int  # 0-based index of the step just finished
    total: int  # number of steps that run (after strength truncation)
    timestep: int
    latents: torch.Tensor  # (B, 4, H/8, W/8)
