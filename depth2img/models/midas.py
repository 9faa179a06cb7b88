"""The SD2-depth depth model as the original runs it: MiDaS DPT-Hybrid and its input transform.

* :func:`dpt_hybrid_config` / :class:`MidasDPTForDepthEstimation`: transformers' ``DPTForDepthEstimation``
  (same modules, same state-dict keys, so a saved folder loads in diffusers) with the forward of the
  original ``DPTDepthModel``: any input whose sides are multiples of 32, position embeddings resized
  bilinearly to (h/16, w/16), ViT taps at blocks 8 and 11 reshaped to (h/16, w/16). transformers' own
  hybrid forward only accepts 384x384 (it reshapes tokens to a square), which is why the diffusers folder
  pairs it with a 384x384 processor. ``layer_norm_eps`` is timm's 1e-6 (the MiDaS weights were trained
  with it; transformers' default is 1e-12).
* :class:`MidasTransform`: ``load_midas_transform("dpt_hybrid")`` of the original (original_and_a1111.md
  §3.1) with the transformers image-processor call signature.

Plain modules: no file I/O here; weights come from ``single_file.py`` via ``convert_midas.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, DPTConfig, DPTForDepthEstimation
from transformers.modeling_outputs import DepthEstimatorOutput

MIDAS_SIZE = 384  # net_w = net_h = 384 for dpt_hybrid
MIDAS_MULTIPLE = 32


def dpt_hybrid_config() -> DPTConfig:
    """DPT-Hybrid (ViT-B/16 on a 3-stage BiT ResNet-50) exactly as ``Intel/dpt-hybrid-midas``, except
    ``layer_norm_eps=1e-6`` (timm ViT) for fidelity to the original MiDaS forward."""
    cfg = DPTConfig(
        is_hybrid=True,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=MIDAS_SIZE,
        patch_size=16,
        layer_norm_eps=1e-6,
        backbone_out_indices=[2, 5, 8, 11],
        backbone_featmap_shape=[1, 1024, 24, 24],
        neck_hidden_sizes=[256, 512, 768, 768],
        reassemble_factors=[1, 1, 1, 0.5],
        readout_type="project",
        fusion_hidden_size=256,
        use_batch_norm_in_fusion_residual=False,
        neck_ignore_stages=[0, 1],
        backbone_config=dict(
            depths=[3, 4, 9],
            hidden_sizes=[256, 512, 1024, 2048],
            layer_type="bottleneck",
            global_padding="same",
            embedding_dynamic_padding=True,
            out_features=["stage1", "stage2", "stage3"],
        ),
    )
    cfg.architectures = ["DPTForDepthEstimation"]
    return cfg


class MidasDPTForDepthEstimation(DPTForDepthEstimation):
    """``DPTForDepthEstimation`` (hybrid) whose forward follows MiDaS ``DPTDepthModel.forward``.

    ``pixel_values`` (N, 3, H, W) with H, W multiples of 32 -> ``predicted_depth`` (N, H, W), non-negative
    relative inverse depth. Module names and weights are exactly transformers'.
    """

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> DepthEstimatorOutput:  # type: ignore[override]
        if not self.config.is_hybrid:
            return super().forward(pixel_values, **kwargs)
        n, _, h, w = pixel_values.shape
        p = self.config.patch_size
        if h % MIDAS_MULTIPLE or w % MIDAS_MULTIPLE:
            raise ValueError(f"DPT-Hybrid input must have sides that are multiples of 32, got {h}x{w}")
        emb = self.dpt.embeddings(pixel_values, interpolate_pos_encoding=True)
        x = emb.last_hidden_states  # (N, 1 + h/16*w/16, 768)
        feats = list(emb.intermediate_activations)  # ResNet stages 1, 2: (N, 256, h/4, w/4), (N, 512, h/8, w/8)
        taps = set(self.config.backbone_out_indices[2:])  # ViT blocks 8 and 11 (0-based), before the final norm
        for i, layer in enumerate(self.dpt.encoder.layer):
            x = layer(x)
            if i in taps:
                feats.append(x)
        hidden = self.neck(feats, h // p, w // p)
        depth = self.head(hidden)  # (N, h, w)
        return DepthEstimatorOutput(predicted_depth=depth)


def build_depth_estimator(device: str | torch.device = "meta", dtype: torch.dtype = torch.float32) -> MidasDPTForDepthEstimation:
    """An unloaded :class:`MidasDPTForDepthEstimation` (default on the meta device: no memory, no init)."""
    with torch.device(device):
        model = MidasDPTForDepthEstimation(dpt_hybrid_config())
    return model.to(dtype=dtype).eval()


# --------------------------------------------------------------------------------------------------
# input transform
# --------------------------------------------------------------------------------------------------


def midas_output_size(height: int, width: int, size: int = MIDAS_SIZE, multiple: int = MIDAS_MULTIPLE) -> tuple[int, int]:
    """MiDaS ``Resize(keep_aspect_ratio=True, resize_method="minimal", ensure_multiple_of=32)``.get_size.

    The scale closer to 1 wins (ties go to the height scale), each side is rounded to a multiple of 32 with
    numpy's round-half-to-even. Deviation: a side that would round to 0 (aspect ratio beyond ~24:1, where
    the original crashes in cv2) is kept at 32.
    """
    scale_h, scale_w = size / height, size / width
    if abs(1 - scale_w) < abs(1 - scale_h):
        scale_h = scale_w
    else:
        scale_w = scale_h
    new_h = int(np.round(scale_h * height / multiple) * multiple)
    new_w = int(np.round(scale_w * width / multiple) * multiple)
    return max(new_h, multiple), max(new_w, multiple)


class MidasTransform:
    """Original SD2-depth MiDaS transform with the image-processor call signature.

    ``transform(images=[PIL...] | PIL | HWC array, return_tensors="pt").pixel_values`` -> (N, 3, h, w)
    float32 in about [-1, 1]:

    1. RGB in [0, 1] as float32 HWC (AddMiDaS: ``(x + 1) / 2`` of the [-1, 1] image tensor).
    2. Resize to :func:`midas_output_size`, bicubic with a = -0.75, no antialiasing, no clipping: the
       original uses ``cv2.resize(INTER_CUBIC)`` on the float image; here ``F.interpolate(mode="bicubic",
       align_corners=False)`` in float32, the same kernel, half-pixel centres and clamped borders. Measured
       against opencv-python-headless 5.0.0 on random and photo inputs (512x512, 768x512, 400x300, 120x80,
       700x1024, astronaut, chelsea): max |difference| 1.3e-4 on the [-1, 1] output (mean 1e-5), i.e. below
       0.02 of an 8-bit level (tests/test_midas.py re-checks this when cv2 happens to be importable).
    3. ``(x - 0.5) / 0.5`` per channel, CHW float32.

    Nothing more: the pipeline resizes the prediction to the latent size and normalises it itself.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, size: int = MIDAS_SIZE, multiple: int = MIDAS_MULTIPLE) -> None:
        self.size, self.multiple = size, multiple
        self.image_mean = [0.5, 0.5, 0.5]
        self.image_std = [0.5, 0.5, 0.5]

    @staticmethod
    def _to_float_hwc(image: Any) -> torch.Tensor:
        if hasattr(image, "convert"):  # PIL
            arr = np.asarray(image.convert("RGB"))
        else:
            arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
        if arr.dtype == np.uint8:
            return torch.from_numpy(arr.astype(np.float32) / 255.0)
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))  # float input: already [0, 1]

    def __call__(self, images: Any = None, return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        if return_tensors not in (None, "pt"):
            raise ValueError("MidasTransform only returns torch tensors")
        if not isinstance(images, (list, tuple)):
            images = [images]
        out = []
        for image in images:
            x = self._to_float_hwc(image).permute(2, 0, 1)[None]  # (1, 3, H, W) in [0, 1]
            h, w = midas_output_size(x.shape[2], x.shape[3], self.size, self.multiple)
            if (h, w) != tuple(x.shape[2:]):
                x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
            out.append(((x - 0.5) / 0.5)[0])
        sizes = {tuple(t.shape) for t in out}
        if len(sizes) != 1:
            raise ValueError(f"all images of a batch must have the same size, got {sorted(sizes)}")
        return BatchFeature(data={"pixel_values": torch.stack(out).contiguous()})
