"""Independent references for tests: diffusers' own pipeline and schedulers, and hooks on the UNet.

Nothing here imports depth2img internals: the sampler names are mapped to diffusers classes and options
written out literally, and the diffusers pipeline is assembled from a loaded pipeline's public
component attributes (the same objects, so the weights are identical).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionDepth2ImgPipeline,
    UniPCMultistepScheduler,
)

REFERENCE_SCHEDULERS = {
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),  # PLMS
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": (UniPCMultistepScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
}


def reference_scheduler(name: str, base_config):
    cls, options = REFERENCE_SCHEDULERS[name]
    return cls.from_config(base_config, **options)


def diffusers_depth_pipe(pipe) -> StableDiffusionDepth2ImgPipeline:
    reference = StableDiffusionDepth2ImgPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        depth_estimator=pipe.depth_estimator,
        feature_extractor=pipe.feature_extractor,
    )
    reference.set_progress_bar_config(disable=True)
    return reference


def run_diffusers(reference, scheduler: str, *, seed: int, prompt: str, image, steps: int, **kwargs) -> np.ndarray:
    """(1, H, W, 3) uint8 from diffusers with ``generator=Generator(seed)`` (depth2img's one-image convention)."""
    reference.scheduler = reference_scheduler(scheduler, reference.scheduler.config)
    out = reference(prompt=prompt, image=image, num_inference_steps=steps,
                    generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kwargs).images
    return (out * 255).round().astype(np.uint8)


@contextmanager
def unet_inputs(pipe):
    """Record every UNet call's sample (B, C, h, w) and timestep through a forward pre-hook."""
    calls: list[tuple[torch.Tensor, float]] = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append((sample.detach().clone(), float(t)))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def minmax_bicubic(depth: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """diffusers' depth preprocessing: bicubic (align_corners=False) to ``size``, then min-max to [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    t = torch.nn.functional.interpolate(t, size=size, mode="bicubic", align_corners=False)
    return 2.0 * (t - t.min()) / (t.max() - t.min()) - 1.0


def estimator_depth(pipe, image: Image.Image) -> np.ndarray:
    """diffusers' depth2img estimate (feature extractor → DPT predicted_depth), bicubic to the image size."""
    with torch.no_grad():
        pixel_values = pipe.feature_extractor(images=[image], return_tensors="pt").pixel_values
        raw = pipe.depth_estimator(pixel_values.float()).predicted_depth  # (1, h, w)
    return torch.nn.functional.interpolate(raw[None].float(), size=(image.height, image.width), mode="bicubic",
                                           align_corners=False)[0, 0].numpy()


def corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])
