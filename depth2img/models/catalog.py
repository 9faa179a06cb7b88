"""List the models found in a models folder, the way users already keep them.

* AUTOMATIC1111: ``models/Stable-diffusion/*.ckpt|.safetensors`` (sub-folders too) with a same-name ``.yaml``;
* ComfyUI: ``models/checkpoints/...``;
* a folder of checkpoints given directly (its files at the top level);
* diffusers folders (a ``model_index.json``) up to three levels down;
* the Hugging Face hub cache (``models--owner--name/snapshots/<rev>/model_index.json``), when given.

Listing reads directory entries and, for ``.safetensors`` and diffusers folders, a header or a config to
tell depth (5-channel) from img2img models; it never unpickles (a pickle's first bytes are checked). A file
that cannot be a checkpoint is listed with ``problem`` set, so it is shown as unreadable and never hashed.
The A1111 short hash (first 10 hex digits of the sha256 of the whole file) is computed only when asked,
and remembered in the cache index.

ControlNets are listed apart (:func:`list_controlnets`): A1111's ``models/ControlNet`` and ComfyUI's
``models/controlnet``, each named as sd-webui-controlnet names them, ``stem [old hash]``, where the old
hash (:func:`controlnet_hash`, A1111's ``model_hash``) reads only 64 KiB, so it is always shown.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptCheckpointError
from .files import CHECKPOINT_SUFFIXES, MODEL_SUFFIXES, SAFETENSORS_SUFFIXES, sidecar_config
from .kinds import INPAINT_UNET_CHANNELS, kind_from_unet_channels
from .cache import short_hash  # noqa: F401  (the CLI's `models --hash` imports it from here)
from .safe_load import check_pickle_header, read_safetensors_header

CHECKPOINT_DIRS = ("Stable-diffusion", "checkpoints")  # A1111, ComfyUI
CONTROLNET_DIRS = ("ControlNet", "controlnet")  # A1111 (sd-webui-controlnet's models folder), ComfyUI
MAX_DEPTH = 3


@dataclass
class ModelEntry:
    name: str  # what to show; the checkpoint stem, folder name or hub id
    path: Path
    layout: str  # "checkpoint" | "diffusers" | "hf-cache"
    kind: str  # "depth" | "img2img" | "inpaint" | "?" (unknown without reading a pickle)
    size: int  # bytes on disk (weights only for folders)
    config: Path | None = None  # a same-name yaml beside a checkpoint
    short_hash: str | None = None  # A1111 short hash, when computed
    # why a checkpoint file cannot be a model ("x.ckpt is empty (0 bytes): not a checkpoint"); None = readable
    # as far as a listing checks (safetensors header; a pickle's zip/pickle header, never unpickled).
    # Such entries have kind "?" and must not be hashed.
    problem: str | None = None


def _kind_from_in_channels(n: int | None) -> str:
    # a listing also names inpainting models (which loading refuses) instead of hiding them as unknown
    return kind_from_unet_channels(n) or ("inpaint" if n == INPAINT_UNET_CHANNELS else "?")


def _checkpoint_kind(path: Path, config: Path | None) -> tuple[str, str | None]:
    """(kind, problem) of a checkpoint file; the problem is the loader's own sentence for a bad file."""
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            header = read_safetensors_header(path)
        else:
            check_pickle_header(path)
            header = {}
    except CorruptCheckpointError as error:
        return "?", str(error)
    except OSError as error:
        return "?", f"{path.name} cannot be read ({error.strerror or error})"
    if config is not None:
        try:
            import yaml

            cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
            return _kind_from_in_channels(cfg["model"]["params"]["unet_config"]["params"]["in_channels"]), None
        except Exception:  # an unreadable yaml just leaves the kind unknown in a listing
            pass
    shape = header.get("model.diffusion_model.input_blocks.0.0.weight", {}).get("shape")
    return _kind_from_in_channels(shape[1] if shape else None), None


def _folder_entry(folder: Path, name: str, layout: str) -> ModelEntry:
    try:
        n = json.loads((folder / "unet" / "config.json").read_text()).get("in_channels")
    except (OSError, ValueError):
        n = None
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    return ModelEntry(name, folder, layout, _kind_from_in_channels(n), size)


def _checkpoint_entry(path: Path, root: Path) -> ModelEntry:
    config = sidecar_config(path)
    base = next((a for a in path.parents if a.name in CHECKPOINT_DIRS), root)  # A1111 shows names below its dir
    name = str(path.relative_to(base).with_suffix("")) if base in path.parents else path.stem
    kind, problem = _checkpoint_kind(path, config)
    return ModelEntry(name, path, "checkpoint", kind, path.stat().st_size, config, problem=problem)


