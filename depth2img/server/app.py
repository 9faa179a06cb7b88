"""``create_app(settings)``: the FastAPI app with its store, registry and worker, wrapped in the
security layers. One exception handler maps typed errors to HTTP (errors.STATUS); /sdapi routes answer
in A1111's error shape ``{error, detail, body, errors}`` (``modules/api/api.py::api_middleware``),
the others ``{detail}``. Neither ever carries a traceback or a local path.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from .. import __version__
from ..errors import Depth2ImgError
from . import controlnet_api, extra_networks, native, sdapi
from .auth import BasicAuthMiddleware
from .errors import QueueFullError, status_for
from .jobs import JobStore
from .limits import LimitsMiddleware
from .native import validation_message
from .registry import Registry
from .services import Services
from .settings import Settings
from .worker import Worker

log = logging.getLogger("depth2img.server")


def error_response(request: Request, status: int, message: str, kind: str, headers: dict[str, str] | None = None):
    if request.url.path.startswith("/sdapi/"):  # (/controlnet/ answers {detail}, as the extension's HTTPException)
        content: dict[str, Any] = {"error": kind, "detail": message, "body": "", "errors": message}
    else:
        content = {"detail": message}
    return JSONResponse(content, status_code=status, headers=headers)


def build_services(settings: Settings) -> Services:
    store = JobStore(settings.outputs)
    registry = Registry(settings)
    if settings.executor.executor == "ray":  # N Ray actors drain the queue; this process keeps store and API
        from .remote import RayWorker

        return Services(settings, store, registry, RayWorker(settings, store, registry))  # type: ignore[arg-type]
    return Services(settings, store, registry, Worker(settings, store, registry))


def create_app(settings: Settings) -> ASGIApp:
    """The whole server as one ASGI app (``app.state.services`` on the inner FastAPI app)."""
    settings.check()
    svc = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.worker.start()
        try:
            yield
        finally:  # SIGTERM/SIGINT: uvicorn stops accepting, then this runs
            svc.accepting = False
            import asyncio

            await asyncio.to_thread(svc.worker.stop)
            svc.store.close()

    app = FastAPI(title="depth2img", version=__version__, lifespan=lifespan,
                  description="Depth-to-image generation: a native jobs API (/api/v1) and an "
                              "AUTOMATIC1111-compatible API (/sdapi/v1).")
    app.state.services = svc
    app.include_router(native.router)
    app.include_router(sdapi.router)
    app.include_router(controlnet_api.router)
    app.include_router(extra_networks.router)

    @app.exception_handler(Depth2ImgError)
    async def typed_error(request: Request, error: Depth2ImgError):
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, QueueFullError) else None
        return error_response(request, status_for(error), str(error), type(error).__name__, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        return error_response(request, 422, validation_message(error), "RequestValidationError")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return error_response(request, error.status_code, str(error.detail), "HTTPException", error.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, f"internal error ({type(error).__name__}); the server log has the details",
                              type(error).__name__)

    outer: ASGIApp = LimitsMiddleware(app, settings.max_body_bytes, settings.cors_origins)
    if settings.auth:
        outer = BasicAuthMiddleware(outer, settings.auth)
    if settings.cors_origins:  # outside auth: a browser's preflight carries no credentials
        outer = CORSMiddleware(outer, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                               allow_headers=["*"], allow_credentials=bool(settings.auth))
    outer.services, outer.fastapi = svc, app  # type: ignore[attr-defined]  # for tests and the web UI to mount on
    return outer
