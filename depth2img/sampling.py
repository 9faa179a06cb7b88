"""Samplers and the conditioning that wraps the UNet.

The samplers are diffusers' schedulers, chosen by name from :data:`SCHEDULERS` and always built fresh
from the model's own scheduler config (so no state leaks between requests). The conditioning follows
k-diffusion's style: small wrappers around the UNet call (a backend's denoiser such as
:class:`~depth2img.backends.sd_depth.DepthConcat`, then :class:`CFGDenoiser`, :class:`LatentBlend`),
so the loop in :func:`denoise` stays five lines and knows nothing about depth or guidance.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from .backends.base import Conditioning, Denoiser


@dataclass(frozen=True)
class SchedulerSpec:
    """A named sampler: the diffusers class and its config overrides (A1111's labels: a1111.SAMPLERS)."""

    cls: type
    overrides: dict[str, Any] = field(default_factory=dict)
    uses_eta: bool = False  # whether ``eta`` changes anything (only DDIM's step takes it)


SCHEDULERS: dict[str, SchedulerSpec] = {
    # PNDM with skip_prk_steps is PLMS: the model's own default (hub scheduler_config.json).
    "pndm": SchedulerSpec(PNDMScheduler, {"skip_prk_steps": True}),
    "ddim": SchedulerSpec(DDIMScheduler, {}, uses_eta=True),
    "euler": SchedulerSpec(EulerDiscreteScheduler),
    "euler_a": SchedulerSpec(EulerAncestralDiscreteScheduler),
    "dpmpp_2m": SchedulerSpec(
        DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    "dpmpp_2m_karras": SchedulerSpec(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": SchedulerSpec(UniPCMultistepScheduler),
    "lms": SchedulerSpec(LMSDiscreteScheduler),
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)  # == request.SCHEDULER_NAMES (a test keeps them equal)


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler ``name`` built from the model's scheduler config (betas, prediction type...)."""
    spec = SCHEDULERS[name]
    return spec.cls.from_config(base_config, **spec.overrides)


def get_timesteps(scheduler: Any, steps: int, strength: float) -> tuple[torch.Tensor, int]:
    """img2img truncation of the schedule by strength, exactly as diffusers' ``get_timesteps``.

    Call after ``scheduler.set_timesteps(steps)``. Note PNDM's list has ``steps + 1`` entries (the
    second-highest timestep twice); truncation keeps diffusers' numerics, one-step offset included.
    """
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps, steps - t_start


def step_kwargs(scheduler: Any, generator: Any, eta: float) -> dict[str, Any]:
    """``eta`` and ``generator`` for schedulers whose ``step`` takes them (DDIM, Euler a), as diffusers."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def depth_end_timestep(timesteps: torch.Tensor, depth_end: float) -> float | None:
    """The smallest timestep that still gets the depth when it is fed for the first ``depth_end`` of the
    steps that run: ``ceil(depth_end · n)`` steps of ``n``. None when all steps get it (depth_end 1);
    +inf when none do (depth_end 0). Thresholding the timestep (not counting calls) keeps the wrapper
    stateless; PNDM's repeated timestep then counts once.
    """
    n = len(timesteps)
    k = math.ceil(depth_end * n - 1e-9)
    if k >= n:
        return None
    if k <= 0:
        return math.inf
    return float(timesteps[k - 1])


class CFGDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + s (eps_c - eps_u).

    One batched call on ``[uncond, cond]`` (diffusers' order), every part of the :class:`Conditioning`
    batched alike; guidance off when s <= 1. ``model`` is a backend's denoiser ``eps = model(x, t, cond)``.
    """

    def __init__(self, model: Denoiser, cond: Conditioning, uncond: Conditioning | None, scale: float):
        self.model, self.cond, self.scale = model, cond, scale
        self.both = Conditioning.cat([uncond, cond]) if uncond is not None and scale > 1.0 else None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.both is None:
            return self.model(x, t, self.cond)
        eps_uncond, eps_cond = self.model(torch.cat([x, x]), t, self.both).chunk(2)
        return eps_uncond + self.scale * (eps_cond - eps_uncond)


StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], Any]  # (i, total, t, latents)


def denoise(
    scheduler: Any,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    extra_step_kwargs: dict[str, Any],
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """The sampling loop: (B, 4, h, w) noisy latents in, denoised latents out."""
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(latents, t)
        eps = model(x_in, t)
        latents = scheduler.step(eps, t, latents, **extra_step_kwargs, return_dict=False)[0]
        if on_step is not None:
            on_step(i, len(timesteps), t, latents)
    return latents


class SchedulerWrapper:
    """Base of the scheduler wrappers: everything is delegated to the wrapped scheduler, and after each
    ``step`` a subclass may change the latents (:meth:`after_step`, given the index of the step that
    follows). k-diffusion's wrapper style on the scheduler side, so :func:`denoise` stays five lines."""

    def __init__(self, scheduler: Any, timesteps: torch.Tensor) -> None:
        self.scheduler, self.timesteps, self.index = scheduler, timesteps, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scheduler, name)

    def step(self, eps: torch.Tensor, t: torch.Tensor, latents: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        out = self.scheduler.step(eps, t, latents, **kwargs)
        latents = out[0] if isinstance(out, tuple) else out.prev_sample
        self.index += 1
        return (self.after_step(latents),)

    def after_step(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def renoised(self, clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``clean`` re-noised with ``noise`` to the timestep the next step starts from (clean after the last)."""
        if self.index < len(self.timesteps):
            return self.scheduler.add_noise(clean, noise, self.timesteps[self.index : self.index + 1])
        return clean


class LatentBlend(SchedulerWrapper):
    """Inpainting with a non-inpainting UNet: a scheduler wrapper that re-imposes the kept region.

    After every ``step``, ``latents = (1 - m)·init_t + m·latents`` where ``m`` is the latent mask
    (1 = repaint) and ``init_t`` the original latents re-noised with the *same* noise to the next
    timestep (the clean latents after the last step): diffusers' legacy 4-channel recipe in
    ``StableDiffusionInpaintPipeline`` (reference diffusers_depth2img.md §4); A1111 does the same with
    ``q_sample`` for its timestep samplers. Everything else is delegated to the wrapped scheduler, so
    :func:`denoise` does not know about masks.
    """

    def __init__(
        self, scheduler: Any, init: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, timesteps: torch.Tensor
    ) -> None:
        super().__init__(scheduler, timesteps)
        self.init, self.noise, self.mask = init, noise, mask  # (B, 4, h, w) x2, (1, 1, h, w)

    def after_step(self, latents: torch.Tensor) -> torch.Tensor:
        kept = self.renoised(self.init, self.noise)
        return (1 - self.mask) * kept + self.mask * latents
