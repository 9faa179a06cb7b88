"""The kind of a model, decided in one place from its UNet's input channels.

5 channels = latents + depth (SD2-depth); 4 = plain img2img; 9 (latents + mask + masked image) is an
inpainting model, which depth2img refuses (the loaders say so); anything else is unknown.
"""

from __future__ import annotations

from typing import Literal

ModelKind = Literal["depth", "img2img"]
INPAINT_UNET_CHANNELS = 9
_KIND_BY_CHANNELS: dict[int, ModelKind] = {5: "depth", 4: "img2img"}


def kind_from_unet_channels(n: int | None) -> ModelKind | None:
    """``"depth"`` for 5 input channels, ``"img2img"`` for 4, ``None`` otherwise (inpainting, unknown)."""
    return _KIND_BY_CHANNELS.get(n) if n is not None else None
