"""``depth2img info``: the generation parameters stored in an image (ours or A1111's)."""

from __future__ import annotations

from typing import Annotated

import typer

from .handling import one_line_errors


@one_line_errors
def info(image: Annotated[str, typer.Argument(help="A PNG/JPEG/WebP written by depth2img or AUTOMATIC1111.")]) -> None:
    """Print the generation parameters stored in an image."""
    from ..errors import InvalidImageError
    from ..infotext import parse_infotext, read_infotext

    text = read_infotext(image)
    if text is None:
        raise InvalidImageError(f"'{image}' carries no generation parameters")
    typer.echo(text)
    typer.echo("")
    for key, value in parse_infotext(text).items():
        typer.echo(f"{key}: {value}")
