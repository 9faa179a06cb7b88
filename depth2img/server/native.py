"""The native API, ``/api/v1``: jobs in, progress out (polling or server-sent events), results by id.

``POST /api/v1/jobs`` takes JSON (images as base64) or ``multipart/form-data`` (a ``request`` part with
that JSON minus the images, and file parts named ``image``, ``mask``, ``depth_map``) and answers 202 at
once. Everything a client names is an id we issued or a registry id; files are served by
(job id, index) only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError

from .. import __version__
from ..a1111 import SAMPLERS
from ..errors import InvalidRequestError
from .errors import NotFoundError, NotReadyError
from .inputs import decode_b64
from .jobs import FINAL, Job
from .preview import latent_preview, png_b64
from .schemas import IMAGE_FIELDS, DepthJobRequest, Health, JobAccepted, JobList, JobRequest, JobStatus, ModelInfo
from .services import Services

router = APIRouter(prefix="/api/v1", tags=["native"])

_JOB_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "request": {"type": "string", "description": "JobRequest JSON without the images"},
        **{name: {"type": "string", "format": "binary"} for name in IMAGE_FIELDS}}}},
}}}


def services(request: Request) -> Services:
    return request.app.state.services


def _job(svc: Services, job_id: str) -> Job:
    job = svc.store.get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job


def status(svc: Services, job: Job) -> JobStatus:
    base = f"/api/v1/jobs/{job.id}"
    out = JobStatus(id=job.id, kind=job.kind, state=job.state, model=job.model, created=job.created,
                    started=job.started, finished=job.finished, error=job.error, seeds=job.seeds,
                    infotexts=job.infotexts, warnings=job.warnings,
                    images=[f"{base}/images/{i}" for i in range(job.n_images)] if job.state == "done" else [],
                    depth=f"{base}/depth" if job.state == "done" and job.has_depth else None)
    if job.state == "queued":
        out.position = svc.store.position(job)
    current = svc.worker.progress_of(job.id)
    if job.state == "running" and current is not None:
        out.step, out.total, out.eta = current.step, current.total, current.eta
    return out


async def _read_job_body(request: Request, model: type = JobRequest) -> tuple[Any, dict[str, bytes]]:
    """The validated body and the decoded image bytes, from JSON or multipart."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, bytes] = {}
    if ctype == "multipart/form-data":
        form = await request.form(max_files=len(IMAGE_FIELDS), max_fields=1)
        try:
            raw = json.loads(form.get("request") or "{}")
        except (ValueError, TypeError):
            raise InvalidRequestError("the 'request' part is not valid JSON") from None
        for name in IMAGE_FIELDS:
            part = form.get(name)
            if part is not None and not isinstance(part, str):
                files[name] = await part.read()
        unknown = set(form) - {"request", *IMAGE_FIELDS}
        if unknown:
            raise InvalidRequestError(f"unknown multipart part {sorted(unknown)[0]!r}")
    elif ctype in ("application/json", ""):
        try:
            raw = json.loads(await request.body())
        except ValueError as error:
            raise InvalidRequestError(f"the body is not valid JSON ({error.__class__.__name__}: {error})") from None
    else:
        raise InvalidRequestError(f"send application/json or multipart/form-data, not {ctype!r}")
    if not isinstance(raw, dict):
        raise InvalidRequestError("the body must be a JSON object")
    try:
        body = model.model_validate(raw)
    except ValidationError as error:
        raise InvalidRequestError(validation_message(error)) from None
    for name in IMAGE_FIELDS:
        value = getattr(body, name, None)
        if value is not None:
            if name in files:
                raise InvalidRequestError(f"{name} was given twice (as JSON and as a file part)")
            files[name] = decode_b64(value, name)
    for name, data in files.items():
        if not data:
            raise InvalidRequestError(f"{name} is empty (0 bytes)")
    return body, files


def validation_message(error: ValidationError) -> str:
    """pydantic's errors as one line naming each field: ``steps: Input should be ...``."""
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _accepted(svc: Services, job: Job, response: Response) -> JobAccepted:
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobAccepted(id=job.id, state=job.state, position=svc.store.position(job), seeds=job.seeds,
                       url=f"/api/v1/jobs/{job.id}")


@router.post("/jobs", status_code=202, response_model=JobAccepted, openapi_extra=_JOB_BODY,
             responses={422: {"description": "invalid request"}, 429: {"description": "queue full"}})
async def create_job(request: Request, response: Response) -> JobAccepted:
    """Queue a generation: every GenerationRequest field, plus ``model`` and ``depth_model`` (ids)."""
    svc = services(request)
    body, files = await _read_job_body(request)
    fields = body.model_dump(exclude={"model", "depth_model", *IMAGE_FIELDS})
    job = await asyncio.to_thread(svc.submit, "generate", fields, files, model=body.model,
                                  depth_model=body.depth_model)
    return _accepted(svc, job, response)


@router.post("/depth", status_code=202, response_model=JobAccepted,
             responses={422: {"description": "invalid request"}, 429: {"description": "queue full"}})
async def create_depth_job(body: DepthJobRequest, request: Request, response: Response) -> JobAccepted:
    """Queue a depth-map job: the model's depth estimate of ``image`` (image 0: 8-bit, ``/depth``: 16-bit)."""
    svc = services(request)
    files = {"image": decode_b64(body.image, "image")}
    job = await asyncio.to_thread(svc.submit, "depth", {}, files, model=body.model, depth_model=body.depth_model)
    return _accepted(svc, job, response)