def _walk(root: Path, depth: int = 0):
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        yield Path(e.path), e, depth
        if e.is_dir(follow_symlinks=False) and depth < MAX_DEPTH and not e.name.startswith("."):
            yield from _walk(Path(e.path), depth + 1)


def list_models(root: str | Path, *, hf_cache: str | Path | None = None) -> list[ModelEntry]:
    """Every model under ``root`` (and in ``hf_cache`` if given), sorted by layout then name."""
    root = Path(root).expanduser()
    out: list[ModelEntry] = []
    folders: list[Path] = []
    for p, e, depth in _walk(root):
        if e.is_dir() and (p / "model_index.json").is_file():
            folders.append(p)
    for f in folders:
        out.append(_folder_entry(f, str(f.relative_to(root)) if f != root else f.name, "diffusers"))
    for p, e, depth in _walk(root):
        if not e.is_file() or p.suffix.lower() not in MODEL_SUFFIXES or any(f in p.parents for f in folders):
            continue
        parts = p.relative_to(root).parts[:-1]
        if any(part in CONTROLNET_DIRS for part in parts) or root.name in CONTROLNET_DIRS:
            continue  # a ControlNet, not a checkpoint: list_controlnets
        in_ckpt_dir = any(part in CHECKPOINT_DIRS for part in parts)
        if in_ckpt_dir or p.parent == root or root.name in CHECKPOINT_DIRS:
            out.append(_checkpoint_entry(p, root))
    if hf_cache is not None:
        out.extend(list_hf_cache(hf_cache))
    return sorted(out, key=lambda m: (m.layout, m.name.lower()))


def list_hf_cache(cache: str | Path) -> list[ModelEntry]:
    """Diffusers pipelines in a Hugging Face hub cache (latest snapshot by modification time)."""
    cache = Path(cache).expanduser()
    out = []
    for repo in sorted(cache.glob("models--*")):
        snaps = [s for s in (repo / "snapshots").glob("*") if (s / "model_index.json").is_file()]
        if snaps:
            snap = max(snaps, key=lambda s: s.stat().st_mtime)
            out.append(_folder_entry(snap, repo.name[len("models--"):].replace("--", "/"), "hf-cache"))
    return out


@dataclass
class ControlNetEntry:
    name: str  # the file stem (or folder name), as the extension lists it
    path: Path
    layout: str  # "file" (A1111 .pth/.safetensors) | "diffusers" (a folder with config.json)
    size: int
    short_hash: str | None  # A1111's old 8-hex hash of a file; None for a folder

    @property
    def title(self) -> str:
        """``name [hash]``: what /controlnet/model_list shows and what a unit's ``model`` names."""
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


def controlnet_hash(path: str | Path) -> str:
    """A1111's old short hash (``modules/hashes.py::model_hash`` / sd-webui-controlnet's model names): the
    first 8 hex digits of the sha256 of the 64 KiB at offset 1 MiB (empty for a smaller file, as A1111)."""
    import hashlib

    with open(path, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def _controlnet_roots(root: Path) -> list[Path]:
    """The ControlNet folders of a models root: ``root`` itself when it is one, ``root/{ControlNet,controlnet}``,
    ``root/models/...`` (an A1111/ComfyUI install) and the sibling of a checkpoints folder."""
    if root.name in CONTROLNET_DIRS:
        return [root]
    bases = [root, root / "models"] + ([root.parent] if root.name in CHECKPOINT_DIRS else [])
    found: list[Path] = []
    for base in bases:
        for name in CONTROLNET_DIRS:
            folder = base / name
            if folder.is_dir() and all(not folder.samefile(f) for f in found):
                found.append(folder)
    return found


def list_controlnets(root: str | Path) -> list[ControlNetEntry]:
    """The ControlNets of a models root, sorted by name: files with a model suffix (``files.MODEL_SUFFIXES``;
    read only for the hash, never unpickled) and diffusers ControlNet folders, one level deep."""
    out: list[ControlNetEntry] = []
    for folder in _controlnet_roots(Path(root).expanduser()):
        for p, e, depth in _walk(folder):
            if depth > 1:
                continue
            if e.is_file() and p.suffix.lower() in MODEL_SUFFIXES:
                out.append(ControlNetEntry(p.stem, p, "file", p.stat().st_size, controlnet_hash(p)))
            elif e.is_dir() and (p / "config.json").is_file() and _is_controlnet_config(p / "config.json"):
                size = sum(f.stat().st_size for f in p.iterdir() if f.is_file() and f.suffix.lower() in CHECKPOINT_SUFFIXES)
                out.append(ControlNetEntry(p.name, p, "diffusers", size, None))
    return sorted(out, key=lambda m: m.name.lower())


def _is_controlnet_config(path: Path) -> bool:
    try:
        return "ControlNet" in str(json.loads(path.read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return False
