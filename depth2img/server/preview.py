"""Low-resolution previews of the latents during sampling, without the VAE.

A1111's "Approx cheap" live preview (``modules/sd_vae_approx.py::cheap_approximation``): a fixed linear
map from the 4 SD latent channels to RGB, one pixel per latent pixel. Costs microseconds, so a
preview every k steps does not slow the job down.
"""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

# A1111's coefficients for SD 1.x/2.x latents (sd_vae_approx.cheap_approximation).
_COEFS = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])


def latent_preview(latents: torch.Tensor) -> Image.Image:
    """(4, h, w) or (B, 4, h, w) latents (first image) -> an RGB image of h x w pixels."""
    x = latents[0] if latents.ndim == 4 else latents
    rgb = torch.einsum("chw,cr->hwr", x.float().cpu(), _COEFS)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
