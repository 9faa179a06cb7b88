"""Running a UI job through the server's own queue: submit with ``Services.submit`` (the same
admission as the APIs), then follow the job in the store and the worker's progress, yielding at every
step so gradio shows progress and a cancel stops the handler at its next yield. If the handler is
stopped (page closed, cancel), the job is cancelled in the worker too, so nothing runs unseen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import Depth2ImgError
from ..server.jobs import FINAL, Job
from ..server.services import Services


class UIError(Exception):
    """A readable message for the page (shown in the tab's status box and as a toast)."""


@dataclass
class Tick:
    """One update while a job runs: queued at ``position``, or at ``step`` of ``total``."""

    job: Job
    position: int | None = None
    step: int = 0
    total: int = 0
    latents: Any = None


def submit(svc: Services, kind: str, fields: dict[str, Any], inputs: dict[str, bytes], model: str | None,
           depth_model: str | None, controlnet: str | None = None) -> Job:
    try:
        return svc.submit(kind, fields, inputs, model=model or None, depth_model=depth_model or None, source="ui",
                          controlnet=controlnet or None)
    except Depth2ImgError as error:
        raise UIError(str(error)) from None


def follow(svc: Services, job: Job, poll: float = 0.05) -> Iterator[Tick]:
    """Ticks until the job ends; the last one carries the final job. Cancels the job if abandoned."""
    last: tuple | None = None
    finished = False
    try:
        while True:
            current = svc.store.get(job.id)
            assert current is not None
            if current.state in FINAL:
                finished = True
                yield Tick(current)
                return
            progress = svc.worker.progress_of(job.id)
            if current.state == "queued":
                key: tuple = ("queued", svc.store.position(current))
                tick = Tick(current, position=key[1])
            elif progress is not None and progress.job_id == job.id:
                key = ("running", progress.step)
                tick = Tick(current, step=progress.step, total=progress.total, latents=progress.latents)
            else:
                key, tick = last or ("running", 0), None
            if key != last and tick is not None:
                last = key
                yield tick
            time.sleep(poll)
    finally:
        if not finished:
            svc.worker.cancel(job.id)
