"""ControlNet-depth on an SD 1.x/2.x or SDXL base: the depth goes through a ControlNet whose residuals
are added to the UNet's skip connections (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image
Diffusion Models").

Reference: diffusers' ``StableDiffusionControlNet{,Img2Img}Pipeline`` and
``StableDiffusionXLControlNetImg2ImgPipeline`` (0.42); A1111's meaning of the knobs from
sd-webui-controlnet (``scripts/hook.py``, ``scripts/controlnet.py``). The control image is the depth at
the output size, 3 channels, [0, 1], white = near (the pipeline's prepare_depth at pixel size, then
:func:`control_image`).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import a1111
from ..errors import InvalidRequestError
from ..request import DEFAULTS, GenerationRequest
from .base import Backend, Conditioning, Denoiser, unet_call
from .sdxl_text import sdxl_time_ids

SOFT_INJECTION_BASE = 0.825  # sd-webui-controlnet's soft-injection ramp: weight * 0.825 ** (12 - i)


class ControlNetBackend(Backend):
    """A base model plus a ControlNet (``Components.controlnet``), chosen when one is loaded."""

    kind = "depth"
    uses_depth = True
    label = "controlnet"
    depth_at_pixels = True

    def __init__(self, controlnet: Any, *, sdxl: bool = False, controlnet_name: str = "controlnet") -> None:
        self.controlnet, self.sdxl, self.controlnet_name = controlnet, sdxl, controlnet_name
        self.family = "sdxl-controlnet" if sdxl else "sd-controlnet"  # type: ignore[misc]

    def check_inputs(self, request: GenerationRequest, *, model: str, has_estimator: bool) -> None:
        if request.depth_map is None and not has_estimator:
            raise InvalidRequestError(
                f"'{model}' has no depth estimator for its ControlNet: give a depth map or a depth model")
        for own, control in (("depth_strength", "control_weight"), ("depth_end", "control_end")):
            if getattr(request, own) != DEFAULTS[own]:
                raise InvalidRequestError(
                    f"{own} is for SD2-depth models; with a ControlNet use {control} instead")

    def denoiser(
        self, unet: Any, depth: torch.Tensor | None, request: GenerationRequest, end_timestep: float | None,
        timesteps: torch.Tensor | None = None,
    ) -> Denoiser:
        assert depth is not None and timesteps is not None  # check_inputs; the pipeline passes the steps
        keep = control_keep(len(timesteps), request.control_start, request.control_end)
        return ControlNetDenoiser(unet, self.controlnet, control_image(depth), weight=request.control_weight,
                                  keep=keep, mode=request.control_mode)

    def infotext(self, request: GenerationRequest, *, own_depth: bool, depth_source: str) -> dict[str, object]:
        unit = {
            "Module": a1111.CONTROLNET_NO_MODULE if own_depth else a1111.CONTROLNET_DEPTH_MODULE,
            "Model": self.controlnet_name,
            "Weight": float(request.control_weight),
            "Resize Mode": a1111.CONTROLNET_RESIZE_MODES[request.control_resize],
            "Guidance Start": float(request.control_start),
            "Guidance End": float(request.control_end),
            "Pixel Perfect": bool(request.pixel_perfect),
            "Control Mode": a1111.CONTROL_MODES[request.control_mode][1],
        }
        depth = "own map" if own_depth else depth_source or "estimated"
        return {"Depth": depth, a1111.CONTROLNET_UNIT_KEY.format(index=0): a1111.controlnet_unit_text(unit)}


def control_image(depth: torch.Tensor) -> torch.Tensor:
    """The pipeline's depth (B, 1, H, W) in [-1, 1] → the ControlNet's image (B, 3, H, W) in [0, 1], white = near.

    The map was min-max normalised in float32 before any quantisation (a 16-bit own map keeps its
    precision); this is the same min-max to [0, 1], replicated to 3 channels as A1111's depth_midas."""
    return ((depth + 1.0) / 2.0).clamp(0.0, 1.0).repeat(1, 3, 1, 1)


def pixel_perfect_resolution(raw: tuple[int, int], target: tuple[int, int], resize: str) -> int:
    """sd-webui-controlnet's ``pixel_perfect_resolution`` (internal_controlnet/external_code.py): the
    preprocessor resolution that maps the input image onto the output pixel for pixel.

    With ``raw`` = (H, W) of the image the estimator gets and ``target`` = (H, W) of the output,
    k0 = target_H / raw_H and k1 = target_W / raw_W; "Resize and Fill" (OUTER_FIT, the whole image fits
    inside) takes k = min(k0, k1), the other resize modes (the target filled, cropping) k = max(k0, k1);
    the resolution is round(k * min(raw_H, raw_W)) (numpy's round, half to even, as Python's)."""
    (raw_h, raw_w), (target_h, target_w) = raw, target
    k0, k1 = float(target_h) / float(raw_h), float(target_w) / float(raw_w)
    k = min(k0, k1) if resize == "resize_and_fill" else max(k0, k1)
    return int(round(k * float(min(raw_h, raw_w))))


