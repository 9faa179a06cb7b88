"""What model files are called: the one table of checkpoint suffixes and the same-name config rule.

* :data:`CHECKPOINT_SUFFIXES`: every weight file the safe loader reads (``safe_load.load_state_dict``):
  safetensors, and the pickles torch writes, ``.bin`` included (transformers/diffusers component weights).
* :data:`MODEL_SUFFIXES`: what a *whole* single-file Stable Diffusion model may be called: what
  ``--model FILE`` accepts, what ``depth2img models`` lists and what is never taken for a hub id. ``.bin``
  is left out: it names component weights (``pytorch_model.bin``) or LoRAs/embeddings, never an SD model.
* :func:`sidecar_config`: A1111's convention of a same-name ``.yaml`` beside a checkpoint.

Other modules import these names; none spells a suffix list of its own (a test scans the package).
"""

from __future__ import annotations

from pathlib import Path

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
PICKLE_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES: tuple[str, ...] = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
MODEL_SUFFIXES: tuple[str, ...] = (".ckpt", ".safetensors", ".pt", ".pth")
CONFIG_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")
# A ControlNet single file's own diffusers config, if any: the same-name .json beside it (else a shipped one).
CONTROLNET_CONFIG_SUFFIX = ".json"
# Extra networks (prompts/): what A1111 looks for in embeddings/ and Lora/, in its order of preference.
EMBEDDING_SUFFIXES: tuple[str, ...] = (".pt", ".safetensors", ".bin")
LORA_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".ckpt", ".bin")


def sidecar_config(path: str | Path) -> Path | None:
    """The same-name ``.yaml`` (or ``.yml``) beside a checkpoint, if there is one."""
    path = Path(path)
    for suffix in CONFIG_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``folder`` with one of ``suffixes``, by file stem (the name a prompt uses); the first
    in sorted order wins a clash, as A1111's extra-network listings do."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            found.setdefault(path.stem, path)
    return found
