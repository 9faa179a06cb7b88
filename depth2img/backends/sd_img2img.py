"""Plain Stable Diffusion 1.x/2.x img2img (a 4-channel UNet): the comparison row of the sweep, and
inpainting without depth. Reference: diffusers' ``StableDiffusionImg2ImgPipeline``."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from ..errors import InvalidRequestError
from ..request import GenerationRequest
from .base import Backend, Denoiser, refuse_control_options, unet_call


class SDImg2ImgBackend(Backend):
    family = "sd-img2img"
    kind = "img2img"
    uses_depth = False
    label = "img2img"

    def check_inputs(self, request: GenerationRequest, *, model: str, has_estimator: bool) -> None:
        refuse_control_options(request, model)
        if request.depth_map is not None:
            raise InvalidRequestError(f"a depth map was given, but '{model}' is a plain img2img model (no depth input)")
        if request.image is None:
            raise InvalidRequestError(f"'{model}' is a plain img2img model: it needs an init image")
        if not request.depth_controls_default:
            raise InvalidRequestError(f"depth controls were given, but '{model}' is a plain img2img model")

    def denoiser(
        self, unet: Any, depth: torch.Tensor | None, request: GenerationRequest, end_timestep: float | None,
        timesteps: torch.Tensor | None = None,
    ) -> Denoiser:
        return partial(unet_call, unet)
