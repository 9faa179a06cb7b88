"""Stable Diffusion 2 depth (``512-depth-ema``): a 5-channel UNet, depth concatenated as channel 4.

Reference: Rombach et al. 2022 (LDM, hybrid concat conditioning); SD2's ``depth2img`` model card and
diffusers' ``StableDiffusionDepth2ImgPipeline``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidRequestError
from ..request import GenerationRequest
from .base import Backend, Conditioning, Denoiser, refuse_control_options, unet_call


class SDDepthBackend(Backend):
    family = "sd-depth"
    kind = "depth"
    uses_depth = True
    label = "depth2img"

    def check_inputs(self, request: GenerationRequest, *, model: str, has_estimator: bool) -> None:
        refuse_control_options(request, model)
        if request.depth_map is None and not has_estimator:
            raise InvalidRequestError(
                f"'{model}' is a depth model without a depth estimator: give a depth map or a depth model "
                "(--depth or --depth-model; a folder without depth_estimator/ has none)"
            )

    def denoiser(
        self, unet: Any, depth: torch.Tensor | None, request: GenerationRequest, end_timestep: float | None,
        timesteps: torch.Tensor | None = None,
    ) -> Denoiser:
        return DepthConcat(unet, depth, strength=request.depth_strength, end_timestep=end_timestep)

    def infotext(self, request: GenerationRequest, *, own_depth: bool, depth_source: str) -> dict[str, object]:
        return {"Depth": "own map" if own_depth else depth_source or "estimated"}


class DepthConcat:
    """eps = UNet([x, depth], t, cond): SD2-depth's hybrid conditioning (depth is input channel 4).

    ``depth`` is (B, 1, h, w) in [-1, 1], or None for a plain 4-channel img2img UNet. When the UNet is
    called on a CFG-doubled batch the same depth goes to both halves, as in the original and diffusers.
    The depth is concatenated after ``scale_model_input`` so it is never scaled by the sampler.

    Depth controls (depth2img's own; the defaults leave the reference untouched, bit for bit):
    ``strength`` s scales the normalised map toward the flat mid-depth plane 0 (s·d, so s = 0 is no
    structure); ``end_timestep`` feeds the depth only while ``t >= end_timestep`` and the flat plane
    after (see :func:`depth_end_timestep`), like ControlNet's "ending control step".
    """

    def __init__(
        self, unet: Any, depth: torch.Tensor | None, *, strength: float = 1.0, end_timestep: float | None = None
    ) -> None:
        if depth is not None and strength != 1.0:
            depth = depth * strength  # (B, 1, h, w), toward the flat plane
        self.unet, self.depth, self.end_timestep = unet, depth, end_timestep

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.depth is not None:
            depth = self.depth.repeat(x.shape[0] // self.depth.shape[0], 1, 1, 1)  # [d, d] for CFG halves
            if self.end_timestep is not None and float(t) < self.end_timestep:
                depth = torch.zeros_like(depth)  # the flat mid-depth plane after depth_end
            x = torch.cat([x, depth], dim=1)  # (2B, 5, h, w)
        return unet_call(self.unet, x, t, cond)
