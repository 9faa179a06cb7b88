"""Device and dtype: explicit, parsed once, never guessed from the environment."""

from __future__ import annotations

import torch

from .errors import InvalidRequestError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """None → float32 (diffusers' "highest precision by default"); strings like "fp16", "bf16"."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InvalidRequestError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidRequestError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


def parse_device(device: torch.device | str | None) -> torch.device:
    """None → cpu. A device that is not available here is refused up front, not at the first matmul."""
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise InvalidRequestError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError("device cuda was asked for, but torch sees no CUDA GPU here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidRequestError("device mps was asked for, but MPS is not available here")
    return device


def depth_device(device: torch.device) -> torch.device:
    """Where the depth estimator runs: the main device, except on MPS where DPT gives unusable output and
    lacks ops (isl-org/MiDaS #184, diffusers #1634), so it runs on the CPU (123M params, one pass)."""
    return torch.device("cpu") if device.type == "mps" else device
