"""LoRA files applied for one request, through diffusers' own loaders (peft adapters).

Named in the prompt as A1111 does, ``<lora:name:weight>`` (``<lora:name:te:unet>`` for separate text
encoder and UNet weights; the weight defaults to 1), or with ``request.loras`` (``--lora NAME:WEIGHT``).
``name`` is a file stem in the pipeline's LoRA folder (``lora_dir`` / ``--lora-dir``). The tags are taken
out of the text before it is encoded; the infotext keeps the prompt as typed (A1111 does too) and adds
``Lora hashes: "name: hash, ..."`` (A1111's 12-digit short hash: for a ``.safetensors`` file the sha256 of
its tensor data after the header, kohya/addnet's hash; else of the whole file).

Files are read through :mod:`depth2img.models.safe_load`; diffusers converts their keys
(``StableDiffusionLoraLoaderMixin.lora_state_dict``: diffusers/peft and kohya ``lora_unet_...`` formats)
and attaches peft adapters to the UNet and text encoder (``load_lora_into_unet`` /
``load_lora_into_text_encoder``). :func:`applied` removes every adapter layer afterwards
(``unload_lora``, diffusers' text-encoder unpatch), so the next request runs the untouched modules.
The adapters change the shared modules while a request runs: one request at a time per pipeline
(the server's one worker per device already does that).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.files import LORA_SUFFIXES, files_by_stem
from ..errors import InvalidRequestError
from .parser import extract_extra_networks

SUFFIXES = LORA_SUFFIXES  # the one table: models/files.py
SHORT_HASH = 12  # A1111's NetworkOnDisk.set_hash: hash[0:12]
ADAPTER = "depth2img_lora_{}"


@dataclass(frozen=True)
class LoraUse:
    name: str
    path: Path
    te_weight: float
    unet_weight: float


class LoraLibrary:
    """The LoRA files of one folder, by file stem."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InvalidRequestError(f"LoRA folder not found: {self.folder}")
        self.paths: dict[str, Path] = files_by_stem(self.folder, SUFFIXES)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def shorthash(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._hashes:
                self._hashes[key] = file_hash(path)
            return self._hashes[key][:SHORT_HASH]


def file_hash(path: Path) -> str:
    """A1111's LoRA hash: addnet's (sha256 after the safetensors header) for .safetensors, else sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if path.suffix.lower() == ".safetensors":
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequestError(f"{where}: the weight {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidRequestError(f"{where}: the weight {text!r} is not a finite number")
    return value


def requested(prompt: str, negative_prompt: str, loras: tuple[str, ...] | list[str],
              library: LoraLibrary | None) -> tuple[list[LoraUse], list[str]]:
    """The LoRAs a request asks for, and notes. ``--lora`` names must exist (an error); a prompt tag
    whose file is missing is skipped with a note, as A1111 does for a pasted prompt."""
    notes: list[str] = []
    wanted: list[tuple[str, list[str], bool]] = []  # name, weights, from the flag
    for text in loras:
        name, _, weight = text.partition(":")
        wanted.append((name, [weight] if weight else [], True))
    _, tags = extract_extra_networks(prompt)
    for kind, args in tags:
        if kind == "lora":
            wanted.append((args[0], args[1:], False))
        else:
            notes.append(f"<{kind}:...> extra networks are not supported: ignored")
    if any(kind == "lora" for kind, _ in extract_extra_networks(negative_prompt)[1]):
        notes.append("<lora:...> in the negative prompt is ignored (a LoRA applies to the whole picture: put it in the prompt)")
    uses: list[LoraUse] = []
    for name, weights, from_flag in wanted:
        where = f"--lora {name}" if from_flag else f"<lora:{name}>"
        if library is None or name not in library.paths:
            known = ", ".join(sorted(library.paths)) if library is not None and library.paths else "none (give --lora-dir)"
            if from_flag:
                raise InvalidRequestError(f"unknown LoRA {name!r}; LoRAs: {known}")
            notes.append(f"LoRA {name!r} not found (LoRAs: {known}): ignored")
            continue
        if len(weights) > 2:
            raise InvalidRequestError(f"{where}: at most two weights (text encoder, UNet), got {len(weights)}")
        te = _number(weights[0], where) if weights else 1.0
        unet = _number(weights[1], where) if len(weights) > 1 else te
        uses.append(LoraUse(name, library.paths[name], te, unet))
    return uses, notes


def hashes(library: LoraLibrary | None, uses: list[LoraUse]) -> str | None:
    """A1111's ``Lora hashes`` value (None when no LoRA is used)."""
    if library is None or not uses:
        return None
    seen: dict[str, str] = {}
    for use in uses:
        seen.setdefault(use.name.replace(":", "").replace(",", ""), library.shorthash(use.path))
    return ", ".join(f"{name}: {short}" for name, short in seen.items())


@contextmanager
def applied(unet: Any, text_encoder: Any, uses: list[LoraUse]) -> Iterator[None]:
    """Attach the LoRAs as peft adapters with their weights; remove every adapter layer afterwards."""
    if not uses:
        yield
        return
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as Loader
    from diffusers.loaders.lora_base import _remove_text_encoder_monkey_patch, set_adapters_for_text_encoder

    from ..models.safe_load import load_state_dict

    names, te_names, unet_weights, te_weights = [], [], [], []
    try:
        for i, use in enumerate(uses):
            name = ADAPTER.format(i)
            try:
                state, alphas = Loader.lora_state_dict(load_state_dict(use.path))
                has_unet = any(k.startswith("unet.") for k in state)
                has_te = any(k.startswith("text_encoder.") for k in state)
                if not has_unet and not has_te:
                    raise ValueError("no UNet or text-encoder LoRA weights found")
                if has_unet:
                    Loader.load_lora_into_unet(state, alphas, unet=unet, adapter_name=name)
                    names.append(name)
                    unet_weights.append(use.unet_weight)
                if has_te:
                    Loader.load_lora_into_text_encoder(state, alphas, text_encoder=text_encoder, prefix="text_encoder",
                                                       adapter_name=name)
                    te_names.append(name)
                    te_weights.append(use.te_weight)
            except (ValueError, KeyError, RuntimeError) as error:
                raise InvalidRequestError(f"LoRA {use.path.name} does not fit this model: "
                                          f"{str(error).strip().splitlines()[0][:200]}") from None
        if names:
            unet.set_adapters(names, weights=unet_weights)
        if te_names:
            set_adapters_for_text_encoder(te_names, text_encoder, te_weights)
        yield
    finally:
        unet.unload_lora()  # the peft layers are replaced by the original modules, weights untouched
        _remove_text_encoder_monkey_patch(text_encoder)
