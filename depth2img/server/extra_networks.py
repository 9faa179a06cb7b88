"""A1111's listings of styles, LoRAs and embeddings under ``/sdapi/v1``, in A1111's response shapes.

- ``GET /prompt-styles``: ``[{name, prompt, negative_prompt}]`` (``modules/api/api.py::get_prompt_styles``).
- ``GET /loras``: ``[{name, alias, path, metadata}]`` (the Lora extension's ``create_lora_json``); ``path``
  is the file name only, as ``/sd-models``' ``filename``: no local path reaches a client.
- ``POST /refresh-loras``: re-read ``--lora-dir``; the next job sees new files.
- ``GET /embeddings``: ``{loaded: {name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}},
  skipped: {...}}`` (``EmbeddingsResponse``). As in A1111, "loaded" are the files whose width fits the
  loaded model's text encoder and "skipped" the others (and unreadable files). With no model loaded yet
  the width is unknown and every readable file is listed as loaded.

The entries come from the catalog (:mod:`depth2img.models.networks`), as ``depth2img models`` shows them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from ..errors import Depth2ImgError
from ..models import networks
from .services import Services

router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])


def _services(request: Request) -> Services:
    return request.app.state.services


@router.get("/prompt-styles")
def prompt_styles(request: Request) -> list[dict[str, Any]]:
    styles = _services(request).registry.extras.styles or {}
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles.values()]


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    folder = _services(request).registry.extras.lora_dir
    if folder is None:
        return []
    return [{"name": e.name, "alias": e.alias, "path": e.path.name, "metadata": e.metadata}
            for e in networks.list_loras(folder) if e.problem is None]


@router.post("/refresh-loras")
async def refresh_loras(request: Request) -> None:
    registry = _services(request).registry
    await asyncio.to_thread(registry.extras.refresh_loras, registry.pipeline)


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, dict[str, Any]]:
    registry = _services(request).registry
    out: dict[str, dict[str, Any]] = {"loaded": {}, "skipped": {}}
    folder = registry.extras.embeddings_dir
    if folder is None:
        return out
    pipe = registry.pipeline
    width = int(pipe.text_encoder.config.hidden_size) if pipe is not None and pipe.text_encoder_2 is None else None
    for entry in networks.list_embeddings(folder):
        try:
            info = networks.embedding_info(entry)
        except Depth2ImgError:  # unreadable, or an SDXL file: not usable here
            out["skipped"][entry.name] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                          "shape": 0, "vectors": 0}
            continue
        out["loaded" if width in (None, info["shape"]) else "skipped"][entry.name] = info
    return out
