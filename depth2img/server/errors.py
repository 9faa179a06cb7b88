"""The server's own typed errors, and the one table mapping every typed error to an HTTP status."""

from __future__ import annotations

from ..errors import (
    Depth2ImgError,
    GenerationCancelled,
    InvalidImageError,
    InvalidRequestError,
    ModelLoadError,
    NonFiniteOutputError,
)


class NotFoundError(Depth2ImgError):
    """No job, image or model with that id (ids are ours; anything else is simply not found)."""


class QueueFullError(Depth2ImgError):
    """The bounded queue is full: 429 with Retry-After."""

    def __init__(self, size: int, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"the queue is full ({size} jobs waiting); retry in {retry_after} s")


class NotReadyError(Depth2ImgError):
    """The job has no such result (yet): 409."""


class UnsupportedError(InvalidRequestError):
    """A valid A1111 request that depth2img cannot honour (resize_mode 3, txt2img without depth...)."""


class SamplerNotFoundError(InvalidRequestError):
    """A1111 answers 404 "Sampler not found" for an unknown sampler_name; so do we on /sdapi."""


class JobFailedError(Depth2ImgError):
    """A job ran and failed (an /sdapi call waits for it): answered with the status its error mapped to."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class BodyTooLargeError(Depth2ImgError):
    pass


class ShuttingDownError(Depth2ImgError):
    pass


# (class, status) in lookup order: the first isinstance match wins; anything else typed is 422.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (SamplerNotFoundError, 404),
    (QueueFullError, 429),
    (NotReadyError, 409),
    (BodyTooLargeError, 413),
    (ShuttingDownError, 503),
    (InvalidImageError, 422),
    (InvalidRequestError, 422),
    (ModelLoadError, 503),
    (NonFiniteOutputError, 500),
    (GenerationCancelled, 409),
    (Depth2ImgError, 422),
)


def status_for(error: Exception) -> int:
    if isinstance(error, JobFailedError):
        return error.status
    return next(code for cls, code in STATUS if isinstance(error, cls))
