"""What the routes share: settings, store, registry, worker, and the one way a job is admitted.

Admission control happens here, before a job is queued (reference B4): the request must validate as a
:class:`GenerationRequest` with its images decoded safely, the model must be a registry id, and the
queue must have room (else 429 with Retry-After). A random seed is drawn at admission so the job's
seeds are known (and reported) at once and survive a restart unchanged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError
from ..request import DEFAULTS, GenerationRequest, resolve_seeds
from .errors import QueueFullError, ShuttingDownError
from .inputs import check_image
from .jobs import FINAL, Job, JobStore, new_id
from .registry import Registry
from .settings import Settings
from .worker import Worker


@dataclass
class Services:
    settings: Settings
    store: JobStore
    registry: Registry
    worker: Worker
    accepting: bool = True
    _admit: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, kind: str, fields: dict[str, Any], inputs: dict[str, bytes], *, model: str | None,
               depth_model: str | None, source: str = "api", controlnet: str | None = None) -> Job:
        """Check and queue a job; ``fields`` are GenerationRequest fields (JSON types), ``inputs`` image bytes,
        ``controlnet`` a ControlNet name of the registry (the pipeline is loaded with it)."""
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down; not accepting jobs")
        model_id = self.registry.resolve(model)
        depth_id = self.registry.resolve(depth_model) if depth_model else None
        if controlnet is not None and controlnet not in self.registry.controlnets:
            raise InvalidRequestError(f"unknown ControlNet {controlnet!r}; GET /controlnet/model_list lists them")
        for name, data in inputs.items():
            check_image(data, name.replace("_", " "), self.settings.max_pixels, depth=name == "depth_map")
        fields = dict(fields)
        seeds: list[int] = []
        if kind == "generate":
            if fields.get("seed") in (None, -1):
                fields["seed"] = resolve_seeds(None, int(fields.get("batch_size", 1)))[0]
            request = GenerationRequest(**{**fields, "depth_clip": tuple(fields.get("depth_clip", DEFAULTS["depth_clip"]))},
                                        **inputs)
            request.validate()
            self.registry.extras.check(fields)
            seeds = resolve_seeds(request.seed, request.batch_size)
        job = Job(id=new_id(), kind=kind, state="queued", model=model_id, depth_model=depth_id, request=fields,
                  inputs=[], created=time.time(), seeds=seeds, source=source, controlnet=controlnet)
        with self._admit:
            queued = self.store.count("queued")
            if queued >= self.settings.queue_size:
                raise QueueFullError(queued, self.settings.retry_after)
            self.store.add(job, inputs)
        self.worker.submit(job.id)
        return job

    async def wait(self, job: Job) -> Job:
        """The job once it is done, failed or cancelled (A1111's calls are synchronous: /sdapi waits here)."""
        import asyncio

        while True:
            current = await asyncio.to_thread(self.store.get, job.id)
            assert current is not None
            if current.state in FINAL:
                return current
            await asyncio.sleep(0.05)
