"""The Typer app: commands registered from their modules, ``--version``, the entry point."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from .batch import batch
from .depth import depth_command
from .generate import generate
from .handling import one_line_errors
from .info import info
from .models import convert_command, models_command
from .sweep import sweep
from ..server.command import serve
from ..ui.command import ui_command
from .video import video, video_metrics

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is plain: option types shown as words, not rich markup
    help="Depth-to-image with Stable Diffusion 2 depth: a photo and a prompt in, a new picture with the "
    "same 3-D layout out. Try: depth2img generate --model tiny --image photo.png --prompt 'a castle'",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"depth2img {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Depth-to-image with Stable Diffusion 2 depth."""


app.command("generate")(generate)
app.command("depth")(depth_command)
app.command("sweep")(sweep)
app.command("info")(info)
app.command("convert")(convert_command)
app.command("models")(models_command)
app.command("serve")(one_line_errors(serve))
app.command("ui")(one_line_errors(ui_command))
app.command("batch")(batch)
app.command("video")(video)
app.command("video-metrics")(video_metrics)


def main() -> None:
    app(prog_name="depth2img")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
