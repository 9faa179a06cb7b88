"""Test helpers: the real SD2-depth checkpoint layout (shared/data/sd2-depth-ckpt-keys.json) filled with
random, sensibly scaled values (weights ~ N(0, 1/fan_in), norms ~ 1, biases small), so a forward pass stays
finite and meaningful (outputs neither explode nor collapse)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

KEYS_JSON = Path("/work/shared/data/sd2-depth-ckpt-keys.json")
UNET_KEYS_JSON = Path("/work/shared/data/sd2-depth-diffusers-unet-keys.json")


def layout(path: Path = KEYS_JSON) -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in json.loads(path.read_text())["keys"].items()}


def _is_norm(key: str) -> bool:
    last = key.rsplit(".", 2)
    name = ".".join(last[-2:])
    return any(
        s in key
        for s in ("norm", "ln_", "ln_final", "in_layers.0", "out_layers.0", "out.0.", "layernorm", "group_norm")
    ) or name.startswith(("norm", "bn"))


def random_tensor(key: str, shape: list[int], gen: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One sensibly scaled tensor for ``key``."""
    shape = list(shape)
    n = math.prod(shape) if shape else 1
    leaf = key.rsplit(".", 1)[-1]
    if not shape:  # 0-d counters
        return torch.tensor(0.9999 if "decay" in key else 1000.0, dtype=dtype)
    if key.endswith("logit_scale"):
        return torch.full(shape, math.log(1 / 0.07), dtype=dtype)
    if leaf == "bias":
        t = torch.randn(n, generator=gen).reshape(shape) * 0.02
        return t.to(dtype)
    if leaf == "weight" and len(shape) == 1 and _is_norm(key):
        return (1 + 0.05 * torch.randn(shape, generator=gen)).to(dtype)
    if key.endswith(("positional_embedding", "pos_embed", "cls_token", "token_embedding.weight")):
        return (torch.randn(shape, generator=gen) * 0.02).to(dtype)
    if len(shape) == 1:  # schedule buffers and the like: positive, smooth
        return torch.linspace(0.001, 0.999, shape[0]).to(dtype)
    fan_in = n // shape[0]
    return (torch.randn(shape, generator=gen) / math.sqrt(fan_in)).to(dtype)


def random_state_dict(shapes: dict[str, list[int]], seed: int = 0, dtype: torch.dtype = torch.float32,
                      prefix: str = "") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: random_tensor(k, s, gen, dtype) for k, s in shapes.items() if k.startswith(prefix)}
