"""Optical flow without downloaded weights: OpenCV's DIS (Kroeger et al. 2016), occlusion, warping.

Convention: ``flow = dis_flow(a, b)`` is the (H, W, 2) float32 displacement (dx, dy) such that
``a(x) ≈ b(x + flow(x))``; :func:`warp` samples ``b`` there, so ``warp(b, flow)`` looks like ``a``.
DIS "medium" is the default (reference video.md §2.1: 0.04-0.16 px end-point error on synthetic motion
at 512 px, ~45 ms a pair on one thread); "fast" is ~4x quicker and about half as accurate.
"""

from __future__ import annotations

import numpy as np

PRESETS = ("ultrafast", "fast", "medium")


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * 255 if array.max() <= 1.0 else array), 0, 255).astype(np.uint8)
    return cv2.cvtColor(array, cv2.COLOR_RGB2GRAY) if array.ndim == 3 else array


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow from RGB/gray frame ``a`` to ``b`` (see the module docstring for the convention)."""
    import cv2

    codes = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
             "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    dis = cv2.DISOpticalFlow_create(codes[preset])
    return dis.calc(_gray(a), _gray(b), None).astype(np.float32)


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W[, C]) sampled at ``x + flow(x)`` (bilinear); also the (H, W) bool mask of pixels
    whose source lies inside the frame. Works for any float channel count (frames, latents, flows)."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
    src = np.ascontiguousarray(image, dtype=np.float32)
    channels = 1 if src.ndim == 2 else src.shape[2]
    if channels <= 4:
        out = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        out = np.stack([cv2.remap(np.ascontiguousarray(src[..., c]), map_x, map_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE) for c in range(channels)], axis=-1)
    if src.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return out, inside


def occlusion(forward: np.ndarray, backward: np.ndarray, *, motion_boundaries: bool = False) -> np.ndarray:
    """(H, W) bool: True where the forward flow cannot be trusted (Ruder et al. 2016, as Lai et al.'s
    evaluation code): the forward-backward check ``|wf + wb~|² > 0.01 (|wf|² + |wb~|²) + 0.5`` with
    ``wb~`` the backward flow at ``x + wf(x)``, or the target lies outside the frame; optionally motion
    boundaries ``|∇u|² + |∇v|² > 0.01 |wf|² + 0.002``."""
    back, inside = warp(backward, forward)
    total = forward + back
    occluded = (total**2).sum(-1) > 0.01 * ((forward**2).sum(-1) + (back**2).sum(-1)) + 0.5
    occluded |= ~inside
    if motion_boundaries:
        gu_y, gu_x = np.gradient(forward[..., 0])
        gv_y, gv_x = np.gradient(forward[..., 1])
        occluded |= gu_x**2 + gu_y**2 + gv_x**2 + gv_y**2 > 0.01 * (forward**2).sum(-1) + 0.002
    return occluded


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field at another resolution ``size`` = (h, w): area-averaged, displacements rescaled."""
    import cv2

    h, w = flow.shape[:2]
    out = cv2.resize(flow, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    out[..., 0] *= size[1] / w
    out[..., 1] *= size[0] / h
    return out


def resize_mask(valid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) float mask: a latent pixel is valid only when (nearly) all pixels under it are."""
    import cv2

    area = cv2.resize(valid.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return (area >= 0.999).astype(np.float32)
