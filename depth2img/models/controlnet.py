"""ControlNets: the built-in tiny ones, diffusers folders and A1111 single files, attached to Components.

The tiny models follow diffusers' own fast tests for the ControlNet pipelines
(tests/pipelines/controlnet/test_controlnet_img2img.py, ...sdxl_img2img.py): each part built right
after ``torch.manual_seed(seed)``. A fresh ``ControlNetModel`` has zero-initialised output convolutions
(the paper's "zero convolutions") and would change nothing; so does its hint encoder's last conv
(``controlnet_cond_embedding.conv_out``), which would make the control image itself ignored. The tiny
ones re-initialise all of them from a fixed seed, so both the ControlNet and the depth visibly steer the UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .components import Components

TINY_BASES = ("tiny-sd15", "tiny-sdxl")
TINY_CONTROLNETS = {"tiny-controlnet": "tiny-sd15", "tiny-controlnet-sdxl": "tiny-sdxl"}  # name → the tiny base it fits

# diffusers' test components (block_out_channels (4, 8), norm_num_groups 1): shared by UNet and ControlNet.
_SD15_BLOCKS: dict[str, Any] = dict(
    block_out_channels=(4, 8), layers_per_block=2, in_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32, norm_num_groups=1,
)
# diffusers' SDXL ControlNet test components: text_time embedding, two 32-dim text encoders → 64.
_SDXL_BLOCKS: dict[str, Any] = dict(
    block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
    projection_class_embeddings_input_dim=80, cross_attention_dim=64,
)


def tiny_base(name: str, *, seed: int = 0) -> Components:
    """A tiny SD 1.5-style base (4-channel UNet, CLIP text encoder, VAE, DDIM) plus the tiny DPT estimator."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTForDepthEstimation

    from .tiny import _tiny_dpt_config, tiny_image_processor, tiny_tokenizer

    if name not in TINY_BASES:
        raise ModelLoadError(f"no tiny base '{name}'; built-in: {', '.join(TINY_BASES)}")
    if name == "tiny-sdxl":
        return _tiny_sdxl(seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=32, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                **_SD15_BLOCKS)
    torch.manual_seed(seed)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=2)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000)).eval()
    torch.manual_seed(seed)
    depth_estimator = DPTForDepthEstimation(_tiny_dpt_config()).eval()
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), scheduler=scheduler,
                      depth_estimator=depth_estimator, feature_extractor=tiny_image_processor(32), name=name,
                      source="built-in")


def _tiny_sdxl(seed: int) -> Components:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, DPTForDepthEstimation

    from .tiny import _tiny_dpt_config, tiny_image_processor, tiny_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=32, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                **_SDXL_BLOCKS)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=128)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
                            num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000,
                            hidden_act="gelu", projection_dim=32)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(config).eval()
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(config).eval()
    torch.manual_seed(seed)
    depth_estimator = DPTForDepthEstimation(_tiny_dpt_config()).eval()
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), scheduler=scheduler,
                      depth_estimator=depth_estimator, feature_extractor=tiny_image_processor(32), name="tiny-sdxl",
                      source="built-in", text_encoder_2=text_encoder_2, tokenizer_2=tiny_tokenizer())


def tiny_controlnet(name: str = "tiny-controlnet", *, seed: int = 0) -> Any:
    """A tiny ControlNet matching its tiny base, zero convolutions (and the hint encoder's zero output conv)
    re-initialised (std 0.1, bias 0.1; the hint conv std 5)."""
    from diffusers import ControlNetModel

    if name not in TINY_CONTROLNETS:
        raise ModelLoadError(f"no tiny ControlNet '{name}'; built-in: {', '.join(TINY_CONTROLNETS)}")
    torch.manual_seed(seed)
    blocks = _SDXL_BLOCKS if TINY_CONTROLNETS[name] == "tiny-sdxl" else _SD15_BLOCKS
    controlnet = ControlNetModel(conditioning_embedding_out_channels=(16, 32), **blocks)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.1)
            conv.bias.fill_(0.1)
        hint = controlnet.controlnet_cond_embedding.conv_out  # std 5: the depth must be felt through the tiny net
        hint.weight.copy_(torch.randn(hint.weight.shape, generator=generator) * 5)
        hint.bias.zero_()
    return controlnet.eval()


def load_controlnet(source: str | Path) -> tuple[Any, str]:
    """``(ControlNetModel, name for the infotext)`` for a built-in name or a diffusers folder."""
    text = str(source)
    if text in TINY_CONTROLNETS:
        return tiny_controlnet(text), text
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        from diffusers import ControlNetModel

        return ControlNetModel.from_pretrained(path, local_files_only=True).eval(), path.name
    if path.is_file():
        return load_controlnet_file(path), _file_name(path)
    raise ModelLoadError(
        f"no ControlNet '{text}': not a built-in name ({', '.join(TINY_CONTROLNETS)}), a diffusers ControlNet folder "
        "or a .pth/.safetensors file")


LDM_PREFIX = "control_model."  # A1111 / original ControlNet files


