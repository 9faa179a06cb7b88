"""Temporal coherence for video: seed policy, clip-level depth ranges, latent fusion, colour coherence.

Per-frame depth2img flickers for two reasons of ours (issue 14): fresh noise every frame, and per-frame
min-max depth normalisation (a near object entering the view rescales the whole background's depth).

- ``--temporal none``: frame t uses seed N + t (independent frames, the baseline);
  ``fixed-noise``: every frame uses seed N, so a fresh generator draws the same VAE-posterior and
  initial noise for every frame (reference video.md §1.2); ``fusion``: fixed noise plus :class:`LatentFusion`.
- ``--depth-norm``: ``frame`` = the reference's per-image min-max; ``clip`` = one (min, max) over the
  whole clip (two passes: all depths first, then the frames); ``ema`` = a running range for streaming.
  They reach the pipeline through ``Plan.depth_range`` and are computed on the maps resized to the latent
  size, exactly as :func:`depth2img.depth.normalize_depth` sees them.
- :func:`match_colors`: LAB histogram matching to the first output frame (Deforum's colour coherence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..sampling import SchedulerWrapper

TEMPORAL_MODES = ("none", "fixed-noise", "fusion")
DEPTH_NORMS = ("frame", "clip", "ema")
EMA_ALPHA = 0.2


def frame_seed(base: int, index: int, temporal: str) -> int:
    """The seed of frame ``index``: N + index for ``none``, N for the fixed-noise modes."""
    return base + index if temporal == "none" else base


class LatentFusion(SchedulerWrapper):
    """A scheduler wrapper (like :class:`~depth2img.sampling.LatentBlend`) for Rerender-style latent fusion.

    ``target`` is the previous output frame warped to this frame by optical flow and encoded
    (:func:`fusion_target`), ``mask``
    (1, 1, h, w) is 1 where that warp is trustworthy (forward-backward check, inside the frame). After
    each step whose index is below ``end`` of the steps (the early and middle steps), the latents are
    pulled towards the target re-noised to the next timestep with this frame's own noise:
    ``x = x + strength · mask · (add_noise(target, noise, t_next) - x)``. Later steps run untouched, so
    details settle freely and occluded regions are generated normally.
    """

    def __init__(self, scheduler: Any, target: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                 timesteps: torch.Tensor, strength: float, end: float = 0.8) -> None:
        super().__init__(scheduler, timesteps)
        self.target, self.noise, self.mask, self.strength, self.end = target, noise, mask, strength, end

    def after_step(self, latents: torch.Tensor) -> torch.Tensor:
        n = len(self.timesteps)
        if self.index < n and self.index <= self.end * n:
            goal = self.renoised(self.target, self.noise)
            latents = latents + self.strength * self.mask * (goal - latents)
        return latents


def fusion_target(pipe: Any, previous: np.ndarray, flow_to_previous: np.ndarray, valid: np.ndarray,
                  latent_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous *output picture* (H, W, 3) uint8 warped to the current frame at full resolution, then
    VAE-encoded (the posterior's mean, no noise): the (1, 4, h, w) fusion target; and the (1, 1, h, w)
    mask of latent pixels whose pixels all have trustworthy flow and a source inside the frame.

    Rerender's pixel-aware fusion warps the previous frame's result in pixel space too. Warping the
    previous frame's *latents* instead (at 1/8 resolution, bilinear) smooths them by a fraction of a latent
    pixel per frame, and since each frame's latents were themselves pulled towards a warped target, the
    smoothing compounds frame after frame: the pictures grew steadily blurrier over a pan. Starting each
    frame's target from the decoded picture ends that chain (one pixel-space resampling, no latent one)."""
    from .flow import resize_mask, warp

    moved, inside = warp(previous.astype(np.float32) / 255.0, flow_to_previous)  # (H, W, 3) in [0, 1]
    pixels = torch.from_numpy(np.ascontiguousarray(moved.transpose(2, 0, 1)))[None] * 2 - 1  # (1, 3, H, W) [-1, 1]
    with torch.no_grad():
        posterior = pipe.vae.encode(pixels.to(pipe.device, pipe.vae.dtype)).latent_dist
        target = (posterior.mode() * pipe.vae.config.scaling_factor).to(pipe.dtype)
    mask = torch.from_numpy(resize_mask(valid & inside, latent_size))[None, None].to(pipe.device, pipe.dtype)
    return target, mask


def resized_depths(raws: Sequence[np.ndarray], size: tuple[int, int], request: Any) -> list[np.ndarray]:
    """Each raw map after the request's invert/clip, resized (bicubic) to the latent ``size`` (h, w):
    what normalize_depth min-maxes."""
    from ..depth import adjust_depth, resize_depth
    from ..request import PERCENTILES

    out = []
    for raw in raws:
        if request.invert_depth or tuple(request.depth_clip) != PERCENTILES:
            raw = adjust_depth(raw, invert=request.invert_depth, clip=request.depth_clip)
        out.append(resize_depth(raw, size))
    return out


def depth_ranges(resized: Sequence[np.ndarray], mode: str, alpha: float = EMA_ALPHA) -> list[tuple[float, float] | None]:
    """Per-frame (lo, hi) for ``Plan.depth_range``: None (per frame), one clip range, or a running EMA."""
    if mode == "frame":
        return [None] * len(resized)
    if mode == "clip":
        lo, hi = float(min(d.min() for d in resized)), float(max(d.max() for d in resized))
        return [(lo, hi)] * len(resized)
    ranges: list[tuple[float, float] | None] = []
    lo = hi = None
    for d in resized:
        dmin, dmax = float(d.min()), float(d.max())
        lo = dmin if lo is None else lo + alpha * (dmin - lo)
        hi = dmax if hi is None else hi + alpha * (dmax - hi)
        ranges.append((lo, hi))
    return ranges


def match_colors(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with each LAB channel's histogram matched to ``reference``'s (quantile
    mapping, as skimage's match_histograms), back to RGB uint8."""
    import cv2

    source = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    target = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB)
    out = np.stack([match_channel(source[..., c], target[..., c]) for c in range(3)], axis=-1)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)


def match_channel(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One uint8 channel's histogram matched to ``target``'s by quantile mapping, rounded to uint8."""
    s_values, s_index, s_counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    t_values, t_counts = np.unique(target.ravel(), return_counts=True)
    mapped = np.interp(np.cumsum(s_counts) / source.size, np.cumsum(t_counts) / target.size, t_values.astype(np.float64))
    return np.round(mapped[s_index]).astype(np.uint8).reshape(source.shape)
