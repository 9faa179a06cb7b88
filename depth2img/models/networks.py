"""The catalog of extra networks: LoRA and textual-inversion files, listed as A1111 lists them.

Where users keep them: A1111 ``models/Lora`` and ``embeddings/`` (beside ``models/``, at the webui root),
ComfyUI ``models/loras`` and ``models/embeddings``. :func:`network_dirs` finds those folders under a root
given to ``depth2img models`` (the webui/ComfyUI root or its ``models`` folder). A name is the file stem,
as a prompt uses it (``<lora:name:w>``, an embedding's name in the text), the same
:func:`~depth2img.models.files.files_by_stem` rule the prompt code resolves names with.

Short hashes are A1111's 12 hex digits: for a LoRA ``.safetensors`` the sha256 of the tensor data after
the header (kohya/addnet's hash, ``NetworkOnDisk.read_hash``), else of the whole file; for an embedding
the sha256 of the whole file (``Embedding.set_hash``). They are the same functions the infotext's
``Lora hashes`` / ``TI hashes`` come from. ``depth2img models`` and the server's ``/sdapi/v1/loras`` and
``/sdapi/v1/embeddings`` read this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Depth2ImgError
from .files import EMBEDDING_SUFFIXES, LORA_SUFFIXES, files_by_stem

LORA_DIRS = ("Lora", "loras")  # A1111, ComfyUI (under models/)
EMBEDDING_DIRS = ("embeddings",)  # A1111 (webui root), ComfyUI (under models/)
SHORT_HASH = 12  # A1111's shorthash for LoRAs and embeddings: hash[0:12]


@dataclass
class NetworkEntry:
    name: str  # the file stem: what a prompt names
    path: Path
    kind: str  # "lora" | "embedding"
    size: int
    metadata: dict[str, Any] = field(default_factory=dict)  # a LoRA's safetensors __metadata__ (kohya's ss_*)
    problem: str | None = None  # why the file cannot be read; None = readable

    @property
    def alias(self) -> str:
        """A1111's alias: the kohya ``ss_output_name`` in the metadata, else the name."""
        return str(self.metadata.get("ss_output_name") or self.name)

    def short_hash(self, cache_dir: str | Path | None = None) -> str:
        if self.kind == "lora":
            from ..prompts.lora import file_hash

            return file_hash(self.path)[:SHORT_HASH]
        from .cache import file_sha256

        return file_sha256(self.path, cache_dir)[:SHORT_HASH]


def _lora_metadata(path: Path) -> tuple[dict[str, Any], str | None]:
    if path.suffix.lower() != ".safetensors":
        return {}, None  # a pickle's metadata would need unpickling: a listing never does
    from safetensors import safe_open

    from .safe_load import read_safetensors_header

    try:
        read_safetensors_header(path)
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {}), None
    except Depth2ImgError as error:
        return {}, str(error)
    except OSError as error:
        return {}, f"{path.name} cannot be read ({error.strerror or error})"


def list_loras(folder: str | Path) -> list[NetworkEntry]:
    """The LoRA files of ``folder`` by name, with their safetensors metadata."""
    out = []
    for name, path in files_by_stem(Path(folder), LORA_SUFFIXES).items():
        metadata, problem = _lora_metadata(path)
        out.append(NetworkEntry(name, path, "lora", path.stat().st_size, metadata, problem))
    return out


def list_embeddings(folder: str | Path) -> list[NetworkEntry]:
    """The textual-inversion files of ``folder`` by name (not opened: :func:`embedding_info` reads one)."""
    return [NetworkEntry(name, path, "embedding", path.stat().st_size)
            for name, path in files_by_stem(Path(folder), EMBEDDING_SUFFIXES).items()]


def embedding_info(entry: NetworkEntry) -> dict[str, Any]:
    """A1111's ``EmbeddingItem`` (step, sd_checkpoint, sd_checkpoint_name, shape, vectors), read safely."""
    from ..prompts.embeddings import read_info

    return read_info(entry.path)


def network_dirs(root: str | Path) -> list[tuple[str, Path]]:
    """``[(kind, folder)]`` of the LoRA and embedding folders of an A1111 or ComfyUI tree at ``root``."""
    root = Path(root).expanduser()
    bases = [root, root / "models"] + ([root.parent] if root.name == "models" else [])
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for base in bases:
        for kind, names in (("lora", LORA_DIRS), ("embedding", EMBEDDING_DIRS)):
            for name in names:
                folder = base / name
                if folder.is_dir() and folder.resolve() not in seen:
                    seen.add(folder.resolve())
                    found.append((kind, folder))
    return found


def list_networks(root: str | Path) -> list[NetworkEntry]:
    """Every LoRA and embedding under an A1111/ComfyUI ``root``, LoRAs first, each sorted by name."""
    loras: list[NetworkEntry] = []
    embeddings: list[NetworkEntry] = []
    for kind, folder in network_dirs(root):
        if kind == "lora":
            loras.extend(list_loras(folder))
        else:
            embeddings.extend(list_embeddings(folder))
    return sorted(loras, key=lambda e: e.name.lower()) + sorted(embeddings, key=lambda e: e.name.lower())
