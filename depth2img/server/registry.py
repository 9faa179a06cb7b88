"""Which models the server offers, and the one that is loaded.

The ids are the names ``depth2img models`` shows for each ``--models-dir`` (A1111's
``models/Stable-diffusion``, ComfyUI's ``models/checkpoints``, diffusers folders, the HF cache), plus the
built-ins ``tiny``, ``tiny-img2img`` and the ControlNet bases ``tiny-sd15``, ``tiny-sdxl``. ControlNets
are listed apart (``catalog.list_controlnets`` of the same folders, plus the built-in ``tiny-controlnet``,
``tiny-controlnet-sdxl``), named as sd-webui-controlnet names them. A client names a model by id only; an
id that is not listed is an error, never a path. Models load lazily on first use; the last one stays loaded and loading
another unloads it first (A1111 keeps one checkpoint too: ``sd_checkpoints_limit`` 1).
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

from ..errors import InvalidRequestError
from ..models.catalog import ControlNetEntry, ModelEntry, list_controlnets, list_models
from ..models.controlnet import TINY_BASES, TINY_CONTROLNETS
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
        self.controlnets: dict[str, ControlNetEntry] = {}  # by name (file stem / folder / built-in)
        self._pipe: Pipeline | None = None
        self._key: tuple[str, str | None, str | None] | None = None  # (model, depth model, ControlNet)
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
        for name in TINY_NAMES + TINY_BASES:  # built-ins last: a user's model of the same name wins
            entries.setdefault(name, ModelEntry(name, Path(name), "builtin", "depth" if name == "tiny" else "img2img", 0))
        self.entries = entries
        controlnets: dict[str, ControlNetEntry] = {}
        for folder in self.settings.models_dirs:
            for cn in list_controlnets(folder):
                controlnets.setdefault(cn.name, cn)
        for name in TINY_CONTROLNETS:
            controlnets.setdefault(name, ControlNetEntry(name, Path(name), "builtin", 0, None))
        self.controlnets = controlnets

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
    def loaded_key(self) -> tuple[str, str | None, str | None] | None:
        """(model, depth model, ControlNet) of the loaded pipeline, or None."""
        return self._key

    @property
    def pipeline(self) -> Pipeline | None:
        return self._pipe

    def get(self, name: str, depth_model: str | None = None, controlnet: str | None = None) -> Pipeline:
        """The pipeline for ``name`` (+ ``depth_model``, + ``controlnet``: a name of :attr:`controlnets`),
        loading it (and unloading the previous one) if needed."""
        if controlnet is not None and controlnet not in self.controlnets:
            raise UnknownModelError(f"unknown ControlNet {controlnet!r}; GET /controlnet/model_list lists them")
        key = (self.resolve(name), self.resolve(depth_model) if depth_model else None, controlnet)
        with self._lock:
            if self._key == key and self._pipe is not None:
                return self._pipe
            self.unload()
            entry = self.entries[key[0]]
            depth_path = str(self.entries[key[1]].path) if key[1] else None
            log.info("loading model %s", key[0])
            cn_path = str(self.controlnets[controlnet].path) if controlnet else None
            self._pipe = load_pipeline(str(entry.path), device=self.settings.device, dtype=self.settings.dtype,
                                       depth_model=depth_path, cache_dir=self.settings.cache_dir, controlnet=cn_path,
                                       low_memory=self.settings.low_memory, compile=self.settings.compile)
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
