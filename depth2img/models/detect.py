"""What kind of Stable Diffusion model an original-layout checkpoint is, and its original (LDM yaml) config.

Rules (original_and_a1111.md §1, §4, §6.1):

* A same-name ``.yaml`` beside the checkpoint (A1111's convention: ``512-depth-ema.yaml`` next to
  ``512-depth-ema.ckpt``), or an explicit ``config=``, wins: its ``unet_config``, ``parameterization``,
  ``conditioning_key``, schedule and ``scale_factor`` are used, after checking that they fit the weights.
* Otherwise keys and shapes decide: ``input_blocks.0.0.weight`` [320, 5, 3, 3] plus A1111's detection key
  ``depth_model.model.pretrained.act_postprocess3.0.project.0.bias`` = SD2 depth (eps); cross-attention
  width 1024 = SD2.x, 768 = SD1.x; SD2.x 4-channel models without a yaml are taken as v-prediction (the
  768-v models; diffusers does the same), SD1.x and depth models as epsilon.

The result is a yaml-shaped dict, so diffusers' ``create_*_diffusers_config_from_ldm`` read either source.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelLoadError
from .files import sidecar_config
from .kinds import INPAINT_UNET_CHANNELS, ModelKind, kind_from_unet_channels

UNET = "model.diffusion_model."
DEPTH_KEY = "depth_model.model.pretrained.act_postprocess3.0.project.0.bias"  # A1111's detection key
OPENCLIP_PREFIX = "cond_stage_model.model."
HFCLIP_PREFIX = "cond_stage_model.transformer."

_VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}
_UNET_SD2 = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_spatial_transformer": True,
    "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": 1024, "legacy": False,
}
_UNET_SD1 = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_heads": 8, "use_spatial_transformer": True,
    "transformer_depth": 1, "context_dim": 768, "legacy": False,
}


@dataclass
class ModelSpec:
    """The detected model: kind, family, prediction type, and a yaml-shaped ``original_config``."""

    kind: ModelKind
    family: Literal["sd1", "sd2"]
    prediction_type: Literal["epsilon", "v_prediction"]
    original_config: dict[str, Any]
    config_path: Path | None  # the yaml used, if any

    @property
    def params(self) -> dict[str, Any]:
        return self.original_config["model"]["params"]

    @property
    def unet_params(self) -> dict[str, Any]:
        return self.params["unet_config"]["params"]


def read_original_config(path: str | Path) -> dict[str, Any]:
    """Parse an original LDM yaml (``yaml.safe_load``: no tags, no code)."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelLoadError(f"config {path.name} could not be read: {e}") from None
    try:
        cfg["model"]["params"]["unet_config"]["params"]["in_channels"]
    except (TypeError, KeyError):
        raise ModelLoadError(f"config {path.name} is not a Stable Diffusion config (no model.params.unet_config)") from None
    return cfg


def _shape(shapes: Mapping[str, Any], key: str) -> list[int] | None:
    s = shapes.get(key)
    return None if s is None else list(getattr(s, "shape", s))


def _default_config(family: str, in_channels: int, depth: bool) -> dict[str, Any]:
    unet = dict(_UNET_SD2 if family == "sd2" else _UNET_SD1, in_channels=in_channels)
    params: dict[str, Any] = {
        "linear_start": 0.00085, "linear_end": 0.0120, "timesteps": 1000, "scale_factor": 0.18215,
        "conditioning_key": "hybrid" if depth else "crossattn",
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL",
                               "params": {"embed_dim": 4, "ddconfig": dict(_VAE_DDCONFIG)}},
    }
    if depth:
        params["depth_stage_config"] = {"target": "ldm.modules.midas.api.MiDaSInference",
                                        "params": {"model_type": "dpt_hybrid"}}
    return {"model": {"params": params}}


