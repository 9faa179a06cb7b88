"""Local cache: a pickle checkpoint is converted once to a memory-mappable ``.safetensors`` copy.

Entries are named by the sha256 of the source file (A1111's full hash; its first 10 hex digits are the
short hash shown in infotexts). An ``index.json`` maps (absolute path, size, mtime_ns) to that hash, so a
later load of an unchanged file needs one ``stat`` and no hashing; a changed file misses and is re-hashed.
The cached copy is an ordinary flat original-layout safetensors file (loadable and convertible itself).
Writes go through :func:`depth2img.outputs.atomic_output` (unique temp name, fsync, rename); a damaged
cache entry fails safetensors validation and is rebuilt.

A cache entry whose every floating-point tensor was found finite gets a marker beside it
(``<entry>.finite.json``, :func:`mark_verified_finite`), so later starts skip the full read of the
finite check (:func:`verified_finite`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from ..errors import CorruptCheckpointError
from ..outputs import atomic_output, atomic_write_bytes
from .safe_load import MAX_HEADER_BYTES, load_pickle_checkpoint, read_safetensors_header, unwrap_state_dict

_LOCK = threading.Lock()


def sha256_file(path: str | Path, chunk: int = 16 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _read_index(cache_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((cache_dir / "index.json").read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


SHORT_HASH_LENGTH = 10  # A1111 modules/hashes.py: sha256 of the whole file, first 10 hex digits
_MEMO: dict[str, str] = {}  # fingerprint -> sha256, for loads without a cache folder (one per process)


def file_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """The sha256 of the whole file, computed once: remembered in ``cache_dir``'s index (keyed by path,
    size and mtime, as A1111's cache.json) or, without a cache folder, for the life of the process."""
    path = Path(path)
    key = _fingerprint(path)
    digest = _MEMO.get(key) or (lookup_hash(path, cache_dir) if cache_dir is not None else None)
    if digest is None:
        digest = sha256_file(path)
        if cache_dir is not None:
            remember_hash(path, cache_dir, digest)
    _MEMO[key] = digest
    return digest


def short_hash(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """A1111's short hash ("Model hash" in infotexts): the first 10 hex digits of the file's sha256."""
    return file_sha256(path, cache_dir)[:SHORT_HASH_LENGTH]


def lookup_hash(path: str | Path, cache_dir: str | Path) -> str | None:
    """The cached sha256 of ``path`` if the file is unchanged since it was hashed, else ``None``."""
    return _read_index(Path(cache_dir)).get(_fingerprint(Path(path)))


def remember_hash(path: str | Path, cache_dir: str | Path, digest: str) -> None:
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        index = _read_index(cache_dir)
        index[_fingerprint(Path(path))] = digest
        atomic_write_bytes(cache_dir / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())


def cached_checkpoint(path: str | Path, cache_dir: str | Path) -> tuple[Path, str]:
    """``(safetensors path to read, sha256 of the source)`` for a pickle checkpoint, converting on a miss.

    The pickle is read only through :func:`~depth2img.models.safe_load.load_pickle_checkpoint`.
    """
    from safetensors.torch import save_file

    path, cache_dir = Path(path), Path(cache_dir)
    digest = lookup_hash(path, cache_dir)
    if digest is not None:
        target = cache_dir / f"{digest[:16]}.safetensors"
        try:
            read_safetensors_header(target)
            return target, digest
        except (OSError, CorruptCheckpointError):
            pass  # missing or damaged: rebuild below
    digest = file_sha256(path, cache_dir)
    target = cache_dir / f"{digest[:16]}.safetensors"
    sd = unwrap_state_dict(load_pickle_checkpoint(path), path.name)
    with atomic_output(target) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"source": path.name, "sha256": digest})
    del sd
    remember_hash(path, cache_dir, digest)
    return target, digest


# --------------------------------------------------------------------------------------------------
# "every weight of this cache entry is finite", remembered
# --------------------------------------------------------------------------------------------------
# Trust model. The entry and its marker are files we wrote into our own cache folder; the marker records
# the entry's size, mtime_ns, inode and the sha256 of its safetensors header, and is honoured only while all
# four still match. That catches an entry that was rebuilt (atomic rename: new inode and mtime), replaced,
# truncated, re-saved by another tool, or edited in place (any write moves mtime). It does not catch
# someone who edits tensor bytes in place and then resets mtime: that takes intent, and an entry is not
# a code-execution risk either way (safetensors runs no code; the worst a non-finite weight does is a black
# image, which the pipeline's own non-finite output check then reports). A user's own files never get a
# marker: they are checked on every load.


def _marker(entry: Path) -> Path:
    return entry.with_name(entry.name + ".finite.json")


def _entry_state(entry: Path) -> dict[str, int | str]:
    """What the marker pins: size, mtime_ns, inode and the header's sha256 (the header length was
    validated by ``read_safetensors_header`` before any caller gets here)."""
    st = entry.stat()
    with open(entry, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(min(n, MAX_HEADER_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "header_sha256": hashlib.sha256(header).hexdigest()}


def verified_finite(entry: str | Path) -> bool:
    """Whether ``entry`` (a cache entry) carries a marker that still matches it: every floating-point tensor
    was finite when the marker was written and the file has not changed since (trust model above)."""
    entry = Path(entry)
    try:
        marker = json.loads(_marker(entry).read_text())
        return isinstance(marker, dict) and marker.get("finite") is True and marker.get("state") == _entry_state(entry)
    except (OSError, ValueError):
        return False


def mark_verified_finite(entry: str | Path) -> None:
    """Record that every floating-point tensor of the cache entry ``entry`` was just found finite. The
    marker only saves time: a cache folder that cannot take it (read-only, full) leaves loads checking."""
    entry = Path(entry)
    body = {"finite": True, "state": _entry_state(entry)}
    try:
        atomic_write_bytes(_marker(entry), json.dumps(body, indent=1, sort_keys=True).encode())
    except OSError:
        pass
