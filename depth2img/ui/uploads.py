"""Image inputs that hand the handler the uploaded file untouched.

gr.Image decodes uploads with PIL inside gradio, so a text file dropped as an image fails there with a
bare "Error". These components pass the uploaded file's path instead; the server's own admission
(``inputs.check_image``: pixel limit, format allow-list, bomb checks) reads the bytes and says in a
sentence what is wrong. The bytes reach the job store as uploaded, so a UI job equals an API job
bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr


def RawImage(**options: Any) -> gr.Image:  # noqa: N802 - used like a component class
    """gr.Image whose value is the uploaded file's path, never re-encoded.

    An instance attribute, not a subclass: gradio writes a ``.pyi`` stub next to the module of every
    component subclass, i.e. into the installed package.
    """
    image = gr.Image(**options)
    image.preprocess = _raw  # type: ignore[method-assign]
    return image


def _raw(payload: Any) -> str | None:
    return None if payload is None else str(payload.path)


def read(path: str | None) -> bytes | None:
    return None if not path else Path(path).read_bytes()
