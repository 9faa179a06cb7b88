"""The server's prompt extras: saved styles, textual-inversion embeddings and LoRAs.

``depth2img serve --styles-file F --embeddings-dir D --lora-dir D`` (the options of ``depth2img generate``)
builds one :class:`PromptExtras`. The registry attaches it to every pipeline it loads (``pipe.styles``,
``pipe.loras``, ``pipe.embeddings``), so ``styles`` in a request, ``<lora:name:w>`` tags and embedding names
in a prompt work over HTTP exactly as in the library. Admission checks the style names and ``loras``
(``--lora`` names) before a job is queued, so a typo is a 422 at once, not a failed job later.
``refresh_loras`` re-reads the LoRA folder (A1111's ``/sdapi/v1/refresh-loras``); the next job uses it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .settings import Settings


class PromptExtras:
    def __init__(self, settings: Settings) -> None:
        from ..prompts.styles import load_styles

        self.styles_file: Path | None = settings.styles_file
        self.embeddings_dir: Path | None = settings.embeddings_dir
        self.lora_dir: Path | None = settings.lora_dir
        self.styles = load_styles(self.styles_file) if self.styles_file is not None else None
        self._lock = threading.Lock()
        self.loras: Any = None
        self.refresh_loras()

    def refresh_loras(self, pipe: Any = None) -> None:
        """Re-read the LoRA folder (new files appear, removed ones go); ``pipe``, the loaded one, sees it too."""
        if self.lora_dir is None:
            return
        from ..prompts.lora import LoraLibrary

        with self._lock:
            self.loras = LoraLibrary(self.lora_dir)
            if pipe is not None:
                pipe.loras = self.loras

    def attach(self, pipe: Any) -> None:
        """Give a freshly loaded pipeline the server's styles, LoRA folder and embeddings."""
        pipe.styles, pipe.loras = self.styles, self.loras
        if self.embeddings_dir is not None and pipe.text_encoder_2 is None:  # SDXL: embeddings not supported yet
            from ..pipeline import set_embeddings

            set_embeddings(pipe, self.embeddings_dir)

    def check(self, fields: dict[str, Any]) -> None:
        """Refuse unknown style names and unknown ``loras`` names (InvalidRequestError) at admission."""
        from ..prompts.styles import apply_styles

        apply_styles(fields.get("prompt", ""), fields.get("negative_prompt", ""), fields.get("styles") or (), self.styles)
        if fields.get("loras"):
            from ..prompts.lora import requested

            requested("", "", fields["loras"], self.loras)
