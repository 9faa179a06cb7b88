"""Request limits applied before any handler reads the body, as pure-ASGI middleware.

- Body size: a ``Content-Length`` over ``--max-body-mb`` is refused with 413 before one byte is read;
  a chunked body is counted as it streams and refused the moment it passes the limit. (A1111 has no
  limit; ComfyUI relies on aiohttp's ``client_max_size``.)
- Cross-site requests: a browser page on another origin may POST "simple" requests (forms, text/plain,
  multipart) to a loopback server without a preflight (ComfyUI #4850). A request whose ``Origin`` is
  neither this server nor a ``--cors-origin`` is refused with 403, as ComfyUI's
  ``origin_only_middleware``. Clients that are not browsers send no Origin and are not affected.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTooLargeError


async def _reply(send: Send, status: int, detail: str, sdapi: bool) -> None:
    payload = {"error": "HTTPException", "detail": detail, "body": "", "errors": detail} if sdapi else {"detail": detail}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body: int, cors_origins: tuple[str, ...] = ()) -> None:
        self.app, self.max_body, self.cors_origins = app, max_body, cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        sdapi = scope.get("path", "").startswith("/sdapi/")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and not self._same_origin(origin, headers) and origin not in self.cors_origins and "*" not in self.cors_origins:
            await _reply(send, 403, f"cross-origin request from {origin} refused (see --cors-origin)", sdapi)
            return
        limit = self.max_body
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        if length > limit:
            await _reply(send, 413, f"the request body is {length} bytes; this server accepts at most {limit} "
                                    "(--max-body-mb)", sdapi)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # the app's error handler answers 413
                    raise BodyTooLargeError(f"the request body is over {limit} bytes (--max-body-mb)")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _reply(send, 413, f"the request body is over {limit} bytes (--max-body-mb)", sdapi)

    @staticmethod
    def _same_origin(origin: str, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host", b"").decode("latin-1")
        return urlsplit(origin).netloc == host
