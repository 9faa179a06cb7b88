"""The native API's JSON shapes, derived from :data:`depth2img.request.PARAMS` (one declaration).

Every :class:`~depth2img.request.GenerationRequest` field becomes a pydantic field with the Param's type,
default, range, choices and help text, so ``/docs`` documents exactly what the engine accepts and a new
request field appears here without an edit. Images travel as base64 strings (an optional
``data:image/...;base64,`` prefix is allowed, as A1111 allows). Ranges are declared for the schema; the
authoritative check stays ``GenerationRequest.validate`` (it runs again in the worker's ``plan``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..request import DEFAULTS, PARAMS, Param

B64_HELP = " Base64 (a data:image/...;base64, prefix is accepted)."


def _annotation(spec: Param) -> tuple[Any, dict[str, Any]]:
    """The Python type and pydantic constraints for one Param kind."""
    bounds = {"ge": spec.low, "le": spec.high}
    kind = spec.kind
    if kind == "text":
        return str, {}
    if kind == "float":
        return float, {**bounds, "allow_inf_nan": False}
    if kind == "int":
        return int, bounds
    if kind in ("seed", "size"):
        return Optional[int], bounds
    if kind == "choice":
        return Literal[spec.choices], {}  # type: ignore[valid-type]
    if kind == "bool":
        return bool, {}
    if kind == "pair":
        return tuple[float, float], {}
    if kind in ("image", "depth"):
        return Optional[str], {}
    if kind == "extra":
        return dict[str, Optional[str | int | float | bool]], {}
    if kind == "names":
        return tuple[str, ...], {}
    raise AssertionError(f"no schema for Param kind {kind!r}")


def _fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, spec in PARAMS.items():
        annotation, constraints = _annotation(spec)
        if spec.optional:  # null or absent: the preset decides (GenerationRequest.resolved)
            annotation = Optional[annotation]
        help_text = spec.help + (B64_HELP if spec.kind in ("image", "depth") else "")
        extra = {"a1111": spec.a1111} if spec.a1111 else {}
        if name in DEFAULTS:
            default = DEFAULTS[name]
            fields[name] = (annotation, Field(default, description=help_text, json_schema_extra=extra or None, **constraints))
        else:  # default_factory fields (extra)
            fields[name] = (annotation, Field(default_factory=dict, description=help_text, **constraints))
    return fields


_config = ConfigDict(extra="forbid")  # a typo'd field is an error, not silently dropped

JobRequest = create_model(
    "JobRequest",
    __config__=_config,
    model=(Optional[str], Field(None, description="Model id from GET /api/v1/models; default: the server's model.",
                                max_length=256)),
    depth_model=(Optional[str], Field(None, description="Depth estimator: a model id from GET /api/v1/models whose "
                                      "folder has one; default: the model's own.", max_length=256)),
    **_fields(),
)
JobRequest.__doc__ = "A generation job: every GenerationRequest field, plus the model to run it with."

IMAGE_FIELDS: tuple[str, ...] = tuple(n for n, p in PARAMS.items() if p.kind in ("image", "depth"))


class DepthJobRequest(BaseModel):
    """A depth-map job: the model's depth estimate of one image (``depth2img depth``)."""

    model_config = _config
    image: str = Field(description="The photo." + B64_HELP)
    model: Optional[str] = Field(None, max_length=256, description="Model id (its depth estimator is used).")
    depth_model: Optional[str] = Field(None, max_length=256, description="Depth estimator model id.")


class JobAccepted(BaseModel):
    id: str
    state: str
    position: int = Field(description="Jobs ahead of this one (0: next or running).")
    seeds: list[int]
    url: str


class JobStatus(BaseModel):
    id: str
    kind: Literal["generate", "depth"]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    model: str
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    position: Optional[int] = None
    step: int = 0
    total: int = 0
    eta: Optional[float] = Field(None, description="Seconds left (estimated from the steps so far).")
    error: Optional[str] = None
    seeds: list[int] = []
    images: list[str] = Field([], description="URLs of the result PNGs (with their infotext).")
    depth: Optional[str] = Field(None, description="URL of the 16-bit depth PNG.")
    infotexts: list[str] = []
    warnings: list[str] = []


class JobList(BaseModel):
    jobs: list[JobStatus]
    total: int
    offset: int
    limit: int


class ModelInfo(BaseModel):
    id: str
    kind: str
    layout: str
    size: int
    loaded: bool
    default: bool


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    model: str
    loaded: Optional[str]
    queued: int
    running: Optional[str]
    device: str
    dtype: str


class ErrorBody(BaseModel):
    detail: str

