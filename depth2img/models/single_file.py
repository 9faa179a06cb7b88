"""Build a complete model from one original-layout checkpoint (``512-depth-ema.ckpt`` / ``.safetensors``).

Offline and strict: UNet, VAE and text encoder go through diffusers' own ``single_file_utils`` conversions
with the detected (or yaml) configuration; the depth estimator is the file's own MiDaS DPT-Hybrid
(``convert_midas.py``) with the original MiDaS transform as feature extractor; the tokenizer comes from the
shipped CLIP vocabulary; the scheduler is the hub's SD2-depth PNDM config built from the yaml's schedule.
Models are built without allocating parameters (meta device) and receive the file's tensors by
``load_state_dict(assign=True)``, so a memory-mapped safetensors file is not copied unless a dtype cast
is needed. Every key of the file is either consumed or listed in :func:`ignored_reason`; anything else,
and any missing or mis-shaped tensor, raises :class:`CheckpointKeyError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointKeyError, ModelLoadError, NonFiniteWeightsError
from .components import Components, check_components
from .convert_midas import MIDAS_PREFIX, midas_to_dpt
from .detect import HFCLIP_PREFIX, OPENCLIP_PREFIX, UNET, ModelSpec, detect
from .ldm_keys import openclip_key_to_ldm, unet_key_to_ldm, vae_key_to_ldm
from .files import PICKLE_SUFFIXES
from .safe_load import find_non_finite, load_state_dict

VAE = "first_stage_model."
OPENCLIP_H_WIDTH, OPENCLIP_H_LAYERS = 1024, 24  # SD 2.x's text tower, OpenCLIP ViT-H/14
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
})


def ignored_reason(key: str, n_text_layers_used: int | None) -> str | None:
    """Why a key of an original checkpoint is deliberately not loaded, or ``None`` if it must be used."""
    if key.startswith("model_ema."):
        return "EMA copy (the released -ema file already holds the EMA weights in model.*)"
    if key in SCHEDULE_BUFFERS or key in ("logvar", "lvlb_weights"):
        return "diffusion schedule buffer (recomputed by the scheduler)"
    if key in (OPENCLIP_PREFIX + "text_projection", OPENCLIP_PREFIX + "logit_scale", OPENCLIP_PREFIX + "attn_mask"):
        return "CLIP head, unused for conditioning"
    m = re.match(re.escape(OPENCLIP_PREFIX) + r"transformer\.resblocks\.(\d+)\.", key)
    if m and n_text_layers_used is not None and int(m[1]) >= n_text_layers_used:
        return "text layer after the penultimate one (the original conditions on the penultimate layer)"
    if key == HFCLIP_PREFIX + "text_model.embeddings.position_ids":
        return "constant position ids"
    if key.startswith(MIDAS_PREFIX + "pretrained.model.head."):
        return "timm ImageNet head, unused by DPT"
    return None


# --------------------------------------------------------------------------------------------------
# building without allocation
# --------------------------------------------------------------------------------------------------


def empty_parameters() -> Any:
    """Parameters on the meta device (no memory, no init cost) while buffers stay real: accelerate's
    ``init_empty_weights`` (buffers such as CLIP's position_ids are not in the file, so they must be real)."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


@contextmanager
def empty_transformers_model() -> Iterator[None]:
    """:func:`empty_parameters` plus transformers' ``no_init_weights``: a ``PreTrainedModel`` built from a
    config runs its ``_init_weights`` (``normal_`` on every weight) even when the weights are on meta, each
    op going through torch's Python reference decompositions: 0.7 s of the SD2-depth text encoder and DPT
    construction, all discarded by the assignment that follows. Buffers the file lacks (CLIP's position_ids)
    are set by the modules' ``__init__``, not by ``_init_weights``. Both contexts swap module attributes
    only while the model is built, as accelerate's alone already did."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights

    with empty_parameters(), no_init_weights():
        yield


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], part: str, dtype: torch.dtype | None,
                to_original: Any = None) -> nn.Module:
    """Assign ``sd`` to ``model`` (built with :func:`empty_parameters`), requiring an exact key/shape match.

    ``to_original(key) -> str`` names keys in the original layout in error messages. ``dtype=None`` keeps
    the file's dtype (and the very tensor objects: conversion stays bit-exact and zero-copy).
    """
    name = to_original or (lambda k: k)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    if missing:
        raise CheckpointKeyError(f"{part}: the checkpoint lacks {name(missing[0])!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = [k for k in sd if k not in expected]
    if extra:
        raise CheckpointKeyError(f"{part}: unexpected tensor {name(extra[0])!r} for this model")
    for k, t in expected.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise CheckpointKeyError(
                f"{part}: {name(k)!r} has shape {list(sd[k].shape)} in the checkpoint, the model expects {list(t.shape)}"
            )
    cast = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() and v.dtype != dtype else v) for k, v in sd.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    # Parameters keep requires_grad, as diffusers' from_pretrained leaves them (generation runs under no_grad):
    # torch.autocast caches its 16-bit weight copies only for such parameters, and the low-precision mode
    # relies on that cache to cast each weight once per image, not at every step (fast.precision_region).
    return model.eval()


def check_consumed(sd: Mapping[str, torch.Tensor], prefix: str, model: nn.Module, original_name: Any,
                   part: str, n_text_layers: int | None = None) -> None:
    """diffusers' converters silently skip keys they do not recognise: require every ``prefix*`` key of the
    file to be the original name of a model tensor (or deliberately ignored)."""
    expected = {original_name(k) for k in model.state_dict()}
    for k in sd:
        if k.startswith(prefix) and k not in expected and ignored_reason(k, n_text_layers) is None:
            raise CheckpointKeyError(f"{part}: unexpected tensor {k!r} in the checkpoint")


# --------------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------------


def build_unet(sd: Mapping[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype | None) -> Any:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    cfg = create_unet_diffusers_config_from_ldm(spec.original_config, sd)
    cfg["sample_size"] = spec.unet_params.get("image_size", 32)
    with empty_parameters():
        unet = UNet2DConditionModel(**cfg)
    converted = convert_ldm_unet_checkpoint(sd, unet.config)

    def original_name(k: str) -> str:
        try:
            return UNET + unet_key_to_ldm(k, unet.config)
        except KeyError:
            return k

    load_strict(unet, converted, "UNet", dtype, original_name)
    check_consumed(sd, UNET, unet, original_name, "UNet")
    return unet


def build_vae(sd: Mapping[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype | None) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, create_vae_diffusers_config_from_ldm

    vae_sd = {k: v for k, v in sd.items() if k.startswith(VAE)}
    cfg = create_vae_diffusers_config_from_ldm(spec.original_config, sd)
    cfg["sample_size"] = 512 if spec.family == "sd1" else 768
    with empty_parameters():
        vae = AutoencoderKL(**cfg)
    def original_name(k: str) -> str:
        try:
            return VAE + vae_key_to_ldm(k, len(vae.config.block_out_channels))
        except KeyError:
            return k

    load_strict(vae, convert_ldm_vae_checkpoint(vae_sd, vae.config), "VAE", dtype, original_name)
    check_consumed(sd, VAE, vae, original_name, "VAE")
    return vae


def _text_layers_used(spec: ModelSpec, sd: Mapping[str, torch.Tensor]) -> int | None:
    if OPENCLIP_PREFIX + "token_embedding.weight" not in sd:
        return None
    n = 1 + max((int(m[1]) for k in sd if (m := re.match(re.escape(OPENCLIP_PREFIX) + r"transformer\.resblocks\.(\d+)\.", k))), default=-1)
    layer = (spec.params.get("cond_stage_config", {}) or {}).get("params", {}).get("layer", "penultimate")
    if layer not in ("penultimate", "last"):
        raise ModelLoadError(f"text encoder layer {layer!r} is not supported (expected 'penultimate' or 'last')")
    width = sd[OPENCLIP_PREFIX + "token_embedding.weight"].shape[1]
    if layer == "penultimate" and width == OPENCLIP_H_WIDTH and n == OPENCLIP_H_LAYERS - 1:
        return n  # the unused last layer was already dropped (diffusers' SD2 folder -> original script does)
    return n - 1 if layer == "penultimate" else n


def build_text_encoder(sd: Mapping[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype | None, n_layers: int | None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    if n_layers is not None:  # OpenCLIP (SD2.x): cond_stage_model.model.*
        from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

        tok = sd[OPENCLIP_PREFIX + "token_embedding.weight"]
        width = tok.shape[1]
        proj = sd.get(OPENCLIP_PREFIX + "text_projection")
        cfg = CLIPTextConfig(
            vocab_size=tok.shape[0], hidden_size=width, num_hidden_layers=n_layers, num_attention_heads=width // 64,
            intermediate_size=sd[OPENCLIP_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            max_position_embeddings=sd[OPENCLIP_PREFIX + "positional_embedding"].shape[0], hidden_act="gelu",
            layer_norm_eps=1e-5, projection_dim=proj.shape[1] if proj is not None else 512,
            bos_token_id=0, eos_token_id=2, pad_token_id=1,
        )
        with empty_transformers_model():
            model = CLIPTextModel(cfg)
        keep = {k: v for k, v in sd.items() if k.startswith(OPENCLIP_PREFIX) and ignored_reason(k, n_layers) is None}
        converted = convert_open_clip_checkpoint(model, keep)
        converted.pop("text_projection.weight", None)
        converted = _clip_names(converted, model)
        def original_name(k: str) -> str:
            try:
                return OPENCLIP_PREFIX + openclip_key_to_ldm(k)
            except KeyError:
                return k

        load_strict(model, converted, "text encoder", dtype, original_name)
        check_consumed(sd, OPENCLIP_PREFIX, model, original_name, "text encoder", n_layers)
        return model
    prefix = HFCLIP_PREFIX
    if prefix + "text_model.embeddings.token_embedding.weight" not in sd:
        raise CheckpointKeyError("text encoder: neither OpenCLIP (cond_stage_model.model.*) nor CLIP (cond_stage_model.transformer.*) weights found")
    hf = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and ignored_reason(k, None) is None}
    tok = hf["text_model.embeddings.token_embedding.weight"]
    n = 1 + max(int(m[1]) for k in hf if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k)))
    cfg = CLIPTextConfig(
        vocab_size=tok.shape[0], hidden_size=tok.shape[1], num_hidden_layers=n, num_attention_heads=tok.shape[1] // 64,
        intermediate_size=hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=hf["text_model.embeddings.position_embedding.weight"].shape[0],
        hidden_act="quick_gelu", projection_dim=tok.shape[1],
    )
    with empty_transformers_model():
        model = CLIPTextModel(cfg)
    return load_strict(model, _clip_names(hf, model), "text encoder", dtype)


def _clip_names(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """transformers 5 names CLIPTextModel weights without the ``text_model.`` prefix that files carry."""
    if any(k.startswith("text_model.") for k in model.state_dict()):
        return sd
    return {k.removeprefix("text_model."): v for k, v in sd.items()}


def build_depth(sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> Any:
    from .midas import MidasDPTForDepthEstimation, dpt_hybrid_config

    converted, _ignored = midas_to_dpt(sd)
    with empty_transformers_model():
        model = MidasDPTForDepthEstimation(dpt_hybrid_config())
    return load_strict(model, converted, "depth model", dtype)


def build_scheduler(spec: ModelSpec) -> Any:
    """PNDM exactly as the hub SD2-depth ``scheduler_config.json``, with the yaml's schedule (§2: betas =
    linspace(sqrt(start), sqrt(end), T)^2 = diffusers ``scaled_linear``)."""
    from diffusers import PNDMScheduler

    p = spec.params
    return PNDMScheduler(
        num_train_timesteps=int(p["timesteps"]), beta_start=float(p["linear_start"]), beta_end=float(p["linear_end"]),
        beta_schedule="scaled_linear", prediction_type=spec.prediction_type, set_alpha_to_one=False,
        skip_prk_steps=True, steps_offset=1, trained_betas=None,
    )


def check_all_keys_used(sd: Mapping[str, torch.Tensor], n_text_layers: int | None, kind: str) -> None:
    """Every key must belong to a component or have an :func:`ignored_reason`."""
    prefixes = (UNET, VAE, OPENCLIP_PREFIX, HFCLIP_PREFIX) + ((MIDAS_PREFIX,) if kind == "depth" else ())
    for k in sd:
        if not k.startswith(prefixes) and ignored_reason(k, n_text_layers) is None:
            raise CheckpointKeyError(f"unexpected tensor {k!r} in the checkpoint (not part of a Stable Diffusion {kind} model)")


def cache_entry_finite(sd: Mapping[str, torch.Tensor], entry: Path) -> bool:
    """Whether every floating-point tensor of our cache entry ``entry`` (read into ``sd``) is finite: read
    in full once, then remembered beside the entry while it is unchanged (cache.py, trust model). ``False``
    when some tensor is not finite: the per-component check then decides (ignored tensors may be)."""
    from .cache import mark_verified_finite, verified_finite

    if verified_finite(entry):
        return True
    if find_non_finite(sd):  # every tensor, so the marker holds whatever a yaml later selects
        return False
    mark_verified_finite(entry)
    return True


def load_single_file(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    config: str | Path | None = None,
    cache_dir: str | Path | None = None,
    check_finite: bool = True,
) -> Components:
    """Load an original-layout SD checkpoint (depth or plain img2img) into :class:`Components`, offline.

    ``config``: an original yaml (else the same-name yaml beside the file, else detection by keys).
    ``cache_dir``: pickles are converted once to a memory-mappable safetensors copy there (see cache.py).
    """
    from .cache import SHORT_HASH_LENGTH, cached_checkpoint, short_hash

    path = Path(path)
    cache_entry = None
    if cache_dir is not None and path.suffix.lower() in PICKLE_SUFFIXES:
        cache_entry, digest = cached_checkpoint(path, Path(cache_dir))
        read_from, model_hash = cache_entry, digest[:SHORT_HASH_LENGTH]
    else:
        read_from, model_hash = path, None
    sd = load_state_dict(read_from)  # a bad file is reported before the hash costs a full read
    if model_hash is None:
        model_hash = short_hash(path, cache_dir)
    if check_finite and cache_entry is not None and cache_entry_finite(sd, cache_entry):
        check_finite = False
    return components_from_state_dict(sd, path=path, dtype=dtype, config=config, check_finite=check_finite, model_hash=model_hash)


def components_from_state_dict(
    sd: Mapping[str, torch.Tensor], *, path: str | Path | None = None, dtype: torch.dtype | None = torch.float32,
    config: str | Path | None = None, check_finite: bool = True, model_hash: str | None = None,
) -> Components:
    """The part of :func:`load_single_file` after reading: detect, check keys, build every component."""
    from .clip_tokenizer import build_clip_tokenizer
    from .midas import MidasTransform

    spec = detect(sd, path, config)
    n_text = _text_layers_used(spec, sd)
    check_all_keys_used(sd, n_text, spec.kind)
    if check_finite:
        used = [k for k in sd if ignored_reason(k, n_text) is None]
        bad = find_non_finite(sd, used)
        if bad:
            more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
            raise NonFiniteWeightsError(f"the checkpoint has NaN/Inf values in {bad[0]!r}{more}; it would only produce black images")
    unet = build_unet(sd, spec, dtype)
    vae = build_vae(sd, spec, dtype)
    text = build_text_encoder(sd, spec, dtype, n_text)
    depth = build_depth(sd, dtype) if spec.kind == "depth" else None
    name = Path(path).stem if path is not None else "model"
    return check_components(Components(
        unet=unet, vae=vae, text_encoder=text,
        tokenizer=build_clip_tokenizer(pad_token="!" if spec.family == "sd2" else "<|endoftext|>"),
        scheduler=build_scheduler(spec), depth_estimator=depth,
        feature_extractor=MidasTransform() if depth is not None else None,
        name=name, source=str(path) if path is not None else "", model_hash=model_hash,
    ))
