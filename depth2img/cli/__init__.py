"""The ``depth2img`` command line: an edge that only translates options into the library's types.

Layout: ``app`` (the Typer app, ``--version``, command registration), ``handling`` (one-line errors,
exit codes, warnings and progress on stderr), ``options`` (options derived from the request's
parameter spec, and the load-time options), one module per command (``generate``, ``depth``,
``sweep``, ``info``, ``models``: convert and list). Importing this package is cheap: torch, diffusers
and the pipeline load only when a command needs them, so a typo costs milliseconds.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
