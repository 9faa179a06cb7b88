"""The ``--executor`` options, declared once: batch, video (cli/options.py re-exports them) and
``depth2img serve`` (server/command.py) use these. Outside the cli package so the server's command can
import them without importing the CLI app (which imports the server's command)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ExecutorOpt = Annotated[str, typer.Option(
    "--executor", help="local (this process) or ray (a pool of Ray actors, each loading --model once: "
    "pip install 'depth2img[ray]'). serve: the actors drain the job queue (models at the same paths on every node). "
    "batch/video: inputs and outputs must be on storage every Ray node sees. A video "
    "on ray: the depth pass runs here, frames of --temporal none/fixed-noise render in parallel on the actors; "
    "fusion and --color-coherence (each frame needs the one before) render in order in this process.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="The Ray cluster: auto (the one `ray start` runs here) or ray://HOST:PORT "
    "(default: $RAY_ADDRESS, else a local Ray started and stopped for this run).")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", help="Ray actors, each with its own copy of the model (default: one per GPU with "
    "--gpus-per-worker, else one per CPU of the cluster).")]
GpusPerWorkerOpt = Annotated[float, typer.Option(
    "--gpus-per-worker", help="GPUs each Ray actor reserves (1: one actor per GPU; 0.5: two share one).")]
MaxFailuresOpt = Annotated[Optional[int], typer.Option(
    "--max-failures", help="Stop the run once more than N items failed (default: never stop; every "
    "failure is recorded and the rest goes on).")]
