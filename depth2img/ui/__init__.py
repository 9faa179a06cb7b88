"""The web UI (issue 10): a gradio app mounted by ``depth2img serve`` at "/".

Importing this package is cheap; gradio is imported only by :func:`mount`, when the UI is served
(gradio takes seconds to import and is the ``ui`` extra). Jobs go through the server's own
``Services.submit``: the UI, the native API and the A1111 API share one worker, queue and job store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"
STATIC_URL = "/ui-static"


def available() -> bool:
    """True when gradio is installed (``pip install 'depth2img[ui]'``)."""
    import importlib.util

    return importlib.util.find_spec("gradio") is not None


def mount(outer: Any) -> Any:
    """Mount the UI at "/" on the FastAPI app of ``create_app``'s result (``outer.fastapi``); returns the Blocks.

    Routes of the APIs are declared before this, so "/" does not shadow them. The server's HTTP Basic
    middleware wraps everything, the UI included; gradio is told the user through ``auth_dependency``.
    """
    svc, fastapi_app = outer.services, outer.fastapi
    temp = (svc.settings.outputs / "ui-tmp").resolve()
    temp.mkdir(parents=True, exist_ok=True)
    # gradio reads these when imported / when it first writes: offline, and its files under --outputs
    os.environ["GRADIO_TEMP_DIR"] = str(temp)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr
    from starlette.staticfiles import StaticFiles

    from .app import CSS, HEAD, build

    blocks = build(svc)
    fastapi_app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="ui-static")
    auth_dependency = _user if svc.settings.auth else None
    gr.mount_gradio_app(fastapi_app, blocks, path="/", auth_dependency=auth_dependency, ssr_mode=False,
                        allowed_paths=[str(svc.settings.outputs.resolve())], theme=gr.themes.Default(),
                        css=CSS, head=HEAD, show_error=True, mcp_server=False, pwa=False)
    return blocks


def serve_hook(outer: Any, settings: Any, open_browser: bool = False) -> None:
    """What ``depth2img serve`` does for the UI: mount it if gradio is installed; open the browser if asked."""
    import logging

    log = logging.getLogger("depth2img.server")
    if not available():
        log.warning("the web UI needs gradio: pip install 'depth2img[ui]'; serving the APIs only")
        if open_browser:
            from ..errors import InvalidRequestError

            raise InvalidRequestError("depth2img ui needs gradio: pip install 'depth2img[ui]'")
        return
    mount(outer)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    log.info("web UI at http://%s:%d/", host, settings.port)
    if open_browser:
        _open_when_listening(host, settings.port)


def _open_when_listening(host: str, port: int, timeout: float = 60.0) -> None:
    """Open the default browser once the port accepts connections (a daemon thread)."""
    import socket
    import threading
    import time
    import webbrowser

    def wait_and_open() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection((host, port), timeout=1):
                    webbrowser.open(f"http://{host}:{port}/")
                    return
            except OSError:
                time.sleep(0.3)

    threading.Thread(target=wait_and_open, name="depth2img-open-browser", daemon=True).start()


def _user(request: Any) -> str | None:
    """The HTTP Basic user (the middleware outside already checked the password)."""
    from ..server.auth import basic_credentials

    credentials = basic_credentials(request.headers.get("authorization", "").encode("latin-1"))
    if credentials is None:
        return None
    return credentials[0].decode("utf-8", "replace") or None
