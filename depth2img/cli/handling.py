"""How the CLI talks to the user: one line per error (exit 2), Ctrl-C (exit 130), notices and progress.

Library errors are :class:`~depth2img.errors.Depth2ImgError` subclasses with one-line messages; the
CLI prints them and exits 2 — never a traceback for a user mistake. Notices travel on the
:class:`~depth2img.result.Result` (``warnings``) and are printed here as ``warning: ...`` lines;
third-party Python warnings raised while a command runs are collected (``catch_warnings`` is scoped
to the command) and shown the same way, one line each.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

# soft wrap: an error stays one line; stderr: stdout is for data (`info`, `models`)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def say(message: str) -> None:
    err.print(message, markup=False)


def warn(messages: Iterable[str]) -> None:
    for message in messages:
        err.print(f"[yellow]warning:[/] {_one_line(str(message))}")


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= 300 else first[:297] + "..."


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command: library errors → 'error: ...' and exit 2; Ctrl-C → 'interrupted' and exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import Depth2ImgError

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                return fn(*args, **kwargs)
            except Depth2ImgError as error:
                err.print(f"[red]error:[/] {_one_line(str(error))}", markup=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                err.print("[red]interrupted[/]")
                raise typer.Exit(130) from None
            finally:
                warn(str(w.message) for w in caught if not _is_noise(w))

    return wrapper


def _is_noise(w: warnings.WarningMessage) -> bool:
    """Library chatter a CLI user cannot act on (diffusers' deprecations of config keys, torch's
    TypedStorage notes): shown by Python, not by us."""
    return issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning))
