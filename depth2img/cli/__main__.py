"""``python -m depth2img.cli``: the same as the ``depth2img`` command."""

from .app import main

main()
