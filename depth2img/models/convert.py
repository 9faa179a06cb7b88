"""Convert between a diffusers folder and an original-layout ``.safetensors`` / ``.ckpt``, both ways.

* original -> folder: the file is loaded exactly as :func:`~depth2img.models.single_file.load_single_file`
  does (same strict checks) but without a dtype cast, and each component is saved with ``save_pretrained``:
  a standard ``StableDiffusionDepth2ImgPipeline`` folder (depth estimator included, converted from the
  file's own MiDaS weights; feature extractor = the hub's ``DPTImageProcessor`` settings, as diffusers
  expects). Tensors the folder has no place for (CLIP's last layer and head, MiDaS's ImageNet head,
  ``model_ema.*``, the schedule buffers) go to ``original_extras.safetensors`` in the folder, which
  diffusers ignores and the reverse direction restores, so ckpt -> folder -> ckpt is bit-exact.
* folder -> original: the folder's weight files are read directly (no model is built), renamed with
  ``ldm_keys.py`` / ``convert_midas.py``, and the 12 schedule buffers are computed exactly like the
  original ``register_schedule`` (float64 numpy, stored float32) unless the extras carry them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from ..outputs import atomic_output, atomic_write_bytes
from .convert_midas import MIDAS_PREFIX, dpt_to_midas
from .detect import OPENCLIP_PREFIX, UNET
from .ldm_keys import openclip_to_ldm, unet_to_ldm, vae_to_ldm
from .files import CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIXES, sidecar_config
from .safe_load import load_state_dict

EXTRAS_FILE = "original_extras.safetensors"
VAE = "first_stage_model."
HFCLIP = "cond_stage_model.transformer."

# the hub SD2-depth feature_extractor/preprocessor_config.json (diffusers_depth2img.md §0)
HUB_DPT_PROCESSOR = dict(
    do_resize=True, size={"height": 384, "width": 384}, keep_aspect_ratio=False, ensure_multiple_of=1,
    resample=2, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
)


def schedule_buffers(timesteps: int = 1000, linear_start: float = 0.00085, linear_end: float = 0.012) -> dict[str, torch.Tensor]:
    """The 12 DDPM buffers of the original ``LatentDiffusion.register_schedule`` (beta_schedule "linear")."""
    betas = (torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2).numpy()
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    f = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in f.items()}


# --------------------------------------------------------------------------------------------------
# original -> diffusers folder
# --------------------------------------------------------------------------------------------------


def original_to_folder(src: str | Path, out: str | Path, *, half: bool = False, config: str | Path | None = None) -> Path:
    """Write a diffusers folder for an original-layout checkpoint (depth or img2img)."""
    from safetensors.torch import save_file

    from .single_file import components_from_state_dict, ignored_reason

    src, out = Path(src), Path(out)
    _check_out(out, folder=True)
    sd = load_state_dict(src)
    dtype = torch.float16 if half else None
    c = components_from_state_dict(sd, path=src, dtype=dtype, config=config, check_finite=False)
    n_text = c.text_encoder.config.num_hidden_layers if OPENCLIP_PREFIX + "token_embedding.weight" in sd else None
    out.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(out / "unet", safe_serialization=True)
    c.vae.save_pretrained(out / "vae", safe_serialization=True)
    c.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    c.tokenizer.save_pretrained(out / "tokenizer")
    c.scheduler.save_pretrained(out / "scheduler")
    if c.depth_estimator is not None:
        from transformers import DPTImageProcessor

        c.depth_estimator.save_pretrained(out / "depth_estimator", safe_serialization=True)
        _set_architecture(out / "depth_estimator" / "config.json", "DPTForDepthEstimation")
        DPTImageProcessor(**HUB_DPT_PROCESSOR).save_pretrained(out / "feature_extractor")
    extras = {k: v.contiguous() for k, v in sd.items() if ignored_reason(k, n_text) is not None}
    if extras:
        if half:
            extras = {k: (v.half() if v.is_floating_point() else v) for k, v in extras.items()}
        with atomic_output(out / EXTRAS_FILE) as tmp:
            save_file(extras, str(tmp), metadata={"source": src.name})
    _write_model_index(out, depth=c.depth_estimator is not None)
    return out


def _set_architecture(config_json: Path, name: str) -> None:
    cfg = json.loads(config_json.read_text())
    cfg["architectures"] = [name]
    atomic_write_bytes(config_json, (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())


def _write_model_index(out: Path, depth: bool) -> None:
    import diffusers

    index: dict[str, Any] = {
        "_class_name": "StableDiffusionDepth2ImgPipeline" if depth else "StableDiffusionImg2ImgPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if depth:
        index["depth_estimator"] = ["transformers", "DPTForDepthEstimation"]
        index["feature_extractor"] = ["transformers", "DPTImageProcessor"]
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    atomic_write_bytes(out / "model_index.json", (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


# --------------------------------------------------------------------------------------------------
# diffusers folder -> original
# --------------------------------------------------------------------------------------------------


def _read_component(folder: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Weights of one component folder: a single file or a sharded ``*.index.json`` (safe loaders only)."""
    for name in names:
        p = folder / name
        if p.is_file():
            return load_state_dict(p)
        idx = folder / (name + ".index.json")
        if idx.is_file():
            shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for s in shards:
                if "/" in s or "\\" in s or s.startswith("."):
                    raise ModelLoadError(f"{idx}: shard name {s!r} is not a plain file name")
                out.update(load_state_dict(folder / s))
            return out
    raise ModelLoadError(f"{folder}: no weights found (looked for {', '.join(names)})")


_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin")
_HF_WEIGHTS = ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")


