"""diffusers -> original (LDM) key mapping for the UNet, VAE and text encoder: what diffusers lacks.

The original -> diffusers direction is diffusers' own ``single_file_utils.convert_ldm_*`` /
``convert_open_clip_checkpoint``; these functions are its exact inverse (tests prove both compositions are
the identity on the real SD2-depth layout), generalised from diffusers' unmaintained
``scripts/convert_diffusers_to_original_stable_diffusion.py`` to any block count / layers per block.
Keys are returned *without* the ``model.diffusion_model.`` / ``first_stage_model.`` /
``cond_stage_model.model.`` prefixes. Values pass through unchanged except where the layouts differ
(VAE mid-attention Linear [C, C] -> 1x1 conv [C, C, 1, 1]; CLIP q/k/v -> ``in_proj``): pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ModelLoadError

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """Original name of one diffusers ``UNet2DConditionModel`` key (raises ``KeyError`` if unknown)."""
    L = config["layers_per_block"]
    up_has_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    simple = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
              "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for new, old in simple.items():
        if key.startswith(new):
            return old + key[len(new):]
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = (L + 1) * i + j + 1
        return f"input_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"input_blocks.{(L + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}" if m[1] == "resnets" else f"middle_block.1.{m[3]}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n = (L + 1) * i + j
        return f"output_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        i = int(m[1])
        return f"output_blocks.{(L + 1) * i + L}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
    raise KeyError(key)


def unet_to_ldm(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        try:
            out[unet_key_to_ldm(k, config)] = v
        except KeyError:
            raise ModelLoadError(f"UNet key {k!r} has no original-layout name") from None
    return out


_VAE_ATTN = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]


def vae_key_to_ldm(key: str, n_blocks: int) -> str:
    """Original name of one diffusers ``AutoencoderKL`` key (raises ``KeyError`` if unknown)."""
    for side in ("encoder", "decoder"):
        if key in (f"{side}.conv_norm_out.weight", f"{side}.conv_norm_out.bias"):
            return key.replace("conv_norm_out", "norm_out")
    if re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\.(weight|bias)|(post_)?quant_conv\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key)
    if m:
        for new, old in _VAE_ATTN:
            if m[2].startswith(new):
                return f"{m[1]}.mid.attn_1.{old}{m[2][len(new):]}"
    raise KeyError(key)


def vae_to_ldm(sd: Mapping[str, torch.Tensor], n_blocks: int = 4) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        try:
            name = vae_key_to_ldm(k, n_blocks)
        except KeyError:
            raise ModelLoadError(f"VAE key {k!r} has no original-layout name") from None
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # Linear [C, C] -> 1x1 conv [C, C, 1, 1]
        out[name] = v
    return out


_CLIP = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
         ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]


def openclip_key_to_ldm(key: str) -> str:
    """Original name of one CLIPTextModel key (q/k/v name their shared ``in_proj``); ``KeyError`` if unknown."""
    try:
        (name,) = openclip_to_ldm({key: torch.empty(0)} if "_proj." not in key or "out_proj" in key else
                                  {key.replace(p, f"{c}_proj."): torch.empty(0) for c in "qkv" for p in ("q_proj.", "k_proj.", "v_proj.") if p in key})
    except (ModelLoadError, ValueError):
        raise KeyError(key) from None
    return name


def openclip_to_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPTextModel`` (OpenCLIP text tower) -> ``cond_stage_model.model.*`` names."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    fixed = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm.weight": "ln_final.weight",
             "text_model.final_layer_norm.bias": "ln_final.bias"}
    for k, v in sd.items():
        if not k.startswith("text_model."):  # transformers 5 drops the prefix in memory
            k = "text_model." + k
        if k in fixed:
            out[fixed[k]] = v
            continue
        m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", k)
        if not m:
            raise ModelLoadError(f"text encoder key {k!r} has no original-layout name")
        i, rest = m[1], m[2]
        q = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
        if q:
            qkv.setdefault((i, q[2]), {})[q[1]] = v
            continue
        for new, old in _CLIP:
            if rest.startswith(new):
                out[f"transformer.resblocks.{i}.{old}{rest[len(new):]}"] = v
                break
        else:
            raise ModelLoadError(f"text encoder key {k!r} has no original-layout name")
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ModelLoadError(f"text encoder layer {i}: q/k/v {kind} incomplete")
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
