"""``depth2img ui``: ``depth2img serve`` with the same options, then open the browser at the UI."""

from __future__ import annotations

import functools
from typing import Any

from ..server.command import build_settings, run, serve


@functools.wraps(serve)  # the same options (typer reads serve's signature and annotations)
def ui_command(**options: Any) -> None:
    run(build_settings(**options), open_browser=True)


ui_command.__doc__ = "Start the server (web UI, native and A1111 APIs) and open the web UI in the browser."
