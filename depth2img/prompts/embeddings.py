"""Textual-inversion embeddings, used in a prompt by file name as in A1111.

A folder of ``.pt`` / ``.safetensors`` / ``.bin`` files is indexed by file stem (``bad-hands.pt`` is
``bad-hands`` in a prompt). Where the stem's tokens occur in a prompt, :mod:`.weighting` puts the file's
``n`` vectors in place of those tokens at the text encoder's token-embedding output, for that one
encoder call (a forward hook removed afterwards: no tokens are added to the tokenizer and nothing of
the pipeline changes, so a prompt without a name encodes exactly as before).

Formats read (the shapes A1111's ``modules/textual_inversion/textual_inversion.py`` accepts):

- A1111's own: ``{"string_to_param": {"*": (n, D)}, "name": ..., ...}``;
- diffusers' ``save_textual_inversion``: ``{"<token>": (n, D)}`` or ``(D,)``;
- ``{"emb_params": (n, D)}`` (kohya / some trainers).

Files are read only through :mod:`depth2img.models.safe_load` (safetensors header validation, or
``torch.load(weights_only=True)``): a pickle asking for code is refused. Files are opened when a prompt
first uses them, so a folder holding embeddings of several model families still serves the fitting ones;
a file whose width is not the text encoder's is refused with one line naming it and both widths.

The infotext gets ``TI hashes: "name: hash, ..."`` with A1111's 12-digit short hash (sha256 of the file).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.files import EMBEDDING_SUFFIXES, files_by_stem
from ..errors import InvalidRequestError, ModelLoadError

SUFFIXES = EMBEDDING_SUFFIXES  # the one table: models/files.py
SHORT_HASH = 12  # A1111's Embedding.set_hash: hash[0:12]


@dataclass(frozen=True)
class Embedding:
    name: str
    vectors: torch.Tensor  # (n, D) float32
    path: Path

    @property
    def shorthash(self) -> str:
        from ..models.cache import file_sha256

        return file_sha256(self.path)[:SHORT_HASH]


def read_vectors(path: str | Path) -> torch.Tensor:
    """The ``(n, D)`` vectors of one embedding file, whatever of the known formats it is in."""
    path = Path(path)
    return _vectors(_read(path), path)


def read_info(path: str | Path) -> dict[str, Any]:
    """A1111's ``EmbeddingItem`` of a file: ``step``, ``sd_checkpoint``, ``sd_checkpoint_name`` (from an
    A1111-format file, else None), ``shape`` (the width) and ``vectors`` (how many)."""
    path = Path(path)
    data = _read(path)
    vectors = _vectors(data, path)

    def meta(key: str, kind: type) -> Any:
        value = data.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return {"step": meta("step", int), "sd_checkpoint": meta("sd_checkpoint", str),
            "sd_checkpoint_name": meta("sd_checkpoint_name", str), "shape": int(vectors.shape[1]),
            "vectors": int(vectors.shape[0])}


def _read(path: Path) -> Any:
    from ..models.safe_load import load_pickle_checkpoint, load_safetensors

    if path.suffix.lower() == ".safetensors":
        return load_safetensors(path)
    return load_pickle_checkpoint(path)  # weights-only unpickling; A1111's dict holds strings and ints too


def _vectors(data: Any, path: Path) -> torch.Tensor:
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name}: not a textual-inversion embedding (a {type(data).__name__})")
    if "string_to_param" in data:
        params = data["string_to_param"]
        tensors = list(params.values()) if isinstance(params, dict) else []
        if len(tensors) != 1:
            raise ModelLoadError(f"{path.name}: string_to_param must hold one tensor, it holds {len(tensors)}")
        vectors = tensors[0]
    elif "emb_params" in data:
        vectors = data["emb_params"]
    elif "clip_l" in data or "clip_g" in data:
        raise InvalidRequestError(f"{path.name}: an SDXL embedding (clip_l/clip_g); SDXL embeddings are not supported yet")
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise ModelLoadError(f"{path.name}: not a textual-inversion embedding "
                                 f"(expected string_to_param, emb_params or one token tensor; found {len(tensors)} tensors)")
        vectors = tensors[0]
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
        raise ModelLoadError(f"{path.name}: the embedding is not a floating-point tensor")
    vectors = vectors.detach().float()
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ModelLoadError(f"{path.name}: embedding shape {tuple(vectors.shape)} is not (vectors, width)")
    if not bool(torch.isfinite(vectors).all()):
        raise ModelLoadError(f"{path.name}: the embedding holds NaN or infinite values")
    return vectors


class EmbeddingDatabase:
    """The embeddings of one folder for one tokenizer/text encoder: what :mod:`.weighting` asks
    :meth:`find_at`. Read-only after construction except for a cache of opened files (thread-safe)."""

    def __init__(self, folder: str | Path, tokenizer: Any, width: int):
        self.folder, self.width = Path(folder), width
        if not self.folder.is_dir():
            raise InvalidRequestError(f"embeddings folder not found: {self.folder}")
        self.paths: dict[str, Path] = files_by_stem(self.folder, SUFFIXES)
        # A1111's ids_lookup: first token → [(token ids of the name, name)], longest name first
        self._lookup: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        for name in self.paths:
            ids = tuple(tokenizer(name, add_special_tokens=False, truncation=False, verbose=False).input_ids)
            if ids:
                self._lookup.setdefault(ids[0], []).append((ids, name))
        for entries in self._lookup.values():
            entries.sort(key=lambda entry: -len(entry[0]))
        self._loaded: dict[str, Embedding] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedding:
        """The embedding named ``name``, read on first use and width-checked."""
        with self._lock:
            if name not in self._loaded:
                path = self.paths[name]
                vectors = read_vectors(path)
                if vectors.shape[1] != self.width:
                    raise InvalidRequestError(
                        f"embedding {path.name} is {vectors.shape[1]} wide but this model's text encoder is "
                        f"{self.width} wide: it was made for another model family")
                self._loaded[name] = Embedding(name, vectors, path)
            return self._loaded[name]

    def find_at(self, ids: list[int], position: int) -> tuple[str, torch.Tensor, int] | None:
        """``(name, vectors, token count of the name)`` if an embedding's name starts at ``position``."""
        for name_ids, name in self._lookup.get(ids[position], ()):
            if tuple(ids[position : position + len(name_ids)]) == name_ids:
                return name, self.get(name).vectors, len(name_ids)
        return None

    def used_in(self, tokenizer: Any, texts: list[str]) -> list[str]:
        """Names of the embeddings the texts use, in order of first use (for the infotext)."""
        from .parser import parse_prompt_attention

        used: list[str] = []
        for text in texts:
            for piece, weight in parse_prompt_attention(text):
                ids = tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False).input_ids
                position = 0
                while position < len(ids):
                    found = self.find_at(ids, position)
                    if found is None:
                        position += 1
                        continue
                    if found[0] not in used:
                        used.append(found[0])
                    position += found[2]
        return used

    def hashes(self, tokenizer: Any, texts: list[str]) -> str | None:
        """A1111's ``TI hashes`` value: ``name: shorthash`` joined by ", " (None when none is used)."""
        parts = [f"{name.replace(':', '').replace(',', '')}: {self.get(name).shorthash}"
                 for name in self.used_in(tokenizer, texts)]
        return ", ".join(parts) or None


def load_embeddings(folder: str | Path, tokenizer: Any, text_encoder: Any) -> EmbeddingDatabase:
    """An :class:`EmbeddingDatabase` for the pipeline's (first) tokenizer and text encoder."""
    return EmbeddingDatabase(folder, tokenizer, int(text_encoder.config.hidden_size))
