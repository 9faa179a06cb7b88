"""Resolve the one ``model`` string users give (CLI ``--model``, API, UI dropdown) to components.

Order: a built-in name (``tiny``, ``tiny-img2img``), an existing folder, an existing checkpoint file,
then a Hugging Face hub id. Anything else is one error listing what would have been accepted.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelLoadError
from .components import Components, check_components
from .files import MODEL_SUFFIXES
from .controlnet import TINY_BASES, tiny_base
from .folder import is_model_folder, load_depth_estimator, load_folder
from .hub import looks_like_hub_id, resolve_hub_folder
from .tiny import TINY_NAMES, tiny_components


def load_components(
    model: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    depth_model: str | Path | None = None,
    cache_dir: str | Path | None = None,
    controlnet: str | Path | None = None,
) -> Components:
    """Components for ``model``; ``depth_model`` swaps in another transformers depth estimator.

    ``cache_dir``: where a pickle ``.ckpt`` is converted once to a memory-mappable safetensors copy
    (keyed by its sha256, which also gives the infotext's "Model hash"); None = no cache.
    """
    components = _load_generator(str(model), dtype, cache_dir)
    if depth_model is not None:
        components.depth_estimator, components.feature_extractor = _load_depth_model(str(depth_model))
        components.depth_source = str(depth_model)
    if controlnet is not None:  # models/controlnet.py: built-in, folder or single file
        from .controlnet import attach_controlnet

        attach_controlnet(components, controlnet)
    return check_components(components)


def _load_generator(model: str, dtype: torch.dtype, cache_dir: str | Path | None) -> Components:
    if model in TINY_NAMES:  # float32 weights; the Pipeline casts to its dtype
        return tiny_components(depth=model == "tiny")
    if model in TINY_BASES:  # the tiny SD 1.5 / SDXL bases for ControlNets
        return tiny_base(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return load_folder(path, dtype=dtype)
    if path.is_file():
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelLoadError(f"'{path}' is not a model: expected a folder or a {'/'.join(MODEL_SUFFIXES)} file")
        from .single_file import load_single_file

        return load_single_file(path, dtype=dtype, cache_dir=cache_dir)
    if looks_like_hub_id(model):
        return load_folder(resolve_hub_folder(model), dtype=dtype, name=model.split("/")[-1])
    raise ModelLoadError(
        f"no model '{model}': not a built-in name ({', '.join(TINY_NAMES)}), an existing folder or "
        f"checkpoint file, or a hub id like owner/name"
    )


def _load_depth_model(depth_model: str):
    """A transformers depth model: a local folder (or a full diffusers folder's depth_estimator), or a hub id."""
    path = Path(depth_model).expanduser()
    if path.is_dir():
        if is_model_folder(path):  # a whole depth2img model folder: take its estimator
            return load_depth_estimator(path / "depth_estimator", path / "feature_extractor")
        return load_depth_estimator(path)
    if looks_like_hub_id(depth_model):
        return load_depth_estimator(resolve_hub_folder(depth_model, diffusers_layout=False))
    raise ModelLoadError(f"no depth model '{depth_model}': give a transformers model folder or a hub id")
