"""``depth2img serve``: a plain typer-annotated function; the CLI registers it (``app.command("serve")(serve)``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..executors.options import ExecutorOpt, GpusPerWorkerOpt, RayAddressOpt, WorkersOpt
from ..errors import InvalidRequestError
from ..executors.base import ExecutorOptions
from ..load_options import CompileOpt, LowMemoryOpt
from .settings import Settings, parse_credentials


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --auth or --auth-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (A1111's default).")] = 7860,
    models_dir: Annotated[Optional[list[Path]], typer.Option(
        "--models-dir", help="A folder of models (A1111 models/Stable-diffusion, ComfyUI models/checkpoints, diffusers "
        "folders); repeat for several. Model ids are the names `depth2img models` shows.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Default model id (default: the first listed, else tiny).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    low_memory: LowMemoryOpt = False,
    compile: CompileOpt = False,
    auth: Annotated[Optional[str], typer.Option(
        help="USER:PASS[,USER:PASS...] for HTTP Basic on every route. Visible in `ps`: prefer --auth-file.")] = None,
    auth_file: Annotated[Optional[Path], typer.Option(help="A file of USER:PASS lines.")] = None,
    queue_size: Annotated[int, typer.Option(help="Jobs that may wait; more get 429 with Retry-After.")] = 16,
    job_timeout: Annotated[float, typer.Option(help="Seconds a job may run before it is failed.")] = 600.0,
    outputs: Annotated[Path, typer.Option(help="Where jobs and results are kept (SQLite + files); survives restarts.")] = Path("outputs/server"),
    max_pixels: Annotated[int, typer.Option(help="Largest input image, width x height.")] = 16 * 1024 * 1024,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MB, refused before it is read.")] = 64.0,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", help="Allow browser pages from this origin (repeatable); closed by default.")] = None,
    styles_file: Annotated[Optional[Path], typer.Option(
        "--styles-file", help="A1111 styles.csv (name, prompt, negative_prompt) for a request's styles.")] = None,
    embeddings_dir: Annotated[Optional[Path], typer.Option(
        "--embeddings-dir", help="Folder of textual-inversion embeddings, used in a prompt by file name.")] = None,
    lora_dir: Annotated[Optional[Path], typer.Option(
        "--lora-dir", help="Folder of LoRA files for <lora:NAME:WEIGHT> in a prompt and a request's loras.")] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
) -> None:
    """Serve the web UI (/), the native API (/api/v1, docs at /docs) and the AUTOMATIC1111-compatible API (/sdapi/v1)."""
    settings = build_settings(host=host, port=port, models_dir=models_dir, model=model, device=device, dtype=dtype,
                              auth=auth, auth_file=auth_file, queue_size=queue_size, job_timeout=job_timeout,
                              outputs=outputs, max_pixels=max_pixels, max_body_mb=max_body_mb, cors_origin=cors_origin,
                              styles_file=styles_file, embeddings_dir=embeddings_dir, lora_dir=lora_dir,
                              executor=ExecutorOptions(executor, ray_address, workers, gpus_per_worker), low_memory=low_memory,
                              compile=compile)
    if compile:  # this process is the CLI's: inductor's kernel cache goes where generate --compile puts it
        from ..cli.loading import use_inductor_cache

        use_inductor_cache()
    run(settings)


def build_settings(*, host: str, port: int, models_dir: list[Path] | None, model: str | None, device: str, dtype: str,
                   auth: str | None, auth_file: Path | None, queue_size: int, job_timeout: float, outputs: Path,
                   max_pixels: int, max_body_mb: float, cors_origin: list[str] | None, styles_file: Path | None = None,
                   embeddings_dir: Path | None = None, lora_dir: Path | None = None,
                   executor: ExecutorOptions = ExecutorOptions(), low_memory: bool = False,
                   compile: bool = False) -> Settings:
    """Settings from the options; every mistake is an InvalidRequestError naming the option."""
    from ..devices import parse_device, parse_dtype

    if auth and auth_file:
        raise InvalidRequestError("give --auth or --auth-file, not both")
    credentials: tuple[tuple[str, str], ...] = ()
    if auth:
        credentials = parse_credentials(auth, "--auth")
    elif auth_file:
        try:
            credentials = parse_credentials(auth_file.read_text(encoding="utf-8"), "--auth-file")
        except OSError as error:
            raise InvalidRequestError(f"--auth-file {auth_file}: cannot read it ({error.strerror})") from None
    for folder in models_dir or ():
        if not folder.expanduser().is_dir():
            raise InvalidRequestError(f"--models-dir {folder} is not a folder")
    parse_device(device), parse_dtype(dtype)
    settings = Settings(host=host, port=port, models_dirs=tuple(p.expanduser() for p in models_dir or ()), model=model,
                        device=device, dtype=dtype, auth=credentials, queue_size=queue_size, job_timeout=job_timeout,
                        outputs=outputs.expanduser(), max_pixels=max_pixels, max_body_mb=max_body_mb,
                        cors_origins=tuple(cors_origin or ()),
                        styles_file=styles_file.expanduser() if styles_file else None,
                        embeddings_dir=embeddings_dir.expanduser() if embeddings_dir else None,
                        lora_dir=lora_dir.expanduser() if lora_dir else None,
                        executor=executor, low_memory=low_memory, compile=compile)
    return settings.check()


def run(settings: Settings, open_browser: bool = False) -> None:
    """Build the app and serve it until SIGINT/SIGTERM (uvicorn stops accepting, then the worker stops).

    The web UI is mounted at "/" when gradio is installed (the ``ui`` extra)."""
    import uvicorn

    from .. import ui
    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    ui.serve_hook(app, settings, open_browser)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
