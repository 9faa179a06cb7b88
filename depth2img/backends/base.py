"""The backend seam: what a model family contributes to the one top-to-bottom pipeline.

A backend is chosen once, when the model loads (:func:`depth2img.backends.select_backend`), from the
components' structure, never guessed again from channel counts. It contributes exactly three things:

- ``check_inputs``: which request fields the family can honour (a depth map needs a depth model...);
- ``denoiser``: the UNet wrapped in its conditioning, with the call signature ``eps = model(x, t, cond)``
  that :class:`~depth2img.sampling.CFGDenoiser` batches (k-diffusion's adapter style);
- ``infotext``: its entries of the A1111 parameter line.

:class:`Conditioning` is what the UNet is conditioned on besides ``x`` and ``t``: text embeddings
plus the extra tensors some families need (SDXL: ``text_embeds`` and ``time_ids`` for
``added_cond_kwargs``), so classifier-free guidance can batch every part of it the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from ..request import GenerationRequest


@dataclass(frozen=True)
class Conditioning:
    """Text embeddings ``(B, 77, D)`` and named extra tensors, each with the batch first."""

    text: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch (CFG's ``[uncond, cond]``)."""
        return Conditioning(
            torch.cat([p.text for p in parts]),
            {key: torch.cat([p.added[key] for p in parts]) for key in parts[0].added},
        )

    def repeat(self, batch: int) -> Conditioning:
        """The same conditioning for ``batch`` images: (1, ...) → (B, ...)."""
        return Conditioning(
            self.text.repeat(batch, *([1] * (self.text.dim() - 1))),
            {k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in self.added.items()},
        )

    @property
    def batch(self) -> int:
        return self.text.shape[0]


Denoiser = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # eps = model(x, t, cond)


def unet_call(
    unet: Any, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
    residuals: tuple[list[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The diffusers UNet call for any family: extras go to ``added_cond_kwargs`` (SDXL), none for SD1/SD2.
    ``residuals`` (down, mid): a ControlNet's, added to the UNet's skip connections and middle block."""
    kwargs: dict[str, Any] = {"added_cond_kwargs": cond.added} if cond.added else {}
    if residuals is not None:
        kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"] = residuals
    return unet(x, t, encoder_hidden_states=cond.text, return_dict=False, **kwargs)[0]


class Backend:
    """Base of the families. Subclasses set the class attributes and override what differs."""

    family: ClassVar[str]  # "sd-depth", "sd-img2img" (and later "sd15-controlnet", "sdxl-controlnet")
    kind: ClassVar[str]  # "depth" or "img2img": what `depth2img models` and the sweep call it
    uses_depth: ClassVar[bool]  # whether a depth map is computed and fed to the model
    label: ClassVar[str]  # shown in grids: "depth2img" / "img2img"
    depth_at_pixels: ClassVar[bool] = False  # the depth is normalised at the output size (ControlNet), not the latent's

    def check_inputs(self, request: GenerationRequest, *, model: str, has_estimator: bool) -> None:
        """Raise :class:`~depth2img.errors.InvalidRequestError` for a field this family cannot honour."""

    def denoiser(
        self, unet: Any, depth: torch.Tensor | None, request: GenerationRequest, end_timestep: float | None,
        timesteps: torch.Tensor | None = None,
    ) -> Denoiser:
        """``timesteps``: the steps that actually run (after strength truncation)."""
        raise NotImplementedError

    def infotext(self, request: GenerationRequest, *, own_depth: bool, depth_source: str) -> dict[str, object]:
        return {}


def refuse_control_options(request: GenerationRequest, model: str) -> None:
    """For families without a ControlNet: ControlNet fields set to anything but their default are refused."""
    from ..errors import InvalidRequestError

    changed = request.changed_control_options
    if changed:
        raise InvalidRequestError(
            f"{changed[0]} was given, but '{model}' was loaded without a ControlNet (load one with --controlnet)")
