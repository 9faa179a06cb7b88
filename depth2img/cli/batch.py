"""``depth2img batch``: every generate option, applied to each file of a folder (or glob), resumable.

The options are generate's (GENERATE_FIELDS through request_options) minus ``--image``, which comes
from ``--input``; ``--depth``/``--mask`` given once apply to every item, ``--depth-dir``/``--mask-dir``
give each item its partner by file name. See depth2img/batch/folder.py for seeds, resume and the manifest.
Exit code 0 when every item succeeded or was skipped, 1 when some failed, 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..executors.base import ModelSpec
from ..request import GenerationRequest, flag
from .generate import GENERATE_FIELDS
from .handling import err, one_line_errors, say, warn
from .loading import load
from .options import (CompileOpt, DepthModelOpt, DeviceOpt, DtypeOpt, ExecutorOpt, GpusPerWorkerOpt, LowMemoryOpt,
                      MaxFailuresOpt, ModelOpt, RayAddressOpt, WorkersOpt, decode_inputs, executor_for, request_options, to_request_fields)

BATCH_FIELDS = tuple(name for name in GENERATE_FIELDS if name != "image")
PLACEHOLDER = "(each input)"


@one_line_errors
@request_options(BATCH_FIELDS)
def batch(
    model: ModelOpt,
    input: Annotated[str, typer.Option("--input", help="A folder (its files, not recursive) or a glob pattern such as 'photos/*.jpg'.")],
    output: Annotated[Path, typer.Option("--output", help="Output folder: one picture per input, named after it, plus manifest.jsonl.")],
    depth_dir: Annotated[Optional[Path], typer.Option("--depth-dir", help="Each item's own depth map: the file with the input's name (any extension).")] = None,
    mask_dir: Annotated[Optional[Path], typer.Option("--mask-dir", help="Each item's inpainting mask: the file with the input's name (any extension).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip items whose output exists and whose manifest entry matches the current settings.")] = False,
    same_seed: Annotated[bool, typer.Option("--same-seed", help="Every item uses --seed itself (default: a per-item seed keyed by its name).")] = False,
    ext: Annotated[str, typer.Option("--ext", help="Output format: .png, .jpg or .webp.")] = ".png",
    depth_model: DepthModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    compile: CompileOpt = False,
    low_memory: LowMemoryOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    max_failures: MaxFailuresOpt = None,
    *,
    fields: dict[str, Any],
) -> None:
    """Run one generation on every image of a folder; resumable, a bad file never stops the batch."""
    from ..batch.folder import list_inputs, output_paths, run_batch
    from ..errors import InvalidRequestError
    from ..outputs import IMAGE_FORMATS, Target, check_targets

    ext = ext if ext.startswith(".") else "." + ext
    if ext.lower() not in IMAGE_FORMATS:
        raise InvalidRequestError(f"--ext {ext!r}: use one of {', '.join(IMAGE_FORMATS)}")
    request_fields = to_request_fields(fields)
    for given, folder in (("depth_map", depth_dir), ("mask", mask_dir)):
        if folder is not None and request_fields.get(given) is not None:
            raise InvalidRequestError(f"give {flag(given)} (one for all) or {'--depth-dir' if given == 'depth_map' else '--mask-dir'}, not both")
        if folder is not None and not folder.is_dir():
            raise InvalidRequestError(f"{'--depth-dir' if given == 'depth_map' else '--mask-dir'} '{folder}' is not a folder")
    # validated with a stand-in image: each item brings its own (and its own mask with --mask-dir)
    stand_in = {"image": PLACEHOLDER, **({"mask": PLACEHOLDER} if mask_dir is not None else {})}
    GenerationRequest(**{**request_fields, **stand_in}).validate(label=flag)
    inputs = list_inputs(input, exclude=output)
    targets = [p for item in inputs for p in output_paths(output, item, request_fields.get("batch_size", 1), ext)]
    check_targets([Target("--output", tuple(targets))])
    request = GenerationRequest(**{**decode_inputs(request_fields), "image": None}).replace(**stand_in)
    spec = ModelSpec(model, device, dtype, depth_model, compile=compile, low_memory=low_memory)  # the load options, once

    def load_pipe() -> Any:  # the local load; remote workers load ``spec`` themselves
        return load(spec.model, spec.device, spec.dtype, spec.depth_model, low_memory=spec.low_memory, compile=spec.compile)

    options, runner = executor_for(executor, ray_address, workers, gpus_per_worker, max_failures, load_pipe, spec)

    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("", total=len(inputs))

        def on_item(name: str, status: str) -> None:
            progress.update(task, advance=1, description=f"{name}: {status}")

        try:
            summary = run_batch(
                load_pipe, request, inputs, output, depth_dir=depth_dir,
                mask_dir=mask_dir, resume=resume, same_seed=same_seed, suffix=ext,
                settings={"model": model, "depth_model": depth_model, "device": device, "dtype": dtype,
                          **({"low_memory": True} if low_memory else {})}, on_item=on_item,  # VAE tiling: other pixels
                executor=runner, max_failures=options.max_failures,
            )
        finally:
            runner.close()
    warn(summary.warnings)
    for name, reason in summary.failures:
        err.print(f"[red]failed:[/] {escape(name)}: {escape(reason)}", markup=True, highlight=False)
    say(summary.line)
    if summary.failed or summary.stopped:
        raise typer.Exit(1)
