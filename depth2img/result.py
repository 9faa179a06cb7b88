"""What a generation returns, and what the step callback sees."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Notices for the user (prompt truncated, flat depth map, VAE retried in float32, an option that
    # does nothing here...). They travel with the result instead of through the process-wide
    # ``warnings`` machinery, so a server shows each request its own; the CLI prints them.
    warnings: list[str] = field(default_factory=list)


@dataclass
class StepInfo:
    """Passed to the step callback after every denoising step. Return False from the callback to cancel."""

    step: int  # 0-based index of the step just finished
    total: int  # number of steps that run (after strength truncation)
    timestep: int
    latents: torch.Tensor  # (B, 4, H/8, W/8)