def detect(shapes: Mapping[str, Any], path: str | Path | None = None, config: str | Path | None = None) -> ModelSpec:
    """Detect the model in a state dict (``shapes``: key -> tensor or shape) of an original-layout file.

    ``config`` (explicit yaml) > the same-name yaml beside ``path`` > keys and shapes.
    Raises :class:`ModelLoadError` with the cause when the weights and the config disagree.
    """
    conv_in = _shape(shapes, UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        if any(k.startswith("down_blocks.") or k.startswith("unet.") for k in shapes):
            raise ModelLoadError("this file holds diffusers-layout weights, not an original Stable Diffusion checkpoint")
        raise ModelLoadError(
            f"not a Stable Diffusion checkpoint: no '{UNET}input_blocks.0.0.weight' "
            "(a LoRA, VAE or embedding file?)"
        )
    in_ch = conv_in[1]
    k = _shape(shapes, UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    context_dim = k[1] if k else None
    has_depth = DEPTH_KEY in shapes
    kind = kind_from_unet_channels(in_ch)
    if in_ch == INPAINT_UNET_CHANNELS:
        raise ModelLoadError("this is an inpainting model (9 input channels); depth2img needs a depth or img2img model")
    if kind is None:
        raise ModelLoadError(f"the UNet has {in_ch} input channels; expected 5 (depth) or 4 (img2img)")
    if kind == "depth" and not has_depth:
        raise ModelLoadError(
            "the UNet has 5 input channels (a depth model) but the file carries no MiDaS weights "
            f"('{DEPTH_KEY}' is missing)"
        )
    if OPENCLIP_PREFIX + "token_embedding.weight" in shapes:
        family = "sd2"  # OpenCLIP text tower
    elif HFCLIP_PREFIX + "text_model.embeddings.token_embedding.weight" in shapes:
        family = "sd1"  # OpenAI CLIP in transformers layout
    else:
        family = "sd2" if context_dim == 1024 else "sd1"
    described = f"this is a depth model ({conv_in})" if kind == "depth" else f"this is a {in_ch}-channel model ({conv_in})"

    cfg_path = Path(config) if config is not None else (sidecar_config(path) if path is not None else None)
    if cfg_path is None:
        pred = "v_prediction" if (family == "sd2" and kind == "img2img") else "epsilon"
        return ModelSpec(kind, family, pred, _default_config(family, in_ch, kind == "depth"), None)

    cfg = copy.deepcopy(read_original_config(cfg_path))
    params = cfg["model"]["params"]
    unet = params["unet_config"]["params"]
    name = cfg_path.name
    if unet.get("in_channels") != in_ch:
        raise ModelLoadError(f"{described}, but config {name} says {unet.get('in_channels')} input channels")
    if context_dim is not None and unet.get("context_dim") not in (None, context_dim):
        raise ModelLoadError(
            f"the UNet cross-attends to {context_dim}-dim text embeddings, but config {name} says "
            f"context_dim {unet.get('context_dim')} (an SD{'2' if context_dim == 1024 else '1'}.x file with an "
            f"SD{'1' if context_dim == 1024 else '2'}.x config?)"
        )
    if unet.get("model_channels") not in (None, conv_in[0]):
        raise ModelLoadError(f"the UNet has {conv_in[0]} base channels, but config {name} says {unet.get('model_channels')}")
    yaml_depth = "depth_stage_config" in params or str(params.get("conditioning_key")) == "hybrid"
    if kind == "depth" and not yaml_depth:
        raise ModelLoadError(f"{described}, but config {name} has no depth stage (use v2-midas-inference.yaml)")
    if kind == "img2img" and "depth_stage_config" in params:
        raise ModelLoadError(f"{described}, but config {name} describes a depth model (5 input channels)")
    param = params.get("parameterization", "eps")
    if param not in ("eps", "v"):
        raise ModelLoadError(f"config {name}: unsupported parameterization {param!r} (expected eps or v)")
    params.setdefault("scale_factor", 0.18215)
    params.setdefault("linear_start", 0.00085)
    params.setdefault("linear_end", 0.0120)
    params.setdefault("timesteps", 1000)
    beta = params.get("beta_schedule", "linear")
    if beta != "linear":
        raise ModelLoadError(f"config {name}: beta_schedule {beta!r} is not supported (the SD schedule is 'linear')")
    if "first_stage_config" not in params:
        params["first_stage_config"] = _default_config(family, in_ch, False)["model"]["params"]["first_stage_config"]
    pred = "v_prediction" if param == "v" else "epsilon"
    return ModelSpec(kind, family, pred, cfg, cfg_path)
