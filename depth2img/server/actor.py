"""What one Ray actor of ``depth2img serve --executor ray`` does: run one server job at a time.

The actor is long-lived and keeps the last model it loaded (as :class:`~.registry.Registry` does in the
API process: one pipeline, loading another unloads it). It never touches the job store: it gets the
job's request fields and input bytes (:class:`JobPayload`), and hands back the pictures
(:class:`JobOutcome`); the API process writes them and the store row. So the actors need no shared
filesystem with the API process, only the model files at the same paths.

Progress and stop go through the pipeline's existing step callback, exactly as the local worker does
(worker.py ``on_step``): the callback records step/total/latents, which :meth:`JobActor.progress`
returns to the dispatcher's polls, and returns False once :meth:`JobActor.stop` set a reason, which
raises ``GenerationCancelled`` after the current step. The actor runs threaded (``max_concurrency``
> 1) so ``progress`` and ``stop`` are answered while ``run`` is inside the denoising loop.

Errors are mapped here to the same (state, message, HTTP status) as worker.py ``Worker._loop`` maps
them, because the exception types do not cross the process boundary usefully.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("depth2img.server")

STOPPED_STATES = ("cancelled", "interrupted", "skipped")  # reasons that end a job as "cancelled", not "failed"


@dataclass(frozen=True)
class JobPayload:
    job_id: str
    kind: str  # "generate" | "depth"
    request: dict[str, Any]  # the stored job's GenerationRequest fields (JSON types)
    inputs: dict[str, bytes]  # image field -> bytes, as the store keeps them
    model: tuple[str, str | None, str | None]  # paths: (model, depth model, ControlNet), as the registry resolves ids


@dataclass
class JobOutcome:
    state: str  # "done" | "failed" | "cancelled"
    error: str | None = None
    status: int = 500
    images: list[Any] = field(default_factory=list)  # PIL images
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    depth: Any = None  # PIL image for depth.png (16-bit), or None
    depth_preview: Any = None  # a depth job's 8-bit image-0.png
    steps: int = 0  # the last step the job reported (tests and logs: an interrupted job ends before total)
    total: int = 0


class JobActor:
    """One Ray actor; created by :class:`~.remote.RayWorker` with ``ray.remote(JobActor).options(...)``."""

    def __init__(self, device: str, dtype: str, cache_dir: str, threads: int | None,
                 extras: tuple[str | None, str | None, str | None] = (None, None, None), low_memory: bool = False,
                 compile: bool = False) -> None:
        """``extras``: the server's --styles-file, --embeddings-dir and --lora-dir, attached to every pipeline
        this actor loads exactly as the local registry does (server/extras.py), so a style, a ``<lora:...>``
        tag or an embedding name means the same on a Ray actor. ``low_memory``, ``compile``: the server's --low-memory and --compile."""
        import ray

        if threads:  # this actor's own process: its thread count is ours to set
            import torch

            torch.set_num_threads(threads)
        self.device, self.dtype, self.cache_dir, self.low_memory, self.compile = device, dtype, cache_dir, low_memory, compile
        if compile:  # as the CLI's: inductor's kernel cache in ~/.cache/depth2img/inductor, set in this actor's process
            from ..cli.loading import use_inductor_cache

            use_inductor_cache()
        self.extras = extras
        self.node = ray.get_runtime_context().get_node_id()
        self._pipe: Any = None
        self._key: tuple[str, str | None, str | None] | None = None
        self._job: str | None = None
        self._progress: tuple[int, int, Any] = (0, 0, None)
        self._stop: dict[str, str] = {}  # job id -> reason (may arrive before run starts)

    def ready(self) -> str:
        return self.node

    def progress(self, job_id: str) -> tuple[int, int, Any] | None:
        """(step, total, first image's latents) of ``job_id`` while this actor runs it, else None."""
        return self._progress if self._job == job_id else None

    def stop(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` after its current step (or before its first one)."""
        self._stop[job_id] = reason

    def _pipeline(self, key: tuple[str, str | None, str | None]) -> Any:
        from ..pipeline import load_pipeline

        if self._key != key or self._pipe is None:
            self._pipe = self._key = None
            model, depth_model, controlnet = key
            self._pipe = load_pipeline(model, device=self.device, dtype=self.dtype, depth_model=depth_model,
                                       cache_dir=self.cache_dir, controlnet=controlnet, low_memory=self.low_memory,
                                       compile=self.compile)
            self._attach_extras(self._pipe)
            self._key = key
        return self._pipe

    def _attach_extras(self, pipe: Any) -> None:
        from types import SimpleNamespace

        from .extras import PromptExtras

        styles, embeddings, loras = (Path(p) if p else None for p in self.extras)
        PromptExtras(SimpleNamespace(styles_file=styles, embeddings_dir=embeddings, lora_dir=loras)).attach(pipe)

    def run(self, payload: JobPayload) -> JobOutcome:
        import torch

        from ..errors import Depth2ImgError, GenerationCancelled
        from .errors import status_for

        self._job, self._progress = payload.job_id, (0, 0, None)
        try:
            return self._run(payload)
        except GenerationCancelled as error:
            reason = self._stop.get(payload.job_id) or str(error)
            state = "cancelled" if reason in STOPPED_STATES else "failed"
            return self._outcome(state, reason, 504 if reason.startswith("timed out") else 503)
        except Depth2ImgError as error:
            return self._outcome("failed", str(error), status_for(error))
        except (torch.cuda.OutOfMemoryError, MemoryError):
            if self.device != "cpu":
                self._pipe = self._key = None
                torch.cuda.empty_cache()
            return self._outcome("failed", f"out of memory on {self.device}: try a smaller size or batch size", 503)
        except Exception as error:  # a bug: fail this job; the traceback goes to the actor's log, never to clients
            log.exception("job %s failed", payload.job_id)
            return self._outcome("failed", f"internal error ({type(error).__name__}); the Ray worker's log has the details", 500)
        finally:
            self._stop.pop(payload.job_id, None)
            self._job = None

    def _outcome(self, state: str, error: str, status: int) -> JobOutcome:
        step, total, _ = self._progress
        return JobOutcome(state, error, status, steps=step, total=total)

    def _run(self, payload: JobPayload) -> JobOutcome:
        from ..errors import GenerationCancelled
        from ..result import StepInfo
        from .worker import build_request

        pipe = self._pipeline(payload.model)
        if payload.kind == "depth":
            depth = pipe.estimate_depth(payload.inputs["image"])
            return JobOutcome("done", status=200, depth=depth.to_image("raw", bits=16),
                              depth_preview=depth.to_image("raw", bits=8))
        from .jobs import Job

        job = Job(id=payload.job_id, kind=payload.kind, state="running", model="", depth_model=None,
                  request=payload.request, inputs=sorted(payload.inputs), created=0.0)
        plan = pipe.plan(build_request(job, dict(payload.inputs)))
        job_id = payload.job_id

        def on_step(info: StepInfo) -> bool:  # the local worker's callback (worker.py), reporting to polls
            self._progress = (info.step + 1, info.total, info.latents[:1].detach().clone())
            return job_id not in self._stop

        if job_id in self._stop:
            raise GenerationCancelled(self._stop[job_id])
        result = pipe.run(plan, callback=on_step)
        depth = None
        if result.depth_map is not None:  # a ControlNet's control image (as the local worker saves it)
            which = "normalized" if pipe.backend.depth_at_pixels else "raw"
            depth = result.depth_map.to_image(which, bits=16)
        step, total, _ = self._progress
        return JobOutcome("done", status=200, images=list(result.images), infotexts=list(result.infotexts),
                          seeds=list(result.seeds), warnings=list(result.warnings), depth=depth, steps=step, total=total)
