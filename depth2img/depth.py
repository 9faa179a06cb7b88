"""Depth: estimate it, normalise it for the UNet, read the user's own map, export it.

Convention everywhere (MiDaS, SD2-depth training, diffusers): larger = nearer ("white = near"); the
estimators output relative inverse depth (disparity-like).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InvalidImageError
from .request import PERCENTILES, DepthInput, GenerationRequest


@dataclass
class DepthMaps:
    """The depth of one generation.

    ``raw``: (h, w) float32 estimate at the estimator's resolution (or the user's map), near = large.
    ``normalized``: (1, 1, H/8, W/8) float32 in [-1, 1], exactly what the UNet's 5th channel received.
    """

    raw: np.ndarray
    normalized: torch.Tensor
    source: str  # "estimated" or "user"

    def to_image(
        self, which: Literal["raw", "normalized"] = "raw", *, bits: int = 8, colormap: bool = False
    ) -> Image.Image:
        data = self.raw if which == "raw" else self.normalized[0, 0].cpu().numpy()
        return depth_to_image(data, bits=bits, colormap=colormap)


@torch.no_grad()
def estimate_depth(estimator: Any, feature_extractor: Any, image: Image.Image, resolution: int | None = None) -> torch.Tensor:
    """(1, h, w) float32 relative inverse depth of one RGB image, as diffusers' ``prepare_depth_map``.

    The processor sees the image at its own size (diffusers feeds the raw, un-cropped image). The
    input is cast to the estimator's own device and dtype: depth2img keeps the estimator in float32
    (DPT-Hybrid's BatchNorm), which avoids diffusers #8233 / A1111's "MPSFloatType vs MPSHalfType".
    No OpenCV anywhere, so no "src data type = 23" (float16) failure.
    ``resolution`` (a ControlNet's processor_res): the estimator runs at that short side instead
    (:func:`_estimate_at`); None (SD2-depth) is the path above, unchanged.
    """
    param = next(estimator.parameters())
    if resolution is not None:
        return _estimate_at(estimator, feature_extractor, image, resolution, param)
    pixel_values = feature_extractor(images=[image], return_tensors="pt").pixel_values
    pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)  # (1, 3, h_in, w_in)
    return estimator(pixel_values).predicted_depth.float().cpu()  # (1, h, w)


PROCESSOR_MULTIPLE = 64  # sd-webui-controlnet's resize_image_with_pad pads the preprocessor input to a multiple of 64


def processor_size(width: int, height: int, resolution: int) -> tuple[int, int, int, int]:
    """``(w, h, w_pad, h_pad)``: the image resized so its short side is ``resolution`` (aspect kept), and
    that size padded up to a multiple of 64, as sd-webui-controlnet's ``resize_image_with_pad`` does
    before a preprocessor such as depth_midas runs."""
    k = float(resolution) / float(min(width, height))
    w, h = int(round(width * k)), int(round(height * k))
    pad = lambda side: -(-side // PROCESSOR_MULTIPLE) * PROCESSOR_MULTIPLE  # noqa: E731
    return w, h, pad(w), pad(h)


@contextmanager
def _any_size(estimator: Any) -> Iterator[None]:
    """Let DPT-Hybrid (SD2-depth's estimator) take another input size than its config's image_size.

    Gap filled: transformers' ``DPTViTHybridEmbeddings`` refuses any other size unless called with
    ``interpolate_pos_encoding=True``, which ``DPTModel`` never passes, though it always resizes its
    position embeddings to the input's grid anyway. A forward pre-hook adds the flag for this call only
    (at the config's own size it changes nothing); other estimators are left as they are."""
    embeddings = getattr(getattr(estimator, "dpt", None), "embeddings", None)
    hook = None
    if embeddings is not None and "interpolate_pos_encoding" in inspect.signature(embeddings.forward).parameters:
        hook = embeddings.register_forward_pre_hook(
            lambda module, args, kwargs: (args, {**kwargs, "interpolate_pos_encoding": True}), with_kwargs=True)
    try:
        yield
    finally:
        if hook is not None:
            hook.remove()


def _estimate_at(estimator: Any, feature_extractor: Any, image: Image.Image, resolution: int, param: Any) -> torch.Tensor:
    """The estimate at ``resolution`` (short side), as sd-webui-controlnet's preprocessors run: resized
    (bicubic up, box/area down, as its cv2 INTER_CUBIC / INTER_AREA), edge-padded to a multiple of 64, the
    pad cropped off the prediction. The processor gets that exact size (its own resize a no-op)."""
    w, h, w_pad, h_pad = processor_size(image.width, image.height, resolution)
    if getattr(getattr(estimator, "config", None), "is_hybrid", False):
        # transformers' DPT-Hybrid (SD2-depth's estimator) folds its tokens into a square grid, so it takes
        # square inputs only: the image is squashed to resolution x resolution, as diffusers' DPT
        # preprocessing squashes it to 384 x 384 (keep_aspect_ratio False), and resized back below.
        w = h = resolution
        w_pad = h_pad = processor_size(resolution, resolution, resolution)[2]
    resample = Image.Resampling.BICUBIC if w > image.width else Image.Resampling.BOX
    pixels = np.asarray(image.convert("RGB").resize((w, h), resample))
    pixels = np.pad(pixels, ((0, h_pad - h), (0, w_pad - w), (0, 0)), mode="edge")  # (h_pad, w_pad, 3)
    pixel_values = feature_extractor(images=[Image.fromarray(pixels)], size={"height": h_pad, "width": w_pad},
                                     keep_aspect_ratio=False, return_tensors="pt").pixel_values
    pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)  # (1, 3, h_pad, w_pad)
    with _any_size(estimator):
        depth = estimator(pixel_values).predicted_depth.float().cpu()  # (1, h_out, w_out)
    h_out, w_out = depth.shape[-2:]
    return depth[:, : max(1, round(h_out * h / h_pad)), : max(1, round(w_out * w / w_pad))].contiguous()


def normalize_depth(
    depth: torch.Tensor, size: tuple[int, int], notes: list[str] | None = None, depth_range: tuple[float, float] | None = None
) -> torch.Tensor:
    """(N, h, w) depth → (N, 1, *size) in [-1, 1], as diffusers / the original inference scripts.

    Bicubic (align_corners=False, no antialias) to the latent size, then per-sample min-max to [-1, 1].
    Computed in float32 on the CPU: bicubic is not implemented on MPS (diffusers #8233) and this makes
    the map the same on every device.

    Deliberate deviation: the reference divides by (max - min) with no epsilon, so a flat map gives NaN
    and a black image; here a flat map becomes all zeros (mid-depth) instead. Non-flat maps are
    bit-identical to the reference. A flat map adds a line to ``notes`` (the Result's warnings).

    ``depth_range`` (lo, hi), given by a caller that sees more than one image (video: one range over the
    whole clip, or a running EMA), replaces the per-sample min and max of the *resized* map; values
    outside it are clamped to [-1, 1]. None (the default) is the reference's per-image min-max.
    """
    depth = depth.float().cpu().unsqueeze(1)  # (N, 1, h, w)
    # Flatness is judged before resizing: bicubic weights do not sum to exactly 1 in float32, so a
    # constant map can come out with a ~1e-7 ripple that min-max would blow up to [-1, 1] noise.
    flat = torch.amax(depth, dim=[1, 2, 3], keepdim=True) == torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    depth = F.interpolate(depth, size=size, mode="bicubic", align_corners=False)
    dmin = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    dmax = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    span = dmax - dmin
    flat = flat | (span == 0)
    if bool(flat.any()) and notes is not None:
        notes.append("the depth map is flat (constant): it carries no structure; using a mid-depth plane")
    if depth_range is not None:
        lo, hi = float(depth_range[0]), float(depth_range[1])
        if hi > lo:
            return (2.0 * (depth - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)
    return torch.where(flat, torch.zeros_like(depth), 2.0 * (depth - dmin) / torch.where(flat, 1.0, span) - 1.0)


def load_depth_map(src: DepthInput) -> np.ndarray:
    """The user's own depth map as (H, W) float32, near = large (white = near, MiDaS convention).

    Accepts 8- or 16-bit grayscale PNG/TIFF (precision kept), float TIFF, ``.npy``, arrays and tensors of
    shape (H, W), (1, H, W) or (H, W, 1). Values only need the right orientation: the map is min-max
    normalised later. Rejects NaN/Inf and colour images whose channels differ (not a depth map).
    """
    if isinstance(src, torch.Tensor):
        array = src.detach().float().cpu().numpy()
    elif isinstance(src, np.ndarray):
        array = src
    elif isinstance(src, (str, Path)) and Path(src).suffix.lower() == ".npy":
        from .images import refuse_url

        refuse_url(str(src), "depth map")
        array = _load_npy(Path(src))
    else:
        from .images import open_image, to_gray_float

        image = open_image(src, what="depth map")
        if image.mode in ("RGB", "RGBA"):
            rgb = np.asarray(image.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise InvalidImageError("depth map is a colour image; give a grayscale map (white = near)")
        array = to_gray_float(image)
    array = np.asarray(array)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise InvalidImageError(f"depth map must be 2-D (H, W), got shape {tuple(array.shape)}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise InvalidImageError(f"depth map must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidImageError("depth map contains NaN or infinite values")
    if min(array.shape) < 2:
        raise InvalidImageError(f"depth map is too small: {array.shape[1]}x{array.shape[0]}")
    return array


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)  # never unpickle a user file
    except FileNotFoundError:
        raise InvalidImageError(f"depth map '{path}' does not exist") from None
    except (ValueError, OSError, EOFError) as error:
        raise InvalidImageError(f"depth map '{path}' is not a readable .npy array ({error})") from None


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) depth → (H, W) = ``size`` (height, width), bicubic as the reference resizes depth."""
    tensor = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=size, mode="bicubic", align_corners=False)[0, 0].numpy()


def depth_to_image(depth: np.ndarray, *, bits: int = 8, colormap: bool = False) -> Image.Image:
    """A viewable image of a depth map: min-max to [0, 1], white = near; 8- or 16-bit gray, or colour."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    depth = np.asarray(depth, dtype=np.float64)
    span = float(depth.max() - depth.min())
    unit = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    if colormap:
        return Image.fromarray(turbo(unit))
    if bits == 16:
        return Image.fromarray(np.round(unit * 65535).astype(np.uint16))  # mode I;16
    return Image.fromarray(np.round(unit * 255).astype(np.uint8))


def turbo(unit: np.ndarray) -> np.ndarray:
    """Google's Turbo colormap (Mikhailov 2019) by its published polynomial fit; (H, W) [0,1] → (H, W, 3) uint8.

    Written by hand because matplotlib is not a dependency; near (1) is red, far (0) is blue.
    """
    x = np.clip(unit, 0.0, 1.0)[..., None]
    powers = np.concatenate([x**k for k in range(6)], axis=-1)  # (H, W, 6)
    coeffs = np.array(
        [
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ]
    )
    rgb = powers @ coeffs.T  # (H, W, 3)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def adjust_depth(depth: np.ndarray, *, invert: bool = False, clip: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Depth conventions and clipping, applied to the raw map (own or estimated) before normalisation.

    ``invert``: for maps where black = near (Blender Z pass, most depth cameras): ``max + min - d``,
    so the value range is kept. ``clip`` = (far, near) *percentiles* of the (inverted) map: values
    beyond them are clamped, and the later min-max normalisation stretches what is left over [-1, 1]
    (the depthmap-script's "clip and renormalise"). Percentiles rather than values because own maps
    come in any unit (metres, disparity, 8/16-bit). Both are depth2img additions; the reference has none.
    """
    out = np.asarray(depth, dtype=np.float32)
    if invert:
        out = out.max() + out.min() - out
    if tuple(clip) != PERCENTILES:
        far, near = np.percentile(out, [clip[0], clip[1]])
        out = np.clip(out, far, near).astype(np.float32)
    return out


def fit_depth(depth: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """An own (H, W) map fitted to the aspect of ``size`` (W, H) by sd-webui-controlnet's resize modes
    (scripts/controlnet.py, ``detectmap_proc``), before the one bicubic resize to the output size:

    - ``just_resize``: unchanged (stretched later);
    - ``crop_and_resize`` (INNER_FIT): scale k = max(H/h, W/w), centre crop: here the centre of the map
      that the scaled crop would keep, so the map is resampled once, not twice;
    - ``resize_and_fill`` (OUTER_FIT): scale k = min(...), centred, the rest filled with the median of
      the map's border pixels (the extension's ``high_quality_border_color``).

    A map that already has the output's aspect is returned unchanged by every mode."""
    h0, w0 = depth.shape
    width, height = size
    if mode == "just_resize":
        return depth
    if mode == "crop_and_resize":
        k = max(height / h0, width / w0)
        ch, cw = min(h0, round(height / k)), min(w0, round(width / k))
        top, left = (h0 - ch) // 2, (w0 - cw) // 2
        return np.ascontiguousarray(depth[top:top + ch, left:left + cw])
    if mode != "resize_and_fill":
        raise ValueError(f"unknown resize mode {mode!r}")
    k = min(height / h0, width / w0)
    ch, cw = max(h0, round(height / k)), max(w0, round(width / k))
    if (ch, cw) == (h0, w0):
        return depth
    border = np.concatenate([depth[0], depth[-1], depth[:, 0], depth[:, -1]])
    out = np.full((ch, cw), np.median(border), dtype=np.float32)
    top, left = (ch - h0) // 2, (cw - w0) // 2
    out[top:top + h0, left:left + w0] = depth
    return out


def crop_depth(depth: np.ndarray, box: tuple[int, int, int, int], image_size: tuple[int, int]) -> np.ndarray:
    """The part of a (H, W) depth map under ``box`` (x1, y1, x2, y2) given in an image of ``image_size``
    (W, H); the map may have another resolution than the image, so the box is scaled to it."""
    sx, sy = depth.shape[1] / image_size[0], depth.shape[0] / image_size[1]
    x1, y1 = int(box[0] * sx), int(box[1] * sy)
    x2, y2 = max(x1 + 2, round(box[2] * sx)), max(y1 + 2, round(box[3] * sy))
    return np.ascontiguousarray(depth[y1:y2, x1:x2])


def depth_control_params(request: GenerationRequest) -> dict[str, object]:
    """Infotext entries for the depth controls that differ from their defaults (depth2img's own keys)."""
    clip = tuple(request.depth_clip)
    return {
        "Depth invert": True if request.invert_depth else None,
        "Depth clip": f"{clip[0]:g}-{clip[1]:g}" if clip != PERCENTILES else None,
        "Depth strength": request.depth_strength if request.depth_strength != 1.0 else None,
        "Depth end": request.depth_end if request.depth_end != 1.0 else None,
    }


def depth_sheet(image: Image.Image, depth: np.ndarray) -> Image.Image:
    """Photo | depth (8-bit gray, white = near) | Turbo preview, side by side, each at the photo's size.

    ``depth`` is (H, W) at any resolution; it is resized bicubically (:func:`resize_depth`) to the photo.
    """
    raw = resize_depth(depth, (image.height, image.width)) if depth.shape != (image.height, image.width) else depth
    panels = [image.convert("RGB"), depth_to_image(raw).convert("RGB"), depth_to_image(raw, colormap=True)]
    sheet = Image.new("RGB", (image.width * 3, image.height))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * image.width, 0))
    return sheet
