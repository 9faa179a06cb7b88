"""Which models the server offers, and the one that is loaded.

The ids are the names ``depth2img models`` shows for each ``--models-dir`` (A1111's
``models/Stable-diffusion``, ComfyUI's ``models/checkpoints``, diffusers folders, the HF cache), plus the
built-ins ``tiny`` and ``tiny-img2img``. A client names a model by id only; an id that is not listed
is an error, never a path. Models load lazily on first use; the last one stays loaded and loading
another unloads it first (A1111 keeps one checkpoint too: ``sd_checkpoints_limit`` 1).
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

from ..errors import InvalidRequestError
from ..models.catalog import ModelEntry, list_models
from ..models.tiny import TINY_NAMES
from ..pipeline import Pipeline, load_pipeline
from .extras import PromptExtras
from .settings import Settings

log = logging.getLogger("depth2img.server")


class UnknownModelError(InvalidRequestError):
    """A model id that the registry does not list."""


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()  # held while loading: a switch waits for a load in progress
        self.entries: dict[str, ModelEntry] = {}
        self._pipe: Pipeline | None = None
        self._key: tuple[str, str | None] | None = None
        self.extras = PromptExtras(settings)  # styles, embeddings, LoRAs: attached to every pipeline loaded
        self.refresh()
        self.default = self.resolve(settings.model) if settings.model else next(iter(self.entries), TINY_NAMES[0])

    def refresh(self) -> None:
        entries: dict[str, ModelEntry] = {}
        for folder in self.settings.models_dirs:
            for entry in list_models(folder):
                entries.setdefault(entry.name, entry)
        if self.settings.hf_cache is not None:
            from ..models.catalog import list_hf_cache

            for entry in list_hf_cache(self.settings.hf_cache):
                entries.setdefault(entry.name, entry)
        for name in TINY_NAMES:  # built-ins last: a user's model of the same name wins
            entries.setdefault(name, ModelEntry(name, Path(name), "builtin", "depth" if name == "tiny" else "img2img", 0))
        self.entries = entries

    def resolve(self, name: str | None) -> str:
        """The id of ``name`` (None: the default). Unknown ids raise, listing a few valid ones."""
        if name is None:
            return self.default
        if name in self.entries:
            return name
        raise UnknownModelError(f"unknown model {name!r}; GET /api/v1/models lists the ids ({', '.join(list(self.entries)[:8])})")

    def set_default(self, name: str) -> str:
        self.default = self.resolve(name)
        return self.default

    @property
    def loaded(self) -> str | None:
        return self._key[0] if self._key else None

    @property
    def pipeline(self) -> Pipeline | None:
        return self._pipe

    def get(self, name: str, depth_model: str | None = None) -> Pipeline:
        """The pipeline for ``name`` (+ ``depth_model``), loading it (and unloading the previous one) if needed."""
        key = (self.resolve(name), self.resolve(depth_model) if depth_model else None)
        with self._lock:
            if self._key == key and self._pipe is not None:
                return self._pipe
            self.unload()
            entry = self.entries[key[0]]
            depth_path = str(self.entries[key[1]].path) if key[1] else None
            log.info("loading model %s", key[0])
            self._pipe = load_pipeline(str(entry.path), device=self.settings.device, dtype=self.settings.dtype,
                                       depth_model=depth_path, cache_dir=self.settings.cache_dir)
            self.extras.attach(self._pipe)
            self._key = key
            return self._pipe

    def unload(self) -> None:
        with self._lock:
            if self._pipe is not None:
                log.info("unloading model %s", self.loaded)
            self._pipe, self._key = None, None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # pragma: no cover - freeing memory is best effort
                pass

    def model_hash(self, name: str) -> str | None:
        """A1111's short hash when known without hashing gigabytes: the loaded model's."""
        if self._pipe is not None and self.loaded == name:
            return self._pipe.model_hash
        return None
