"""Loading a model for a command: one spinner, the checkpoint cache folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .handling import err


def checkpoint_cache() -> Path | None:
    """Where a .ckpt is converted once to safetensors: $DEPTH2IMG_CACHE (empty: off), else ~/.cache/depth2img."""
    configured = os.environ.get("DEPTH2IMG_CACHE")
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    return Path.home() / ".cache" / "depth2img" / "checkpoints"


def use_inductor_cache() -> Path:
    """Point torch.compile's kernel cache at ~/.cache/depth2img/inductor unless $TORCHINDUCTOR_CACHE_DIR says
    where: an environment variable, so process-wide, so set only by the CLI (or a worker process it owns)."""
    folder = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "depth2img" / "inductor"))
    return Path(folder)


def load(model: str, device: str, dtype: str, depth_model: str | None, controlnet: str | None = None,
         low_memory: bool = False, threads: int | None = None, compile: bool = False) -> Any:
    """``load_pipeline`` behind one spinner instead of the libraries' per-component progress bars.

    ``threads``: torch's intra-op thread count, a process-wide setting, so only the CLI (which owns its
    process) sets it, never the library (benchmarks/bench_perf.py --scaling measures 1 thread vs all).
    """
    import diffusers
    import torch
    import transformers

    if threads is not None:
        torch.set_num_threads(threads)
    if compile:
        use_inductor_cache()
    from ..pipeline import load_pipeline

    diffusers.utils.logging.disable_progress_bar()  # CLI-only setting: this process is the CLI
    transformers.utils.logging.disable_progress_bar()
    with err.status(f"loading {model}...", spinner="dots"):
        return load_pipeline(model, device=device, dtype=dtype, depth_model=depth_model, cache_dir=checkpoint_cache(),
                             controlnet=controlnet, low_memory=low_memory, compile=compile)


def run_with_progress(pipe: Any, request: Any) -> Any:
    """Generate with a step progress bar on stderr (transient: nothing is left behind when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("denoising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
        transient=True, disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("denoise", total=None)

        def on_step(info: Any) -> None:
            progress.update(task, total=info.total, completed=info.step + 1)

        return pipe.generate(request, callback=on_step)
