"""``low_memory``: a load option (not per request) for big images and small GPUs.

- VAE tiling and slicing: diffusers' own ``AutoencoderKL.enable_tiling`` / ``enable_slicing``. Tiles of
  the VAE's ``sample_size`` overlap by a quarter and are blended linearly, so a 1024-2048 px decode needs
  the memory of one tile instead of the whole image; it is approximate at the seams (diffusers'
  memory docs; tests/test_lowmem.py states the tolerance). Slicing decodes a batch one image at a time.
- On CUDA the text encoder and the depth estimator, needed once per request before denoising, live on
  the CPU and visit the GPU only while they run (accelerate's ``cpu_offload`` does the same per forward
  call with hooks; moving the whole module once per use is simpler and as fast for one call). With the
  exact-mode caches a repeated prompt or photo does not move them at all.
- On CPU and MPS they stay where they are: the weights are in the same memory anyway, and freeing them
  would mean reloading from disk on every request. This is said here rather than pretended.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def offloads(device: torch.device) -> bool:
    return device.type == "cuda"


def enable_low_memory(pipe: Any) -> None:
    """Turn on VAE tiling/slicing and, on CUDA, park the text encoder and depth estimator on the CPU."""
    pipe.vae.enable_tiling()
    pipe.vae.enable_slicing()
    if offloads(pipe.device):
        for module in (pipe.text_encoder, pipe.depth_estimator):
            if module is not None:
                torch.nn.Module.to(module, device="cpu")


@contextmanager
def on_device(pipe: Any, module: Any, device: torch.device) -> Iterator[None]:
    """``module`` on ``device`` for the block; back on the CPU after it when ``pipe`` offloads."""
    if not getattr(pipe, "low_memory", False) or module is None or not offloads(device):
        yield
        return
    torch.nn.Module.to(module, device=device)
    try:
        yield
    finally:
        torch.nn.Module.to(module, device="cpu")
        torch.cuda.empty_cache()
