"""Test helpers: the real SD2-depth checkpoint layout (shared/data/sd2-depth-ckpt-keys.json) filled with
random, sensibly scaled values (weights ~ N(0, 1/fan_in), norms ~ 1, biases small), so a forward pass stays
finite and meaningful (outputs neither explode nor collapse)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

KEYS_JSON = Path("/work/shared/data/sd2-depth-ckpt-keys.json")
UNET_KEYS_JSON = Path("/work/shared/data/sd2-depth-diffusers-unet-keys.json")


def layout(path: Path = KEYS_JSON) -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in json.loads(path.read_text())["keys"].items()}


def _is_norm(key: str) -> bool:
    last = key.rsplit(".", 2)
    name = ".".join(last[-2:])
    return any(
        s in key
        for s in ("norm", "ln_", "ln_final", "in_layers.0", "out_layers.0", "out.0.", "layernorm", "group_norm")
    ) or name.startswith(("norm", "bn"))


def random_tensor(key: str, shape: list[int], gen: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One sensibly scaled tensor for ``key``."""
    shape = list(shape)
    n = math.prod(shape) if shape else 1
    leaf = key.rsplit(".", 1)[-1]
    if not shape:  # 0-d counters
        return torch.tensor(0.9999 if "decay" in key else 1000.0, dtype=dtype)
    if key.endswith("logit_scale"):
        return torch.full(shape, math.log(1 / 0.07), dtype=dtype)
    if leaf == "bias":
        t = torch.randn(n, generator=gen).reshape(shape) * 0.02
        return t.to(dtype)
    if leaf == "weight" and len(shape) == 1 and _is_norm(key):
        return (1 + 0.05 * torch.randn(shape, generator=gen)).to(dtype)
    if key.endswith(("positional_embedding", "pos_embed", "cls_token", "token_embedding.weight")):
        return (torch.randn(shape, generator=gen) * 0.02).to(dtype)
    if len(shape) == 1:  # schedule buffers and the like: positive, smooth
        return torch.linspace(0.001, 0.999, shape[0]).to(dtype)
    fan_in = n // shape[0]
    return (torch.randn(shape, generator=gen) / math.sqrt(fan_in)).to(dtype)


def random_state_dict(shapes: dict[str, list[int]], seed: int = 0, dtype: torch.dtype = torch.float32,
                      prefix: str = "") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: random_tensor(k, s, gen, dtype) for k, s in shapes.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# a scaled-down SD2-depth checkpoint in the original layout (+ its yaml), for fp32 value-level tests
# --------------------------------------------------------------------------------------------------

TINY_YAML = """\
model:
  target: ldm.models.diffusion.ddpm.LatentDepth2ImageDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    conditioning_key: hybrid
    depth_stage_config:
      target: ldm.modules.midas.api.MiDaSInference
      params: {model_type: dpt_hybrid}
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 5
        out_channels: 4
        model_channels: 32
        attention_resolutions: [1]
        num_res_blocks: 1
        channel_mult: [1, 2]
        num_head_channels: 8
        use_spatial_transformer: true
        use_linear_in_transformer: true
        transformer_depth: 1
        context_dim: 64
        legacy: false
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig: {double_z: true, z_channels: 4, resolution: 256, in_channels: 3, out_ch: 3, ch: 32,
                   ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params: {freeze: true, layer: penultimate}
"""

TINY_CLIP_WIDTH, TINY_CLIP_BLOCKS = 64, 3


def tiny_original_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small SD2-depth-shaped original checkpoint: tiny UNet/VAE/OpenCLIP, the full MiDaS DPT-Hybrid,
    the 12 schedule buffers and the two 0-d EMA counters."""
    import yaml
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm, create_vae_diffusers_config_from_ldm

    from depth2img.models.convert import schedule_buffers
    from depth2img.models.ldm_keys import unet_to_ldm, vae_to_ldm

    cfg = yaml.safe_load(TINY_YAML)
    torch.manual_seed(seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates image_size; irrelevant here
        ucfg = create_unet_diffusers_config_from_ldm(cfg, {}, image_size=256)
        vcfg = create_vae_diffusers_config_from_ldm(cfg, {}, image_size=256)
    unet = UNet2DConditionModel(**ucfg)
    vae = AutoencoderKL(**vcfg)
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, v in unet_to_ldm(unet.state_dict(), unet.config).items():  # re-draw sensibly scaled values
        sd["model.diffusion_model." + k] = random_tensor(k, list(v.shape), gen)
    for k, v in vae_to_ldm(vae.state_dict(), 2).items():
        sd["first_stage_model." + k] = random_tensor(k, list(v.shape), gen)
    w, p = TINY_CLIP_WIDTH, "cond_stage_model.model."
    clip = {"token_embedding.weight": [49408, w], "positional_embedding": [77, w], "ln_final.weight": [w],
            "ln_final.bias": [w], "text_projection": [w, 32], "logit_scale": []}
    for i in range(TINY_CLIP_BLOCKS):
        r = f"transformer.resblocks.{i}."
        clip.update({r + "attn.in_proj_weight": [3 * w, w], r + "attn.in_proj_bias": [3 * w],
                     r + "attn.out_proj.weight": [w, w], r + "attn.out_proj.bias": [w],
                     r + "ln_1.weight": [w], r + "ln_1.bias": [w], r + "ln_2.weight": [w], r + "ln_2.bias": [w],
                     r + "mlp.c_fc.weight": [4 * w, w], r + "mlp.c_fc.bias": [4 * w],
                     r + "mlp.c_proj.weight": [w, 4 * w], r + "mlp.c_proj.bias": [w]})
    for k, s in clip.items():
        sd[p + k] = random_tensor(p + k, s, gen)
    for k, s in layout().items():
        if k.startswith("depth_model."):
            sd[k] = random_tensor(k, s, gen)
    sd.update(schedule_buffers())
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    return sd


TINY_IMG2IMG_YAML = (
    TINY_YAML.replace("in_channels: 5", "in_channels: 4")
    .replace("    conditioning_key: hybrid\n", "    conditioning_key: crossattn\n")
    .replace("    depth_stage_config:\n      target: ldm.modules.midas.api.MiDaSInference\n      params: {model_type: dpt_hybrid}\n", "")
)


def tiny_img2img_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The scaled-down SD2 checkpoint as a plain 4-channel img2img model (no MiDaS); pair with TINY_IMG2IMG_YAML."""
    sd = {k: v for k, v in tiny_original_state_dict(seed).items() if not k.startswith("depth_model.")}
    key = "model.diffusion_model.input_blocks.0.0.weight"
    sd[key] = sd[key][:, :4].contiguous()
    return sd
