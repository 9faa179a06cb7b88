"""``low_memory``: a load option (not per request) for big images, small GPUs and small machines.

- VAE tiling and slicing: diffusers' own ``AutoencoderKL.enable_tiling`` / ``enable_slicing``. Tiles of
  the VAE's ``sample_size`` overlap by a quarter and are blended linearly, so a 1024-2048 px decode needs
  the memory of one tile instead of the whole image; it is approximate at the seams (diffusers'
  memory docs; tests/test_lowmem.py states the tolerance). Slicing decodes a batch one image at a time.
- On CUDA the text encoder(s) and the depth estimator, needed once per request before denoising, live on
  the CPU and visit the GPU only while they run (accelerate's ``cpu_offload`` does the same per forward
  call with hooks; moving the whole module once per use is simpler and as fast for one call).
- On CPU and MPS there is no second memory to park them in, so they are *released*: right after load
  their parameters and buffers are written once to a private temporary safetensors file (the "spill") and
  replaced by meta tensors (no memory); just before each use they are *restored* from it with the
  project's validated, memory-mapped loader (``models.safe_load.load_safetensors``: zero copy, the
  tensors are the file's pages), and released again right after. Freed memory really returns to the
  OS: dropping the last tensor of the file unmaps it. So the text encoder and the depth estimator are
  never resident at the same time, and neither is resident while the UNet denoises (from the second
  request on, the UNet's mapped pages are still resident while the text encoder runs: that peak is
  UNet + VAE + text encoder; docs/performance.md §3, run D).
  With the exact-mode caches (caches.py) a repeated prompt or photo restores nothing at all.

Gap filled: accelerate's ``cpu_offload``/``disk_offload`` hooks move weights between devices or read an
offload folder through per-forward hooks that reload every submodule on every call (and keep accelerate's
hook state on the module); diffusers' ``enable_model_cpu_offload``/``enable_sequential_cpu_offload`` move
to and from an accelerator and do nothing for a CPU-only pipeline. Neither frees a CPU module's memory
between uses. Writing the module's *own* tensors (not the original file) needs no key conversion to come
back, and works for every way a module was loaded (folder, single file, tiny, a user's swap).

Invariants (tests/test_lowmem.py): the restored tensors are bit-identical; the same Parameter tying is
kept; each tensor keeps its autograd version counter across release/restore (torch's documented tool for
"free its memory by storing it elsewhere, and re-populate it", ``_unsafe_preserve_version_counter``), so
the caches' module identity (caches.module_identity) is unchanged and a cache still hits; a weight changed
in place while resident bumps its counter as usual, changes the cache key, and is spilled again before the
next release. The spill folder (``tempfile.mkdtemp``: ``$TMPDIR``, which must not be a RAM disk for this
to save memory) is removed when the pipeline is garbage-collected (``weakref.finalize``; no global state).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RELEASED = ("text_encoder", "text_encoder_2", "depth_estimator")  # the pipeline attributes low_memory manages


def offloads(device: torch.device) -> bool:
    return device.type == "cuda"


def enable_low_memory(pipe: Any) -> Releaser | None:
    """Turn on VAE tiling/slicing; on CUDA park the text encoder(s) and depth estimator on the CPU, elsewhere
    spill and release them now (the returned :class:`Releaser`, which the pipeline keeps)."""
    pipe.vae.enable_tiling()
    pipe.vae.enable_slicing()
    modules = [getattr(pipe, name, None) for name in RELEASED]
    if offloads(pipe.device):
        for module in modules:
            if module is not None:
                torch.nn.Module.to(module, device="cpu")
        return None
    releaser = Releaser(pipe)
    for module in modules:
        if module is not None:
            releaser.release(module)
    return releaser


@contextmanager
def on_device(pipe: Any, module: Any, device: torch.device) -> Iterator[None]:
    """``module`` usable on ``device`` for the block: with low memory, on CUDA moved there from the CPU and
    back after it; elsewhere restored from its spill and released after it. Otherwise: nothing."""
    if not getattr(pipe, "low_memory", False) or module is None:
        yield
        return
    if not offloads(device):
        with held(pipe, module):
            yield
        return
    torch.nn.Module.to(module, device=device)
    try:
        yield
    finally:
        torch.nn.Module.to(module, device="cpu")
        torch.cuda.empty_cache()


@contextmanager
def held(pipe: Any, module: Any, lazy: bool = False) -> Iterator[None]:
    """``module`` restored for the block if the pipeline releases it (CPU/MPS low memory), released after the
    outermost block ends (blocks nest, threads may share them); a no-op otherwise. ``lazy``: not restored
    here, only kept once an inner block restored it (a prompt and its negative: at most one restore, none
    when both come from the cache)."""
    releaser = getattr(pipe, "releaser", None)
    if releaser is None or module is None:
        yield
        return
    releaser.hold(module, restore=not lazy)
    try:
        yield
    finally:
        releaser.drop(module)


Tensor = torch.Tensor
Slot = tuple[torch.nn.Module, str, bool]  # (owner module, attribute name, is a parameter)


@dataclass
class _Spill:
    """One released module: its spill file and the state it must come back in."""

    module: torch.nn.Module
    path: Path
    slots: dict[str, list[Slot]] = field(default_factory=dict)  # unique tensor name -> every place it sits
    versions: dict[str, int] = field(default_factory=dict)  # name -> autograd version counter when spilled
    grads: dict[str, bool] = field(default_factory=dict)  # name -> requires_grad of a parameter
    devices: dict[str, torch.device] = field(default_factory=dict)
    resident: dict[str, int] = field(default_factory=dict)  # name -> id of the tensor restored (to see swaps)
    users: int = 0
    released: bool = False


class Releaser:
    """Spill, release and restore whole modules of one pipeline (see the module docstring)."""

    def __init__(self, owner: Any) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="depth2img-lowmem-"))
        # removed with its pipeline (garbage collection or interpreter exit), not by a process-wide atexit list
        self._cleanup = weakref.finalize(owner, shutil.rmtree, str(self.folder), True)
        self._owner = weakref.ref(owner)
        self._lock = threading.RLock()
        self._spills: dict[int, _Spill] = {}
        self._written = 0
        self.restores = 0  # how many times a module came back (tests and benchmarks read it)

    def is_released(self, module: torch.nn.Module) -> bool:
        spill = self._spill_of(module)
        return spill is not None and spill.released

    def hold(self, module: torch.nn.Module, restore: bool = True) -> None:
        with self._lock:
            spill = self._spill_of(module) or self._write(module)  # a swapped-in module: spilled on first use
            if spill.released and restore:
                self._restore(spill)
            spill.users += 1

    def drop(self, module: torch.nn.Module) -> None:
        with self._lock:
            spill = self._spill_of(module)
            if spill is not None:
                spill.users = max(spill.users - 1, 0)
            self.release(module)  # a no-op while another block still holds it

    def release(self, module: torch.nn.Module) -> None:
        """Replace ``module``'s tensors by meta tensors, spilling them first unless the spill is current."""
        with self._lock:
            spill = self._spill_of(module)
            if spill is not None and (spill.released or spill.users > 0):
                return
            if spill is None or self._changed(spill):
                spill = self._write(module)
            with torch.inference_mode(False):
                for name, slots in spill.slots.items():
                    current = _get(slots[0])
                    meta = torch.empty_like(current, device="meta")
                    self._put(spill, name, meta)
            spill.released, spill.resident = True, {}

    # -- internals -----------------------------------------------------------------------------------

    def _spill_of(self, module: torch.nn.Module) -> _Spill | None:
        spill = self._spills.get(id(module))
        return spill if spill is not None and spill.module is module else None

    def _write(self, module: torch.nn.Module) -> _Spill:
        from safetensors.torch import save_file

        slots: dict[str, list[Slot]] = {}
        first: dict[int, str] = {}  # id(tensor) -> its first name: tied tensors are stored once
        for owner_name, owner in module.named_modules(remove_duplicate=False):
            for is_param, table in ((True, owner._parameters), (False, owner._buffers)):
                for leaf, tensor in table.items():
                    if tensor is None:
                        continue
                    name = first.setdefault(id(tensor), f"{owner_name}.{leaf}" if owner_name else leaf)
                    slots.setdefault(name, []).append((owner, leaf, is_param))
        self._written += 1
        path = self.folder / f"{self._written}.safetensors"
        tensors = {name: _get(s[0]) for name, s in slots.items()}
        save_file({name: t.detach().contiguous() for name, t in tensors.items()}, str(path))
        spill = _Spill(module, path, slots,
                       versions={n: t._version for n, t in tensors.items()},
                       grads={n: t.requires_grad for n, t in tensors.items()},
                       devices={n: t.device for n, t in tensors.items()},
                       resident={n: id(t) for n, t in tensors.items()})
        old = self._spills.get(id(module))
        if old is not None:
            old.path.unlink(missing_ok=True)
        self._spills[id(module)] = spill
        owner = self._owner()
        if owner is not None:  # forget modules the pipeline no longer has (a user swapped one out)
            current = {id(getattr(owner, n, None)) for n in RELEASED} | {id(module)}
            for key in [k for k in self._spills if k not in current]:
                self._spills.pop(key).path.unlink(missing_ok=True)
        return spill

    def _changed(self, spill: _Spill) -> bool:
        """A tensor replaced or changed in place since it was spilled/restored, or the module rebuilt."""
        for name, slots in spill.slots.items():
            for slot in slots:
                tensor = _get(slot)
                if tensor is None or id(tensor) != spill.resident.get(name) or tensor._version != spill.versions[name]:
                    return True
        current = sum(1 for m in spill.module.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
        return current != sum(len(s) for s in spill.slots.values())

    def _restore(self, spill: _Spill) -> None:
        from .models.safe_load import load_safetensors

        loaded = load_safetensors(spill.path)  # memory-mapped: no copy on the CPU
        with torch.inference_mode(False):
            for name in spill.slots:
                tensor = loaded.pop(name)
                device = spill.devices[name]
                self._put(spill, name, tensor if device.type == "cpu" else tensor.to(device))
        spill.resident = {name: id(_get(slots[0])) for name, slots in spill.slots.items()}
        spill.released = False
        self.restores += 1

    def _put(self, spill: _Spill, name: str, tensor: Tensor) -> None:
        """Put ``tensor`` in every slot of ``name`` (tying kept), with the spilled version counter."""
        value: Tensor = torch.nn.Parameter(tensor, requires_grad=spill.grads[name]) if spill.slots[name][0][2] else tensor
        torch._C._autograd._unsafe_set_version_counter((value,), (spill.versions[name],))
        for owner, leaf, is_param in spill.slots[name]:
            (owner._parameters if is_param else owner._buffers)[leaf] = value


def _get(slot: Slot) -> Any:
    owner, leaf, is_param = slot
    return (owner._parameters if is_param else owner._buffers).get(leaf)
