"""The assembled parts of one model, as every loader (tiny, folder, hub, single file) returns them.

No I/O here: loaders build a :class:`Components`, :func:`check_components` proves the parts fit together
and names the part that does not (the classic wrong-yaml ``[320, 5, 3, 3]`` vs ``[320, 4, 3, 3]``
failure becomes a sentence instead of a traceback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelLoadError
from .kinds import INPAINT_UNET_CHANNELS, ModelKind, kind_from_unet_channels


@dataclass
class Components:
    """What a :class:`~depth2img.pipeline.Pipeline` is built from.

    ``feature_extractor`` is anything with the transformers image-processor call signature
    ``feature_extractor(images=[PIL...], return_tensors="pt").pixel_values``: a DPTImageProcessor for a
    diffusers folder (parity with diffusers), the original MiDaS transform for a single-file checkpoint.
    """

    unet: Any  # diffusers UNet2DConditionModel; in_channels 5 (depth) or 4 (img2img)
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler: Any  # diffusers scheduler: its config is the base every named sampler is built from
    depth_estimator: Any | None = None  # transformers depth model (DPT-Hybrid for SD2-depth)
    feature_extractor: Any | None = None
    name: str = "model"  # shown as "Model" in infotexts (checkpoint name without extension)
    source: str = ""  # path or hub id it came from
    # A1111's short hash (sha256 of the whole file, first 10 hex digits) for every single-file model;
    # None for folders, hub ids and built-ins: A1111 has no hash for them either
    model_hash: str | None = None
    depth_source: str = ""  # which depth estimator ("" = the model's own)
    controlnet: Any | None = None  # diffusers ControlNetModel (models/controlnet.py); selects the ControlNet backend
    controlnet_name: str = ""  # the ControlNet's infotext name (A1111: "file [hash]")
    text_encoder_2: Any | None = None  # SDXL: CLIPTextModelWithProjection (pooled embeddings)
    tokenizer_2: Any | None = None

    @property
    def kind(self) -> ModelKind:
        kind = kind_from_unet_channels(self.unet.config.in_channels)
        if kind is None:  # check_components refuses such a UNet; a Components is never built with one
            raise ModelLoadError(f"the UNet has {self.unet.config.in_channels} input channels; expected 5 (depth) or 4 (img2img)")
        return kind


def check_components(c: Components) -> Components:
    """Raise :class:`ModelLoadError` naming the first part that does not fit; return ``c`` otherwise."""
    unet_in = c.unet.config.in_channels
    latent = c.vae.config.latent_channels
    if unet_in == INPAINT_UNET_CHANNELS:
        raise ModelLoadError(
            "the UNet has 9 input channels: this is an inpainting model; depth2img needs a depth model "
            "(5 channels) or a plain img2img model (4 channels)"
        )
    if kind_from_unet_channels(unet_in) is None:
        raise ModelLoadError(f"the UNet has {unet_in} input channels; expected 5 (depth) or 4 (img2img)")
    if c.unet.config.out_channels != latent:
        raise ModelLoadError(
            f"the UNet predicts {c.unet.config.out_channels} channels but the VAE has {latent} latent channels"
        )
    if unet_in - latent not in (0, 1):
        raise ModelLoadError(f"the UNet has {unet_in} input channels but the VAE has {latent} latent channels")
    text_dim = c.text_encoder.config.hidden_size + (c.text_encoder_2.config.hidden_size if c.text_encoder_2 is not None else 0)
    cross_dim = c.unet.config.cross_attention_dim
    if text_dim != cross_dim:
        raise ModelLoadError(
            f"the text encoder gives {text_dim}-dim embeddings but the UNet cross-attends to {cross_dim} "
            "(text encoder from another model family?)"
        )
    if (c.depth_estimator is None) != (c.feature_extractor is None):
        raise ModelLoadError("a depth estimator needs its feature extractor (image processor), and vice versa")
    return c
