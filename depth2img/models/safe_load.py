"""Read a checkpoint file into a flat ``{name: tensor}`` state dict without ever running code from it.

* ``.safetensors``: the header is validated here *before* anything is allocated (the rules of the
  safetensors format README: 8-byte little-endian header length, a JSON object header capped at 100 MB,
  offsets inside the file, contiguous, non-overlapping and covering the whole data section, dtype x shape =
  byte length, no duplicate names). Only then is the file opened with ``safetensors.safe_open``, which
  memory-maps it (tensors are backed by the page cache until a dtype cast or a copy touches them).
* ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: a pickle. Loaded only by ``torch.load(weights_only=True)``
  inside the smallest extra allow-list the real Stable Diffusion / Lightning files need (A1111's
  ``modules/safe.py`` list, minus everything torch already allows): a *stub* for Lightning's
  ``ModelCheckpoint`` class (old Lightning pickles the class object as a dict key in ``callbacks``; the stub
  is an empty class, so nothing from Lightning is imported or run) and numpy's scalar/dtype rebuilders. A
  refused pickle raises :class:`~depth2img.errors.UnsafeCheckpointError`; there is no unsafe fallback.

Real files may carry ``model_ema.decay`` / ``model_ema.num_updates`` (0-d tensors) inside ``state_dict`` and
``global_step``/``epoch``/... next to it; the wrapper is dropped and 0-d tensors are kept (mapping code lists
them as ignored). NaN/Inf weights are found by :func:`find_non_finite` (the loader reports them).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CorruptCheckpointError, ModelLoadError, UnsafeCheckpointError
from .files import CHECKPOINT_SUFFIXES, PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES


MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own cap (the library enforces it too)
MAX_TENSORS = 100_000  # the SD2-depth file has 1,608; guards against header-bloat CPU/RAM DoS
_SNIFF_BYTES = 4096
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTO = 0x80  # pickle PROTO opcode: torch's legacy format and raw pickles (protocol >= 2) start with it


# --------------------------------------------------------------------------------------------------
# what a file is not (one sentence instead of a parser's error)
# --------------------------------------------------------------------------------------------------


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
        text = head[: error.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f" for c in text)


def _not_a_file_of_any_kind(path: Path, head: bytes, size: int) -> str | None:
    """The sentence for an empty or text file (whatever its suffix), else None."""
    if size == 0:
        return f"{path.name} is empty (0 bytes): not a checkpoint"
    if _looks_like_text(head) and not (size <= len(head) and head.rstrip().endswith(b".")):
        # (a protocol-0 pickle is printable text ending in the STOP opcode "."; torch judges those)
        return f"{path.name} is a text file, not a checkpoint"
    return None


def _head(path: Path) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        return f.read(_SNIFF_BYTES), os.fstat(f.fileno()).st_size


# --------------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate name {k!r}")
        out[k] = v
    return out


def _safetensors_reason(error: Exception) -> str:
    return str(error).replace("Error while deserializing header: ", "").splitlines()[0][:160]


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Validate a safetensors file's header and return ``{name: {"dtype", "shape", "data_offsets"}}``.

    Checked here, because the safetensors library does not: an empty or text file, or a first 8 bytes that
    cannot be a header length (said in one sentence), duplicate tensor names (serde keeps the last) and
    the tensor count (no cap there). Everything else - the 100 MB header cap, UTF-8 JSON, dtype names,
    shapes and their overflow, contiguous offsets covering the data, string-only ``__metadata__`` - is
    the library's own validation when it opens (memory-maps) the file, before any tensor is read.
    Raises :class:`CorruptCheckpointError` naming the first problem.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    name = path.name
    head, size = _head(path)
    problem = _not_a_file_of_any_kind(path, head, size)
    if problem:
        raise CorruptCheckpointError(problem)
    n = int.from_bytes(head[:8], "little") if size >= 8 else 0
    if size < 8 or n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
        raise CorruptCheckpointError(
            f"{name} is not a safetensors file: its first 8 bytes give a header length of {n}, "
            f"impossible for a {size}-byte file"
        )
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpointError(f"{name} is not a valid safetensors file: unreadable header ({e})") from None
    if isinstance(header, dict):
        header.pop("__metadata__", None)
        if len(header) > MAX_TENSORS:
            raise CorruptCheckpointError(f"{name}: {len(header)} tensors in the header (limit {MAX_TENSORS})")
        ends = [i["data_offsets"][1] for i in header.values() if isinstance(i, dict) and isinstance(i.get("data_offsets"), list)
                and len(i["data_offsets"]) == 2 and isinstance(i["data_offsets"][1], int)]
        if ends and max(ends) > size - 8 - n:  # the library says "not fully covered"; say what happened
            raise CorruptCheckpointError(
                f"{name} is truncated: its header describes {max(ends)} bytes of tensor data, the file holds {size - 8 - n}"
            )
    try:
        with safe_open(str(path), framework="pt", device="cpu"):
            pass  # the library's header validation; no tensor data is touched
    except SafetensorError as e:
        raise CorruptCheckpointError(f"{name} is not a valid safetensors file: {_safetensors_reason(e)}") from None
    return header


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Validated, memory-mapped load of a ``.safetensors`` file onto the CPU."""
    from safetensors import safe_open

    header = read_safetensors_header(path)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in header:
                out[key] = f.get_tensor(key)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CorruptCheckpointError(f"{Path(path).name}: safetensors could not read it ({_safetensors_reason(e)})") from None
    return out