def estimator_resolution(request: GenerationRequest, raw: tuple[int, int], target: tuple[int, int]) -> int:
    """The resolution (short side) the depth estimator runs at for a ControlNet: ``processor_res``, or
    with ``pixel_perfect`` the one :func:`pixel_perfect_resolution` derives (raw/target as (H, W))."""
    if request.pixel_perfect:
        return pixel_perfect_resolution(raw, target, request.control_resize)
    return int(request.processor_res)


def control_keep(n: int, start: float, end: float) -> list[float]:
    """1.0 for the steps the ControlNet acts on, of the ``n`` that run: diffusers' control_guidance_start/end
    (step i is kept when i/n >= start and (i+1)/n <= end), A1111's guidance start/end."""
    return [1.0 - float(i / n < start or (i + 1) / n > end) for i in range(n)]


class ControlNetDenoiser:
    """eps = UNet(x, t, cond, + ControlNet(x, t, cond, control)): one more wrapper around the UNet call.

    Called once per step by :class:`~depth2img.sampling.CFGDenoiser` (on ``[uncond, cond]`` when guidance
    is on), so the call count is the step index for the guidance start/end ``keep`` list; build one per
    generation. Control modes (A1111's):

    - ``balanced``: residuals times ``weight`` on both halves (diffusers' default path);
    - ``controlnet`` ("ControlNet is more important"): diffusers' ``guess_mode`` — the ControlNet sees
      the conditional half only, the unconditional half gets no residuals, and the residuals are scaled
      by ``logspace(-1, 0, n)`` (sd-webui-controlnet's soft injection + CFG injection, whose ramp
      0.825**(12 - i) is within 0.5% of it);
    - ``prompt`` ("My prompt is more important"): no diffusers equivalent; implemented as
      sd-webui-controlnet does (soft injection without CFG injection): both halves, residual i of the 13
      (12 down + middle; SDXL: the first 10 of the 13 factors) scaled by ``weight * 0.825 ** (12 - i)``.
    """

    def __init__(self, unet: Any, controlnet: Any, control: torch.Tensor, *, weight: float, keep: list[float],
                 mode: str) -> None:
        self.unet, self.controlnet, self.weight, self.keep, self.mode = unet, controlnet, weight, keep, mode
        self.control = control.to(controlnet.device, controlnet.dtype)  # (B, 3, H, W) in [0, 1]
        self.step = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        step, self.step = self.step, self.step + 1
        if "text_embeds" in cond.added and "time_ids" not in cond.added:  # SDXL: the size conditioning
            height, width = self.control.shape[-2:]
            time_ids = sdxl_time_ids(height, width, x.shape[0], x.device, cond.added["text_embeds"].dtype)
            cond = Conditioning(cond.text, {**cond.added, "time_ids": time_ids})
        scale = self.weight * self.keep[min(step, len(self.keep) - 1)]
        if scale == 0:  # zero residuals add exactly nothing: skip the ControlNet
            return unet_call(self.unet, x, t, cond)
        batch = self.control.shape[0]
        guess = self.mode == "controlnet"
        cfg = x.shape[0] == 2 * batch  # [uncond, cond]
        if guess and cfg:  # the ControlNet sees the conditional half only
            cn_x = x.chunk(2)[1]
            cn_cond = Conditioning(cond.text.chunk(2)[1], {k: v.chunk(2)[1] for k, v in cond.added.items()})
            image = self.control
        else:
            cn_x, cn_cond = x, cond
            image = self.control.repeat(x.shape[0] // batch, 1, 1, 1)
        kwargs: dict[str, Any] = {"added_cond_kwargs": cn_cond.added} if cn_cond.added else {}
        down, mid = self.controlnet(
            cn_x, t, encoder_hidden_states=cn_cond.text, controlnet_cond=image, conditioning_scale=scale,
            guess_mode=guess, return_dict=False, **kwargs,
        )
        if guess and cfg:  # no residuals for the unconditional half (diffusers: zeros concatenated)
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        if self.mode == "prompt":
            factors = [SOFT_INJECTION_BASE ** float(12 - i) for i in range(13)][: len(down) + 1]
            down = [d * f for d, f in zip(down, factors)]
            mid = mid * factors[-1]
        return unet_call(self.unet, x, t, cond, residuals=(list(down), mid))