def folder_to_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The original-layout flat state dict of a diffusers SD folder (depth_model included if present)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"{folder} is not a diffusers folder (no model_index.json)")
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    text_cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
    sd: dict[str, torch.Tensor] = {}
    sd.update({UNET + k: v for k, v in unet_to_ldm(_read_component(folder / "unet", _DIFFUSERS_WEIGHTS), unet_cfg).items()})
    vae = vae_to_ldm(_read_component(folder / "vae", _DIFFUSERS_WEIGHTS), len(vae_cfg["block_out_channels"]))
    sd.update({VAE + k: v for k, v in vae.items()})
    text = _read_component(folder / "text_encoder", _HF_WEIGHTS)
    text.pop("text_model.embeddings.position_ids", None)
    text.pop("text_projection.weight", None)
    if text_cfg.get("hidden_act", "gelu") == "quick_gelu":  # SD1.x: transformers CLIP names inside the file
        sd.update({HFCLIP + ("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in text.items()})
    else:
        sd.update({OPENCLIP_PREFIX + k: v for k, v in openclip_to_ldm(text).items()})
    if (folder / "depth_estimator").is_dir():
        sd.update(dpt_to_midas(_read_component(folder / "depth_estimator", _HF_WEIGHTS), MIDAS_PREFIX))
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if sched.get("beta_schedule") == "scaled_linear":
        sd.update(schedule_buffers(sched["num_train_timesteps"], sched["beta_start"], sched["beta_end"]))
    if (folder / EXTRAS_FILE).is_file():
        sd.update(load_state_dict(folder / EXTRAS_FILE))
    return sd


# diffusers config fields that decide what a model computes; a file loaded back must reproduce each
_ROUND_TRIP_FIELDS = {
    "unet": ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
             "up_block_types", "cross_attention_dim", "attention_head_dim", "use_linear_projection",
             "transformer_layers_per_block", "upcast_attention", "class_embed_type", "addition_embed_type"),
    "vae": ("block_out_channels", "layers_per_block", "latent_channels", "scaling_factor"),
    "text_encoder": ("num_hidden_layers", "hidden_size", "hidden_act", "num_attention_heads"),
    "scheduler": ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type"),
}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_round_trip(folder: Path, sd: Mapping[str, torch.Tensor], config: str | Path | None) -> None:
    """Refuse, before anything is written, a folder whose original-layout file would not load back as the
    same model: the file is loaded on the meta device (shapes only) exactly as ``--model FILE`` would load
    it (with ``config`` as its yaml, else by detection) and every deciding config field is compared.

    The single-file format stores no architecture: a non-standard model needs its yaml (``--config``).
    """
    from .single_file import components_from_state_dict

    meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}
    hint = "" if config is not None else "; give its original .yaml with --config"
    try:
        back = components_from_state_dict(meta, dtype=None, config=config, check_finite=False)
    except ModelLoadError as error:
        what = f"with {Path(config).name}" if config is not None else "(not a standard SD 1.x/2.x architecture)"
        raise ModelLoadError(f"{folder} would not load back from a single file {what}: {error}{hint}") from None
    for part, fields in _ROUND_TRIP_FIELDS.items():
        config_file = folder / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
        ours = json.loads(config_file.read_text())
        theirs = dict(getattr(back, part).config.to_dict() if part == "text_encoder" else getattr(back, part).config)
        for field in fields:
            if field in ours and _plain(ours[field]) != _plain(theirs.get(field)):
                raise ModelLoadError(
                    f"{folder} has a non-standard {part} ({field} {ours[field]!r}; a single file would load back "
                    f"with {theirs.get(field)!r}){hint}"
                )


def save_original(sd: Mapping[str, torch.Tensor], out: str | Path, *, half: bool = False) -> Path:
    """Write a flat ``.safetensors`` or a Lightning-style ``{"state_dict": ...}`` ``.ckpt``."""
    out = Path(out)
    _check_out(out, folder=False)
    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    with atomic_output(out) as tmp:
        if out.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={"format": "pt"})
        else:
            torch.save({"state_dict": sd}, tmp)
    return out


def _check_out(out: Path, folder: bool) -> None:
    if out.exists() and (not folder or any(out.iterdir())):
        raise ModelLoadError(f"{out} already exists; choose a new output path")


def convert(src: str | Path, out: str | Path, *, half: bool = False, config: str | Path | None = None) -> Path:
    """Any supported direction, chosen by the paths: a folder or a checkpoint file on either side."""
    src, out = Path(src), Path(out)
    out_is_file = out.suffix.lower() in CHECKPOINT_SUFFIXES
    if src.is_dir():
        sd = folder_to_state_dict(src)
        if not out_is_file:
            raise ModelLoadError(f"{src} is already a diffusers folder; give OUT a .safetensors or .ckpt name")
        _check_out(out, folder=False)
        check_round_trip(src, sd, config)
        if config is not None:  # the yaml the file needs to load: beside it, under its name (A1111's rule)
            atomic_write_bytes(out.with_suffix(Path(config).suffix), Path(config).read_bytes())
        return save_original(sd, out, half=half)
    if not src.is_file():
        raise ModelLoadError(f"not found: {src}")
    if out_is_file:  # checkpoint -> checkpoint (e.g. .ckpt -> .safetensors), via the safe loader
        return save_original(load_state_dict(src), out, half=half)
    return original_to_folder(src, out, half=half, config=config)


def copy_sidecar_config(src: Path, out: Path) -> None:
    """Keep a same-name .yaml next to a converted checkpoint (A1111 needs it for the depth model)."""
    config = sidecar_config(src)
    if config is not None and out.suffix.lower() in CHECKPOINT_SUFFIXES:
        atomic_write_bytes(out.with_suffix(config.suffix), config.read_bytes())
