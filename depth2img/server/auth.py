"""HTTP Basic on every route, as one pure-ASGI middleware around the whole app.

It sits outside FastAPI, so it covers the native API, /sdapi, /docs, /openapi.json and anything
mounted later (the web UI) alike (reference server_ui_ray_setup.md: the one layer that works with
gradio mounted). A1111's ``--api-auth`` is HTTP Basic compared with ``secrets.compare_digest``; so is
this, over every configured pair without stopping at the first match, so timing tells nothing. A 401
carries ``WWW-Authenticate`` so browsers prompt. Credentials are never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send


class BasicAuthMiddleware:
    def __init__(self, app: ASGIApp, credentials: tuple[tuple[str, str], ...], realm: str = "depth2img") -> None:
        self.app = app
        self._pairs = [(u.encode(), p.encode()) for u, p in credentials]
        self._challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": "authentication required (HTTP Basic)"}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", self._challenge)]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        credentials = basic_credentials(dict(scope.get("headers") or ()).get(b"authorization", b""))
        if credentials is None:
            return False
        user, password = credentials
        ok = False
        for u, p in self._pairs:  # no early exit: every pair is compared
            ok |= hmac.compare_digest(user, u) & hmac.compare_digest(password, p)
        return ok


def basic_credentials(header: bytes) -> tuple[bytes, bytes] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header (RFC 7617), or None when it is missing,
    another scheme, not base64, or has no ``:``. The middleware checks them; the UI reads the user name."""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None
