"""Typed errors. Every error a user can cause is one of these, with a one-line message that names the cause.

The CLI prints ``str(error)`` and exits non-zero; the HTTP API maps them to 4xx. Anything else is a bug.
"""

from __future__ import annotations


class Depth2ImgError(Exception):
    """Base class: a failure with a user-facing, one-line message."""


class InvalidRequestError(Depth2ImgError, ValueError):
    """A generation request has an out-of-range or inconsistent field."""


class InvalidImageError(Depth2ImgError, ValueError):
    """An input image, mask or depth map could not be decoded or is not acceptable."""


class ModelLoadError(Depth2ImgError):
    """A model could not be found, read or assembled (wrong component, bad key, offline and not cached...)."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickle checkpoint asked to run code or to build an object outside the allow-list."""


class NonFiniteOutputError(Depth2ImgError):
    """The UNet or VAE produced NaN/Inf; a black image is never returned as success."""

    def __init__(self, stage: str, dtype: str, hint: str) -> None:
        self.stage, self.dtype, self.hint = stage, dtype, hint
        super().__init__(f"non-finite values after the {stage} in {dtype}: {hint}")


class GenerationCancelled(Depth2ImgError):
    """The step callback asked to stop."""


class CheckpointKeyError(ModelLoadError):
    """A checkpoint tensor is missing, unexpected or mis-shaped for the detected model (the key is named)."""


class NonFiniteWeightsError(ModelLoadError):
    """A checkpoint holds NaN/Inf in weights the model uses (it could only produce black images)."""


class CorruptCheckpointError(ModelLoadError):
    """A checkpoint file is truncated, malformed or not a checkpoint at all (the message says what it is not)."""


class OutputError(Depth2ImgError):
    """An output target cannot be written (a folder, a parent that is a file, no permission, a collision...)."""
