"""The opt-in approximate fast mode: separately switchable knobs that trade exactness for speed.

Each knob is a request field (request.py, group "speed"), off by default, and each is a wrapper around
the model call (k-diffusion's style), so :func:`~depth2img.sampling.denoise` does not change:

- ``uncond_sigma`` (:class:`SkipUncondDenoiser`): AUTOMATIC1111's "Negative Guidance minimum sigma"
  (``s_min_uncond``): below that sigma the unconditional half of classifier-free guidance is skipped on
  every other step (A1111's ``self.step % 2`` alternation), halving those steps' UNet work.
- ``deepcache_interval`` (:class:`DeepCacheUNet`): DeepCache (Ma, Fang, Wang 2023, arXiv 2312.00858):
  the deep features change slowly between steps, so every N-th call runs the whole UNet and the calls in
  between run only the shallowest down block and the last up block, reusing the cached deeper features.
- ``low_precision`` (:class:`Autocast`): the UNet under ``torch.autocast`` in 16 bits: bfloat16 on a CPU
  (worth it only with native AVX512-BF16/AMX units, detected in :func:`native_low_precision`), bfloat16 on
  CUDA where supported else float16, float16 on MPS.

``fast=True`` turns on the bundle :data:`FAST_BUNDLE` for the knobs left at their off value, and 16-bit
compute only where the hardware has it natively (:func:`resolve_fast`, the one place this is decided).
Token merging (tomesd) is not included: see docs/architecture.md.

Gap filled: diffusers has DeepCache only as a third-party package (``DeepCache``, which pins its own
pipelines) and no NGMS; A1111 has NGMS inside its sampler; neither wraps an arbitrary denoiser call.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import torch

from .request import DEFAULTS, GenerationRequest

# What fast=True sets for the knobs the user left off. uncond_sigma 1.0: with SD's schedule sigma falls
# below 1 for roughly the last third of the steps (A1111 users report values of ~1-2 as near-invisible);
# DeepCache's paper uses N = 3..5 for 2.3-3.2x on SD2.1 with a small CLIP-score drop.
FAST_BUNDLE: dict[str, Any] = {"uncond_sigma": 1.0, "deepcache_interval": 3}
KNOBS: tuple[str, ...] = ("uncond_sigma", "deepcache_interval", "low_precision")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_low_precision(device: torch.device) -> bool:
    """Whether 16-bit compute is native here: a CPU with AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo,
    never assumed; elsewhere bf16 is emulated and slower), any CUDA device, MPS."""
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return device.type in ("cuda", "mps")


def low_precision_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CPU, bfloat16 on CUDA when supported (else float16), float16 on MPS."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def resolve_fast(request: GenerationRequest, device: torch.device) -> GenerationRequest:
    """``fast=True``: the bundle for every knob still at its off value (explicit knobs win)."""
    if not request.fast:
        return request
    changes = {k: v for k, v in FAST_BUNDLE.items() if getattr(request, k) == DEFAULTS[k]}
    if not request.low_precision and native_low_precision(device):
        changes["low_precision"] = True
    return request.replace(**changes) if changes else request


def is_exact(request: GenerationRequest) -> bool:
    return all(getattr(request, k) == DEFAULTS[k] for k in KNOBS)


def sigma_of(scheduler: Any) -> Any:
    """t → sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t), the k-diffusion sigma of a discrete timestep."""
    alphas = scheduler.alphas_cumprod.float().cpu()

    def sigma(t: torch.Tensor) -> float:
        a = alphas[int(round(float(t)))]
        return float(((1 - a) / a) ** 0.5)

    return sigma


class SkipUncondDenoiser:
    """CFG that skips the unconditional pass on every other call once sigma < ``min_sigma`` (A1111's NGMS).

    Same call signature as :class:`~depth2img.sampling.CFGDenoiser` (``eps = model(x, t)``), which it wraps.
    """

    def __init__(self, cfg: Any, sigma: Any, min_sigma: float) -> None:
        self.cfg, self.sigma, self.min_sigma, self.step = cfg, sigma, min_sigma, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        skip = self.step % 2 == 1 and self.cfg.both is not None and self.sigma(t) < self.min_sigma
        self.step += 1
        if skip:
            return self.cfg.model(x, t, self.cfg.cond)  # eps_cond only: guidance off for this step
        return self.cfg(x, t)


class Autocast:
    """The model call under ``torch.autocast(device.type, dtype)``; eps comes back in the latents' dtype.

    Run the loop inside :func:`precision_region` as well: torch caches the 16-bit copies of the weights only
    within one autocast region (for parameters that require grad, as loaded modules' do) and drops them when
    the outermost region exits, so a region per call re-casts every weight at every step (the full SD2 UNet:
    3.5 GB read, 1.7 GB written per call). Measured on an AMX CPU, full-size UNet, latent 8, 1 thread: fp32
    1.50 s per CFG call, autocast per call 1.62 s, inside one region 0.74 s after the first call.
    """

    def __init__(self, model: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.device, self.dtype = model, device, dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype):
            eps = self.model(x, t)
        return eps.to(x.dtype)


class DeepCacheUNet:
    """DeepCache around a diffusers ``UNet2DConditionModel``: call it as the UNet.

    Every ``interval``-th call (the first included) runs the whole UNet; forward hooks record the outputs of
    the deep blocks (down blocks 1.., the mid block, up blocks ..-2). The calls in between give those blocks
    their recorded outputs instead of running them (their ``forward`` is replaced for that call only), so
    only ``conv_in``, the first down block, the last up block and the output layers compute: the shallow
    skip branch of the paper's Fig. 3 with cache branch 0. Features are kept per input shape (the CFG
    batch 2B, or B on the steps NGMS skips); a shape not seen yet runs fully. ``interval`` 1 is the plain UNet.
    """

    def __init__(self, unet: Any, interval: int) -> None:
        self.unet, self.interval, self.calls = unet, interval, 0
        self.deep = [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]
        self.caches: dict[tuple[int, ...], dict[int, Any]] = {}  # per input shape: CFG batch 2B, or B when NGMS skips

    def __getattr__(self, name: str) -> Any:  # config, dtype, device... as the UNet's
        return getattr(self.unet, name)

    def __call__(self, sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        shape = tuple(sample.shape)
        full = self.calls % self.interval == 0 or shape not in self.caches
        self.calls += 1
        if full:
            return self._record(sample, timestep, *args, **kwargs)
        originals = {i: block.__dict__.get("forward") for i, block in enumerate(self.deep)}
        try:
            for i, block in enumerate(self.deep):
                block.forward = functools.partial(_cached, self.caches[shape][i])
            return self.unet(sample, timestep, *args, **kwargs)
        finally:
            for i, block in enumerate(self.deep):
                if originals[i] is None:
                    del block.forward
                else:
                    block.forward = originals[i]

    def _record(self, sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        cache: dict[int, Any] = {}

        def keep(i: int) -> Any:
            def hook(module: Any, inputs: Any, output: Any) -> None:
                cache[i] = output
            return hook

        handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(self.deep)]
        try:
            out = self.unet(sample, timestep, *args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        self.caches[tuple(sample.shape)] = cache
        return out


def precision_region(model: Any) -> contextlib.AbstractContextManager[Any]:
    """One autocast region spanning the whole denoising loop when ``model`` is :class:`Autocast` (see there),
    else nothing. It costs the 16-bit weight copies' memory for the loop's duration (1.7 GB for SD2's UNet)."""
    if isinstance(model, Autocast):
        return torch.autocast(model.device.type, dtype=model.dtype)
    return contextlib.nullcontext()


def _cached(output: Any, *args: Any, **kwargs: Any) -> Any:
    return output
