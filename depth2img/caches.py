"""Exact-mode "no repeated work": small bounded caches owned by one :class:`~depth2img.pipeline.Pipeline`.

A server, the UI, a sweep or a video asks for the same prompt and the same photo again and again; the
text encoder (OpenCLIP-H: 45 GFLOP per sequence) and the depth estimator (DPT-Hybrid: 255 GFLOP) then
recompute what they computed a moment ago. The caches here keep their outputs, keyed on everything that
changes them, so a cached run is bit for bit an uncached one (tests/test_caches.py).

Gap filled: diffusers recomputes both on every ``__call__`` and has no such cache; ``functools.lru_cache``
cannot key on tensors or modules and is process-wide, while these caches live on one pipeline instance
(no process-wide state) and are safe under the server's threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch
from PIL import Image


class LRUCache:
    """A bounded least-recently-used map; ``size`` 0 turns it off. Thread-safe; ``hits``/``misses`` count look-ups."""

    def __init__(self, size: int) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key``, else ``compute()`` stored (the oldest entry evicted past ``size``)."""
        if self.size <= 0:
            return compute()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute()  # outside the lock: a slow encoder does not block another thread's hit
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def module_identity(module: Any) -> tuple[int, int]:
    """(id, weights version) of a module: another module, or in-place changed weights (a merged LoRA,
    ``load_state_dict``, a user's edit: each bumps the tensors' version counters), give another key."""
    if module is None:
        return (0, 0)
    version = 0
    for p in module.parameters():
        try:
            version += p._version
        except RuntimeError:  # an inference-mode tensor has no version counter: identity by address instead
            version += p.data_ptr()
    return (id(module), version)


def image_digest(image: Image.Image) -> str:
    """sha256 of an image's mode, size and pixels: the content, not the object or the file it came from."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def text_key(text: str, encoder: Any, tokenizer: Any, embeddings: Any, loras: tuple[Any, ...],
             device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
    """Everything a prompt's embedding depends on: the text, the encoder (and its weights' version),
    the tokenizer, the textual-inversion library, the LoRAs applied for this run, device and dtype.
    The SD2 "clip skip" (penultimate layer) is a property of the loaded encoder, so it is in its identity."""
    return (text, module_identity(encoder), id(tokenizer), id(embeddings), loras, str(device), dtype)


def depth_key(image: Image.Image, estimator: Any, feature_extractor: Any) -> tuple[Any, ...]:
    """The raw estimate depends on the pixels, the estimator (and its weights) and its processor only;
    size, inversion, clipping and normalisation are applied after the cache, on every request."""
    return (image_digest(image), module_identity(estimator), id(feature_extractor))
