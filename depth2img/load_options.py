"""The load options every command that loads a model shares, declared once: generate, batch, video (cli/options.py
re-exports them) and ``depth2img serve`` (server/command.py). Outside the cli package so the server's command can
import them without importing the CLI app (which imports the server's command: ``python -m depth2img.server``
failed on that cycle)."""

from __future__ import annotations

from typing import Annotated

import typer

LowMemoryOpt = Annotated[bool, typer.Option("--low-memory", help="VAE tiling and slicing (1024-2048 px decodes fit); "
                                            "the text encoder and depth estimator are kept out of memory between uses "
                                            "(CUDA: on the CPU; CPU/MPS: released, restored from a temporary file).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="Run the UNet through torch.compile (same math, not bit-for-bit; faster steps): the first picture "
    "of each size compiles first (minutes on a CPU; about half that in a later run, from the cache in "
    "~/.cache/depth2img/inductor or $TORCHINDUCTOR_CACHE_DIR). Runs with DeepCache or a LoRA use the plain UNet.")]
