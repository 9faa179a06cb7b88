"""Model families, each a :class:`~depth2img.backends.base.Backend` chosen once at load time.

``select_backend`` reads the loaded components' structure (the UNet's input channels against the VAE's
latent channels, whether a ControlNet is present...) and returns the one backend that drives them; the
pipeline never asks the model's shape again. New families (ControlNet-depth on SD 1.5/SDXL) add a
module here and a line in :func:`select_backend`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelLoadError
from .base import Backend, Conditioning, Denoiser, unet_call
from .controlnet import ControlNetBackend
from .sd_depth import SDDepthBackend
from .sd_img2img import SDImg2ImgBackend

__all__ = ["Backend", "Conditioning", "ControlNetBackend", "Denoiser", "SDDepthBackend", "SDImg2ImgBackend", "select_backend", "unet_call"]


def select_backend(components: Any) -> Backend:
    """The backend for checked components (see models.components.check_components)."""
    if getattr(components, "controlnet", None) is not None:
        sdxl = components.unet.config.get("addition_embed_type") == "text_time"
        return ControlNetBackend(components.controlnet, sdxl=sdxl, controlnet_name=components.controlnet_name)
    extra = components.unet.config.in_channels - components.vae.config.latent_channels
    if extra == 1:
        return SDDepthBackend()
    if extra == 0:
        return SDImg2ImgBackend()
    raise ModelLoadError(f"no backend drives a UNet with {components.unet.config.in_channels} input channels")
