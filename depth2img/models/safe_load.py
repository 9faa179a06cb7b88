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
import math
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


MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own cap
MAX_TENSORS = 100_000  # the SD2-depth file has 1,608; guards against header-bloat CPU/RAM DoS
MAX_TENSOR_NDIM = 8

# safetensors dtype name -> (torch dtype, bytes per element)
_ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}


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


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Validate a safetensors header and return ``{name: {"dtype", "shape", "data_offsets"}}``.

    Raises :class:`CorruptCheckpointError` naming the first problem; nothing is allocated beyond the
    header itself, whose size is checked against the file size and the 100 MB cap before it is read.
    """
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size < 8:
        raise CorruptCheckpointError(f"{name}: {size} bytes is too short for a safetensors file")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n < 2 or n > MAX_HEADER_BYTES or n > size - 8:
            raise CorruptCheckpointError(
                f"{name}: safetensors header length {n} is impossible "
                f"(file is {size} bytes, the format caps headers at {MAX_HEADER_BYTES} bytes)"
            )
        raw = f.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise CorruptCheckpointError(f"{name}: safetensors header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpointError(f"{name}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{name}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise CorruptCheckpointError(f"{name}: safetensors __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise CorruptCheckpointError(f"{name}: {len(header)} tensors in the header (limit {MAX_TENSORS})")
    data_size = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CorruptCheckpointError(f"{name}: bad header entry for {key!r}")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise CorruptCheckpointError(f"{name}: tensor {key!r} has unsupported dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_TENSOR_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)
        ):
            raise CorruptCheckpointError(f"{name}: tensor {key!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise CorruptCheckpointError(f"{name}: tensor {key!r} has invalid data_offsets {offs!r}")
        begin, end = offs
        if not 0 <= begin <= end <= data_size:
            raise CorruptCheckpointError(
                f"{name}: tensor {key!r} lies at bytes {begin}..{end}, outside the {data_size}-byte data section"
            )
        nbytes = math.prod(shape) * _ST_DTYPES[dtype][1]
        if nbytes != end - begin:
            raise CorruptCheckpointError(
                f"{name}: tensor {key!r} is {dtype}{shape} = {nbytes} bytes but spans {end - begin} bytes"
            )
        spans.append((begin, end, key))
    spans.sort()
    pos = 0
    for begin, end, key in spans:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap at byte {pos}"
            raise CorruptCheckpointError(f"{name}: tensor {key!r} {what} (offsets must be contiguous)")
        pos = end
    if pos != data_size:
        raise CorruptCheckpointError(
            f"{name}: tensors cover {pos} of {data_size} data bytes (trailing bytes are not allowed)"
        )
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
        raise CorruptCheckpointError(f"{Path(path).name}: safetensors could not read it ({e})") from None
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


def _unsafe_message(path: Path, err: Exception) -> str:
    text = str(err)
    m = re.search(r"(?i)unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", text)
    what = f"`{m.group(1)}`" if m and m.group(1) else "an object that is not a tensor or a plain container"
    return (
        f"refused to load {path.name}: the pickle asks for {what}, which is outside the weights-only "
        "allow-list, so it may run code. Nothing was executed. Use a .safetensors copy, or convert it with "
        "a tool you trust."
    )


def load_pickle_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` of a ``.ckpt``/``.pt`` with the Lightning/numpy stubs allowed.

    Zip-format files are memory-mapped (``mmap=True``); legacy (pre-1.6, non-zip) files are read whole.
    """
    path = Path(path)
    is_zip = zipfile.is_zipfile(path)
    with _PICKLE_LOCK, torch.serialization.safe_globals(_extra_safe_globals()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" in str(e) or "weights_only" in str(e):
                raise UnsafeCheckpointError(_unsafe_message(path, e)) from None
            raise CorruptCheckpointError(f"{path.name}: not a readable pickle checkpoint ({e})") from None
        except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError) as e:
            raise CorruptCheckpointError(
                f"{path.name}: not a readable checkpoint (truncated or not a PyTorch file?): {str(e)[:200]}"
            ) from None


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


def find_non_finite(sd: dict[str, torch.Tensor], keys: Any = None) -> list[str]:
    """Names of floating-point tensors holding NaN or +/-Inf (all keys, or only ``keys``)."""
    bad = []
    for k in sd if keys is None else keys:
        t = sd[k]
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append(k)
    return bad