# --------------------------------------------------------------------------------------------------
# pickle (.ckpt / .pt)
# --------------------------------------------------------------------------------------------------


class _LightningModelCheckpointStub:
    """Stand-in for ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``.

    Old Lightning checkpoints use the callback *class* as a key of ``checkpoint["callbacks"]``; the stub
    lets that key unpickle without importing Lightning. It has no behaviour.
    """


def _extra_safe_globals() -> list[tuple[Any, str]]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    out: list[tuple[Any, str]] = [
        (_LightningModelCheckpointStub, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        (_LightningModelCheckpointStub, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
        (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
        (core.multiarray.scalar, "numpy._core.multiarray.scalar"),
        (np.dtype, "numpy.dtype"),
    ]
    for dt in ("Float64DType", "Float32DType", "Int64DType"):
        cls = getattr(getattr(np, "dtypes", None), dt, None)
        if cls is not None:
            out.append((cls, f"numpy.dtypes.{dt}"))
    return out


# torch.serialization.safe_globals mutates a process-wide set: serialise pickle loads.
_PICKLE_LOCK = threading.Lock()


def _unsafe_message(path: Path, err: Exception | str) -> str:
    text = str(err)
    m = re.search(r"(?i)unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", text)
    what = f"`{m.group(1)}`" if m and m.group(1) else "an object that is not a tensor or a plain container"
    return (
        f"refused to load {path.name}: the pickle asks for {what}, which is outside the weights-only "
        "allow-list, so it may run code. Nothing was executed. Use a .safetensors copy, or convert it with "
        "a tool you trust."
    )


def check_pickle_header(path: str | os.PathLike[str]) -> bool:
    """Raise :class:`CorruptCheckpointError` if ``path`` cannot be a PyTorch file (empty, text, no zip or
    pickle header, a zip without its directory); return whether it is the zip format. Nothing is unpickled."""
    path = Path(path)
    head, size = _head(path)
    problem = _not_a_file_of_any_kind(path, head, size)
    if problem:
        raise CorruptCheckpointError(problem)
    is_zip = head.startswith(_ZIP_MAGIC)
    if is_zip and not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"{path.name} is a truncated or damaged PyTorch zip checkpoint (no zip directory)")
    if not is_zip and head[0] != _PICKLE_PROTO and not _looks_like_text(head):
        raise CorruptCheckpointError(f"{path.name} is not a PyTorch checkpoint (no zip or pickle header)")
    return is_zip


def load_pickle_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` of a ``.ckpt``/``.pt`` with the Lightning/numpy stubs allowed.

    Zip-format files are memory-mapped (``mmap=True``); legacy (pre-1.6, non-zip) files are read whole.
    A file that is not a PyTorch file at all (empty, text, no zip or pickle header) is named as such before
    torch sees it; :class:`UnsafeCheckpointError` is kept for real pickles that ask for a forbidden global.
    """
    path = Path(path)
    is_zip = check_pickle_header(path)
    with _PICKLE_LOCK, torch.serialization.safe_globals(_extra_safe_globals()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as e:
            if _FORBIDDEN.search(str(e)):
                raise UnsafeCheckpointError(_unsafe_message(path, e)) from None
            wanted = None if is_zip else _pickle_global(path)
            if wanted:  # a well-formed pickle asking for a global; torch stopped earlier (at a protocol-4 frame)
                raise UnsafeCheckpointError(_unsafe_message(path, f"Unsupported global: {wanted}")) from None
            raise CorruptCheckpointError(f"{path.name} is a damaged PyTorch checkpoint ({_first_line(e)})") from None
        except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, IndexError) as e:
            raise CorruptCheckpointError(f"{path.name} is a truncated or damaged PyTorch checkpoint ({_first_line(e)})") from None


# torch's weights-only unpickler refusing a global or a call: the one case that is a safety matter
_FORBIDDEN = re.compile(r"(?i)unsupported global|unsupported class|unrecognized function|not an allowed global")


def _pickle_global(path: Path) -> str | None:
    """The first global a raw pickle asks for ("" if it asks for none), read with ``pickletools`` (which
    only decodes opcodes; nothing is built or run); ``None`` if the file is not a well-formed pickle."""
    import pickletools

    strings: list[str] = []
    found: str | None = None
    try:
        with open(path, "rb") as f:
            for opcode, arg, _pos in pickletools.genops(f):
                if opcode.name == "GLOBAL" and found is None:
                    found = str(arg).replace(" ", ".")
                elif opcode.name == "STACK_GLOBAL" and found is None and len(strings) >= 2:
                    found = f"{strings[-2]}.{strings[-1]}"
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - any decoding failure means: not a pickle
        return None
    return found if found is not None else ""


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------


def unwrap_state_dict(obj: Any, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Take the flat tensor dict out of a loaded pickle: ``obj["state_dict"]`` if present, else ``obj``.

    Top-level bookkeeping next to ``state_dict`` (``global_step``, ``epoch``, callbacks...) is dropped; every
    value inside the state dict must be a tensor (0-d tensors such as ``model_ema.decay`` included).
    """
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{name}: expected a dict of tensors, found {type(obj).__name__}")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{name}: 'state_dict' is a {type(sd).__name__}, not a dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ModelLoadError(f"{name}: state dict key {k!r} is not a string")
        if isinstance(v, torch.Tensor):
            out[k] = v
        elif sd is obj and k in ("global_step", "epoch", "pytorch-lightning_version"):
            continue  # a flat dict that still carries Lightning's bookkeeping next to the tensors
        else:
            raise ModelLoadError(f"{name}: state dict entry {k!r} is a {type(v).__name__}, not a tensor")
    if not out:
        raise ModelLoadError(f"{name}: the checkpoint holds no tensors")
    return out


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read any supported checkpoint file into a flat CPU state dict. No code from the file runs."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return unwrap_state_dict(load_pickle_checkpoint(path), path.name)
    raise ModelLoadError(
        f"{path.name}: unknown checkpoint type {suffix!r}; expected one of {', '.join(CHECKPOINT_SUFFIXES)}"
    )


_MINMAX_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def is_finite(t: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN and no +/-Inf, in one read-only pass.

    ``torch.aminmax`` propagates NaN and returns -Inf / +Inf as the min / max when present, so both are
    finite exactly when every element is: the same answer as ``torch.isfinite(t).all()``, without the
    bool tensor of ``numel`` bytes that one allocates, fills and reads again (11.7 s against 1.2 s for the
    5.7 GB SD2-depth file, 1 thread; docs/performance.md §6). Other float types (float8) use isfinite.
    """
    if t.dtype in _MINMAX_DTYPES:
        lo, hi = torch.aminmax(t)
        return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))
    return bool(torch.isfinite(t).all())


def find_non_finite(sd: dict[str, torch.Tensor], keys: Any = None) -> list[str]:
    """Names of floating-point tensors holding NaN or +/-Inf (all keys, or only ``keys``)."""
    bad = []
    for k in sd if keys is None else keys:
        t = sd[k]
        if t.is_floating_point() and t.numel() and not is_finite(t):
            bad.append(k)
    return bad
