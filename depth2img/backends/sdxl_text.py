"""SDXL's prompt encoding: two CLIP text encoders, penultimate hidden states concatenated, pooled
embeddings from the second (diffusers' ``StableDiffusionXL*Pipeline.encode_prompt`` with clip_skip None).

The pooled embeddings travel in ``Conditioning.added["text_embeds"]``; the size-dependent ``time_ids``
are added by the backend's denoiser (:func:`sdxl_time_ids`), so ``Pipeline.encode_prompt`` stays one call.
Deliberate choice: an empty negative prompt is encoded as "" (A1111), not zeroed (diffusers'
``force_zeros_for_empty_prompt`` applies to a *missing* negative prompt, which a request cannot express).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Conditioning


def encode_sdxl_text(tokenizers: list[Any], text_encoders: list[Any], text: str, device: Any, dtype: Any) -> Conditioning:
    """(1, 77, D1 + D2) hidden states and (1, P) pooled embeddings of ``text``."""
    states, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids.to(device), output_hidden_states=True)
        if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds first (diffusers keeps the last such)
            pooled = out[0]
        states.append(out.hidden_states[-2])
    assert pooled is not None, "SDXL's second text encoder must return pooled (projected) embeddings"
    return Conditioning(torch.cat(states, dim=-1).to(dtype), {"text_embeds": pooled.to(dtype)})


def sdxl_time_ids(height: int, width: int, batch: int, device: Any, dtype: Any) -> torch.Tensor:
    """(batch, 6): original size, crop top-left (0, 0), target size — diffusers' defaults (both sizes =
    the output's; no aesthetic score: ``requires_aesthetics_score`` is False for the ControlNet pipelines)."""
    return torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=dtype).repeat(batch, 1)
