"""``compile``: a load option that runs the UNet through ``torch.compile`` (inductor).

The UNet is ~94 % of an image's FLOPs (docs/performance.md §1), so it is the one module compiled. Inductor
fuses the element-wise work around the convolutions and matmuls (GroupNorm + SiLU, bias + residual adds,
the attention's softmax scaling) and, on CUDA with ``mode="reduce-overhead"``, replays CUDA graphs
(diffusers' torch2.0 docs: A100 21.7 → 44.0 it/s). The math is the same, not bit-for-bit: the parity tests
allow 1/255 and tests/test_compile.py holds the compiled image to it against diffusers' pipeline.

What this wrapper adds over a bare ``torch.compile(unet)`` (the gap it fills):

- the eager module stays ``pipe.unet``: LoRA (peft swaps Linear layers for adapter layers) and DeepCache
  (swaps deep blocks' ``forward`` for one call) change the module between calls, which a compiled graph
  would either recompile for minutes or, worse, not notice; :meth:`Pipeline.unet_for` gives those runs the
  eager UNet, decided in one place;
- ``dynamic=False``: one static graph per input signature (CFG batch 2B, or B on the steps NGMS skips the
  unconditional pass), which is what CUDA graphs need and what inductor's CPU kernels are fastest at;
- the first call of every new input signature pays the compile (minutes for the full UNet on a 2-core CPU,
  seconds when inductor's FX-graph cache already holds it); that time is measured here and reported to the
  user as a note on the Result, so it is never mistaken for the step time.

The cache folder is inductor's own (``TORCHINDUCTOR_CACHE_DIR``, a process-wide environment variable): the
CLI points it at ``~/.cache/depth2img/inductor`` (cli/loading.py); the library never sets it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .errors import ModelLoadError


def check_compiler(device: torch.device) -> None:
    """Inductor's CPU kernels are C++ built at run time: refuse at load time, not at the first step, when
    no compiler is there (``torch._inductor.cpp_builder`` is where inductor itself looks for one)."""
    if device.type != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as error:  # noqa: BLE001 - inductor raises a plain RuntimeError here
        raise ModelLoadError(f"--compile on a CPU needs a C++ compiler (g++ or clang++): {error}") from error


class CompiledUNet:
    """``torch.compile(unet)`` called as the UNet, timing the first call of each input signature."""

    def __init__(self, unet: Any, device: torch.device, low_memory: bool = False) -> None:
        check_compiler(device)
        self.unet = unet
        self.compiled = torch.compile(unet, dynamic=False)  # inductor's default mode (CUDA graphs: not tested here)
        # On a CPU: inductor's "freezing" (weights as constants, prepacked for oneDNN's convolutions and
        # matmuls; PyTorch's recommended setting for CPU inference): the compiled UNet call took 0.55x the
        # eager one here, while without it the compiled call was 1.6-2x *slower* (benchmarks/bench_perf.py
        # --compile). It is read from inductor's global config when a graph compiles, and torch.compile's
        # ``options={"freezing": True}`` did not turn it on (measured: same speed as without), so each call of
        # the compiled module runs inside ``config.patch`` (set for the call, restored after it) instead of
        # changing the process's config for good.
        self.freezing = device.type == "cpu"
        self.first_calls: dict[tuple[Any, ...], float] = {}  # signature -> seconds of its first call
        self.pending: list[str] = []  # notes not yet handed to a Result
        if self.freezing and low_memory:  # said, not hidden: the two options pull in opposite directions
            self.pending.append("--compile with --low-memory: on a CPU the compiled UNet keeps a second, prepacked copy "
                                "of its weights (SD2-depth's UNet alone: 7.5 instead of 3.9 GiB resident)")

    def __getattr__(self, name: str) -> Any:  # config, dtype, device... as the UNet's
        return getattr(self.unet, name)

    def __call__(self, sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        hidden = kwargs.get("encoder_hidden_states")
        signature = (tuple(sample.shape), sample.dtype, None if hidden is None else tuple(hidden.shape),
                     torch.is_autocast_enabled(sample.device.type))
        if signature in self.first_calls:
            return self._call(sample, timestep, *args, **kwargs)
        start = time.perf_counter()
        out = self._call(sample, timestep, *args, **kwargs)
        seconds = self.first_calls[signature] = time.perf_counter() - start
        self.pending.append(f"torch.compile: the UNet's first call for input {tuple(sample.shape)} took {seconds:.1f} s "
                            "(compiling, or loading the compiled kernels from inductor's cache); later calls reuse it")
        return out

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        if not self.freezing:
            return self.compiled(*args, **kwargs)
        from torch._inductor import config

        with config.patch(freezing=True):
            return self.compiled(*args, **kwargs)

    def take_notes(self) -> list[str]:
        notes, self.pending = self.pending, []
        return notes
