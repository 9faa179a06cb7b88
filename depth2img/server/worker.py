"""One worker thread per device: jobs run one at a time through ``Pipeline.plan`` and ``Pipeline.run``.

Like A1111's ``queue_lock`` and ComfyUI's single ``prompt_worker``: GPU work is serial; the HTTP side
only enqueues and reads. Cancel, interrupt and the per-job timeout all work through the step callback
(returning False raises ``GenerationCancelled`` after the current step), so each takes effect within
one denoising step. An exception in a job fails that job only, with a readable message; out-of-memory
frees the cache first (ComfyUI's "Got an OOM" path) and the worker carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import Depth2ImgError, GenerationCancelled
from ..outputs import save_image
from ..request import GenerationRequest
from ..result import StepInfo
from .errors import status_for
from .jobs import Job, JobStore
from .registry import Registry
from .settings import Settings

log = logging.getLogger("depth2img.server")


@dataclass
class Progress:
    """The running job, as the HTTP side sees it (read without locks: single writer, plain values)."""

    job_id: str
    started: float
    step: int = 0
    total: int = 0
    latents: torch.Tensor | None = None  # first image's latents after the last step (for previews)
    cancel: str | None = None  # why to stop at the next step ("cancelled", "interrupted", "timed out...")
    state: str = "running"
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    @property
    def eta(self) -> float | None:
        if not self.step or not self.total:
            return None
        elapsed = time.time() - self.started
        return elapsed / self.step * (self.total - self.step)


def build_request(job: Job, inputs: dict[str, bytes]) -> GenerationRequest:
    """The stored job as the one GenerationRequest (JSON lists back to the pair tuple)."""
    fields: dict[str, Any] = dict(job.request)
    if "depth_clip" in fields:
        fields["depth_clip"] = tuple(fields["depth_clip"])
    return GenerationRequest(**fields, **inputs)


class JobControl:
    """Cancel and interrupt, shared by the local :class:`Worker` and the Ray dispatcher (remote.RayWorker):
    both mark a running job's :class:`Progress`, which its step callback (local or on the actor) reads."""

    store: JobStore
    current: Progress | None

    def progress_of(self, job_id: str) -> Progress | None:
        raise NotImplementedError

    def cancel(self, job_id: str, reason: str = "cancelled") -> bool:
        """Cancel a queued job at once, or a running one at its next step. False if neither."""
        if self.store.cancel_queued(job_id):
            return True
        progress = self.progress_of(job_id)
        if progress is not None:
            progress.cancel = reason
            return True
        return False

    def interrupt(self, reason: str = "interrupted") -> str | None:
        """Stop the current job (A1111's /interrupt); its id, or None when idle."""
        current = self.current
        if current is None:
            return None
        current.cancel = reason
        return current.job_id


class Worker(JobControl):
    def __init__(self, settings: Settings, store: JobStore, registry: Registry) -> None:
        self.settings, self.store, self.registry = settings, store, registry
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.current: Progress | None = None
        self.last_finished: float = 0.0

    # -- control -----------------------------------------------------------------------------------

    def start(self) -> None:
        for job_id in self.store.recover():  # queued jobs of a previous run, oldest first
            self._queue.put(job_id)
        self._thread = threading.Thread(target=self._loop, name="depth2img-worker", daemon=True)
        self._thread.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs; let the running one finish within ``grace`` seconds, else fail it.

        Queued jobs stay queued in the store and run after the next start.
        """
        self._stopping.set()
        self._queue.put(None)
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._thread is None:
            return
        self._thread.join(grace)
        current = self.current
        if current is not None:
            current.cancel = "the server shut down while this job was running"
        self._thread.join()

    def progress_of(self, job_id: str) -> Progress | None:
        """The running job ``job_id``'s progress, or None (queued, finished, unknown)."""
        current = self.current
        return current if current is not None and current.job_id == job_id else None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                break
            if not self.store.start(job_id):  # cancelled while queued
                continue
            job = self.store.get(job_id)
            assert job is not None
            self.current = progress = Progress(job_id, started=job.started or time.time())
            try:
                self._run(job, progress)
            except GenerationCancelled as error:
                reason = progress.cancel or str(error)
                state = "cancelled" if reason in ("cancelled", "interrupted", "skipped") else "failed"
                self.store.fail(job_id, reason, state, 504 if reason.startswith("timed out") else 503)
            except Depth2ImgError as error:
                self.store.fail(job_id, self._scrub(str(error)), status=status_for(error))
            except (torch.cuda.OutOfMemoryError, MemoryError):
                if self.settings.device != "cpu":
                    self.registry.unload()
                self.store.fail(job_id, f"out of memory on {self.settings.device}: try a smaller size or batch size",
                                status=503)
            except Exception as error:  # a bug: fail this job, log the traceback (never sent to clients)
                log.exception("job %s failed", job_id)
                self.store.fail(job_id, f"internal error ({type(error).__name__}); the server log has the details")
            finally:
                progress.stopped.set()
                self.current = None
                self.last_finished = time.time()

    def _run(self, job: Job, progress: Progress) -> None:
        inputs = self.store.read_inputs(job)
        pipe = self.registry.get(job.model, job.depth_model, job.controlnet)
        if job.kind == "depth":
            depth = pipe.estimate_depth(inputs["image"], resolution=job.request.get("processor_res"))
            save_image(depth.to_image("raw", bits=8), self.store.image_path(job.id, 0))
            save_image(depth.to_image("raw", bits=16), self.store.depth_path(job.id))
            self.store.finish(job.id, seeds=[], infotexts=[], warnings=[], n_images=1, has_depth=True)
            return
        plan = pipe.plan(build_request(job, inputs))
        deadline = progress.started + self.settings.job_timeout

        def on_step(info: StepInfo) -> bool:
            progress.step, progress.total = info.step + 1, info.total
            progress.latents = info.latents[:1].detach().clone()
            if time.time() > deadline and progress.cancel is None:
                progress.cancel = f"timed out after {self.settings.job_timeout:g} s (--job-timeout)"
            return progress.cancel is None

        if progress.cancel is not None:
            raise GenerationCancelled(progress.cancel)
        result = pipe.run(plan, callback=on_step)
        for i, (image, infotext) in enumerate(zip(result.images, result.infotexts)):
            save_image(image, self.store.image_path(job.id, i), infotext=infotext)
        if result.depth_map is not None:  # a ControlNet's: the control image it saw, at the output size (as --save-depth)
            which = "normalized" if pipe.backend.depth_at_pixels else "raw"
            save_image(result.depth_map.to_image(which, bits=16), self.store.depth_path(job.id))
        self.store.finish(job.id, seeds=result.seeds, infotexts=result.infotexts, warnings=result.warnings,
                          n_images=len(result.images), has_depth=result.depth_map is not None)

    def _scrub(self, message: str) -> str:
        """Local paths never reach a client: folders the server knows become placeholders."""
        roots = [(str(self.settings.outputs.resolve()), "<outputs>"), (str(Path.home()), "~")]
        roots += [(str(d.expanduser().resolve()), "<models>") for d in self.settings.models_dirs]
        for entry in self.registry.entries.values():
            if entry.layout != "builtin":
                roots.append((str(entry.path), entry.name))
        for path, label in sorted(roots, key=lambda r: -len(r[0])):
            message = message.replace(path, label)
        return message