@router.get("/jobs", response_model=JobList)
def list_jobs(request: Request, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(50, ge=1, le=500),
              state: str | None = Query(None, pattern="^(queued|running|done|failed|cancelled)$")) -> JobList:
    """Jobs, newest first, a page at a time."""
    svc = services(request)
    jobs, total = svc.store.list(offset, limit, state)
    return JobList(jobs=[status(svc, j) for j in jobs], total=total, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "no such job"}})
def get_job(job_id: str, request: Request) -> JobStatus:
    svc = services(request)
    return status(svc, _job(svc, job_id))


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "no such job"}})
def cancel_job(job_id: str, request: Request) -> JobStatus:
    """Cancel a queued job, or the running one (it stops after its current step). A finished job is left as is."""
    svc = services(request)
    job = _job(svc, job_id)
    if job.state not in FINAL and svc.worker.cancel(job.id):
        current = svc.worker.progress_of(job.id)
        if current is not None:
            current.stopped.wait(timeout=30)
    return status(svc, _job(svc, job_id))


@router.get("/jobs/{job_id}/images/{index}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such image"}})
def get_image(job_id: str, index: int, request: Request) -> FileResponse:
    """Result image ``index`` as PNG, with A1111's ``parameters`` infotext chunk."""
    svc = services(request)
    job = _job(svc, job_id)
    if job.state != "done":
        raise NotReadyError(f"job {job_id} is {job.state}; it has no images")
    if not 0 <= index < job.n_images:
        raise NotFoundError(f"job {job_id} has {job.n_images} image(s); no image {index}")
    return FileResponse(svc.store.image_path(job.id, index), media_type="image/png",
                        filename=f"{job.id}-{index}.png")


@router.get("/jobs/{job_id}/depth", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "no depth map"}})
def get_depth(job_id: str, request: Request) -> FileResponse:
    """The depth map the job used (16-bit grayscale PNG, white = near)."""
    svc = services(request)
    job = _job(svc, job_id)
    if job.state != "done":
        raise NotReadyError(f"job {job_id} is {job.state}; it has no depth map")
    if not job.has_depth:
        raise NotFoundError(f"job {job_id} has no depth map (a plain img2img model)")
    return FileResponse(svc.store.depth_path(job.id), media_type="image/png", filename=f"{job.id}-depth.png")


@router.get("/jobs/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, preview: int = Query(0, ge=0, le=1000,
                     description="Send a low-resolution preview every k steps (0: none).")) -> StreamingResponse:
    """Server-sent events: ``queued`` (position), ``progress`` (each step), ``preview`` (every k steps),
    then one of ``done``, ``failed``, ``cancelled`` (the job's status) and the stream ends."""
    svc = services(request)
    _job(svc, job_id)
    every = preview or svc.settings.preview_every

    async def stream():
        last: tuple | None = None
        last_preview = 0
        seen = None  # the running job's Progress: the worker keeps updating this object until the job ends

        def progress_events(current: Any) -> Iterator[str]:
            nonlocal last_preview
            yield _event("progress", {"step": current.step, "total": current.total, "eta": current.eta})
            latents = current.latents
            if every and current.step - last_preview >= every and latents is not None:
                last_preview = current.step
                yield _event("preview", {"step": current.step, "image": png_b64(latent_preview(latents))})

        while True:
            job = await asyncio.to_thread(svc.store.get, job_id)
            if job is None:
                return
            if job.state in FINAL:
                # the stream polls: the last steps (and the decode after them) can end between two polls, so
                # a finished job's final progress, read from the object the worker updated, is still sent
                if job.state == "done" and seen is not None and last != ("running", seen.step):
                    for event in progress_events(seen):
                        yield event
                yield _event(job.state, status(svc, job).model_dump())
                return
            current = svc.worker.progress_of(job_id)
            if job.state == "queued":
                key: tuple = ("queued", svc.store.position(job))
                if key != last:
                    yield _event("queued", {"position": key[1]})
            elif current is not None:
                seen, key = current, ("running", current.step)
                if key != last:
                    for event in progress_events(current):
                        yield event
            else:
                key = last or ("running", -1)
            last = key
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.05 if job.state == "running" else 0.25)  # steps matter; a queue moves slowly

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@router.get("/models", response_model=list[ModelInfo])
def list_models_route(request: Request) -> list[ModelInfo]:
    """Model ids for ``model``: the registry (--models-dir) plus the built-ins tiny and tiny-img2img."""
    reg = services(request).registry
    return [ModelInfo(id=name, kind=e.kind, layout=e.layout, size=e.size, loaded=reg.loaded == name,
                      default=reg.default == name) for name, e in reg.entries.items()]


@router.post("/models/refresh", response_model=list[ModelInfo])
def refresh_models(request: Request) -> list[ModelInfo]:
    """Scan the --models-dir folders again."""
    services(request).registry.refresh()
    return list_models_route(request)


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    """Scheduler names for ``scheduler``, with A1111's sampler label and schedule type."""
    return [{"name": name, "a1111_sampler": s.name, "a1111_schedule_type": s.schedule_type or "Automatic"}
            for name, s in SAMPLERS.items()]


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    svc = services(request)
    current = svc.worker.current
    return Health(status="ok", version=__version__, model=svc.registry.default, loaded=svc.registry.loaded,
                  queued=svc.store.count("queued"), running=current.job_id if current else None,
                  device=svc.settings.device, dtype=svc.settings.dtype)
