"""``python -m depth2img.server [OPTIONS]``: the serve command without the rest of the CLI."""

import typer

from ..errors import Depth2ImgError
from .command import serve


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    try:
        app(standalone_mode=False)
    except Depth2ImgError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