# The ControlNet configs shipped in depth2img/data/controlnet/, by variant (diffusers' CHECKPOINT_KEY_NAMES
# names the same four: "controlnet", "controlnet_xl_large", "controlnet_xl_mid", "controlnet_xl_small").
# sd15: lllyasviel/control_v11f1p_sd15_depth; sdxl_full: diffusers/controlnet-depth-sdxl-1.0 (the SDXL UNet's
# down half); sdxl_mid / sdxl_small: its distilled -mid (transformer layers 0, 0, 1) and -small (no attention
# in the down blocks, a 0-layer transformer in the mid block): 272.6M and 160.1M parameters, the published
# file sizes (1.09 GB / 640 MB fp32).
SHIPPED_CONFIGS = {"sd15": "sd15.json", "sdxl_full": "sdxl_full.json", "sdxl_mid": "sdxl_mid.json",
                   "sdxl_small": "sdxl_small.json"}
_XL_FULL_KEY = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"
_XL_MID_KEY = "down_blocks.1.attentions.0.norm.weight"


def controlnet_layout(keys: Any) -> tuple[str, str]:
    """``(layout, variant)`` from a state dict's keys, the way diffusers' ``infer_diffusers_model_type``
    tells them apart: layout "ldm" (``control_model.*`` / bare ``time_embed``) or "diffusers"; variant one of
    :data:`SHIPPED_CONFIGS` ("sd15", or for an SDXL ControlNet, recognised by its added size/pooled
    embedding, "sdxl_full" with transformer blocks in down block 1, "sdxl_mid" with a 0-layer transformer
    there, else "sdxl_small"); an SDXL file in the LDM layout is "sdxl_ldm". Raises for files that are no ControlNet."""
    keys = set(keys)
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        if "add_embedding.linear_1.weight" not in keys:
            return "diffusers", "sd15"
        if _XL_FULL_KEY in keys:
            return "diffusers", "sdxl_full"
        return "diffusers", "sdxl_mid" if _XL_MID_KEY in keys else "sdxl_small"
    bare = {k.removeprefix(LDM_PREFIX) for k in keys}
    if "time_embed.0.weight" in bare and "input_hint_block.0.weight" in bare:
        return "ldm", "sdxl_ldm" if "label_emb.0.0.weight" in bare else "sd15"
    raise ModelLoadError("not a ControlNet: neither control_model.* (A1111) nor diffusers ControlNet keys")


def load_controlnet_file(path: Path) -> Any:
    """A single-file ControlNet, offline and strictly: read by the safe loader (no pickle code runs),
    layout and variant detected by keys, config from a same-name ``.json`` beside it or the one shipped for
    its variant, LDM keys converted with diffusers' own table, every key used."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from .safe_load import load_state_dict

    sd = load_state_dict(path)
    layout, variant = controlnet_layout(sd)
    if variant == "sdxl_ldm":  # diffusers' converter has no label_emb → add_embedding mapping for ControlNets
        raise ModelLoadError(f"'{path.name}' is an SDXL ControlNet in the control_model.* layout, which diffusers "
                             "cannot convert: use its diffusers-keyed .safetensors (e.g. diffusers_xl_depth_*)")
    config = _controlnet_config(path, variant)
    if layout == "ldm":
        sd = convert_controlnet_checkpoint({k if k.startswith(LDM_PREFIX) else LDM_PREFIX + k: v for k, v in sd.items()},
                                           config)
    model = ControlNetModel.from_config(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"ControlNet '{path.name}' does not match its config ({variant}): "
                             f"{' '.join(str(error).split())[:300]}") from None
    return model.eval()


def shipped_controlnet_config(variant: str) -> dict[str, Any]:
    """The diffusers config shipped for a ControlNet variant (see :data:`SHIPPED_CONFIGS`)."""
    import json
    from importlib import resources

    return json.loads((resources.files("depth2img") / "data" / "controlnet" / SHIPPED_CONFIGS[variant]).read_text())


def _controlnet_config(path: Path, variant: str) -> dict[str, Any]:
    import json

    from .files import CONTROLNET_CONFIG_SUFFIX

    sidecar = path.with_suffix(CONTROLNET_CONFIG_SUFFIX)
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    return shipped_controlnet_config(variant)


def _file_name(path: Path) -> str:
    """A1111's ControlNet model name: the file's stem and its short (old, 8-hex) hash."""
    from .catalog import controlnet_hash

    return f"{path.stem} [{controlnet_hash(path)}]"


def attach_controlnet(components: Components, source: str | Path) -> Components:
    """Load a ControlNet into ``components``, checking it fits the base's UNet."""
    controlnet, name = load_controlnet(source)
    check_controlnet(components, controlnet, name)
    components.controlnet, components.controlnet_name = controlnet, name
    return components


def check_controlnet(components: Components, controlnet: Any, name: str) -> None:
    """A ControlNet's residuals must have the UNet's skip-connection shapes and text width."""
    unet, cn = components.unet.config, controlnet.config
    for key in ("block_out_channels", "cross_attention_dim", "layers_per_block", "addition_embed_type"):
        if _norm(unet.get(key)) != _norm(cn.get(key)):
            raise ModelLoadError(
                f"the ControlNet '{name}' does not fit '{components.name}': its {key} is {cn.get(key)}, the "
                f"UNet's {unet.get(key)} (a ControlNet for another model family?)")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
