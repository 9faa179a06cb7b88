"""The built-in ``tiny`` models: seeded random weights, real architectures, a few MB, offline.

They produce no meaningful image. They exist so the whole tool (CLI, API, UI, tests, benchmarks) runs on
any machine in seconds without downloading 5 GB. Component configs follow diffusers' own fast test for
the depth pipeline (tests/pipelines/stable_diffusion_2/test_stable_diffusion_depth.py): each model is
built right after ``torch.manual_seed(seed)`` at the same points, so the weights are reproducible.
"""

from __future__ import annotations

from importlib import resources

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import BitConfig, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, DPTConfig, DPTForDepthEstimation

from .components import Components

TINY_NAMES = ("tiny", "tiny-img2img")


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges (see data/tiny_tokenizer/README.md)."""
    folder = resources.files("depth2img") / "data" / "tiny_tokenizer"
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def tiny_image_processor(size: int = 32):
    """DPT preprocessing as the real SD2-depth feature_extractor (no aspect ratio, mean/std 0.5), at ``size``."""
    try:  # transformers >= 5 names the PIL backend explicitly; the plain name needs torchvision
        from transformers import DPTImageProcessorPil as Processor
    except ImportError:  # pragma: no cover - transformers 4.x
        from transformers import DPTImageProcessor as Processor
    return Processor(
        do_resize=True,
        size={"height": size, "width": size},
        keep_aspect_ratio=False,
        resample=2,  # PIL bilinear, as the hub preprocessor_config.json
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_components(*, depth: bool = True, vae_scale_factor: int = 8, seed: int = 0) -> Components:
    """Tiny SD2-depth (5-channel UNet + DPT-Hybrid) or plain img2img (4-channel) components.

    ``vae_scale_factor`` 2 gives diffusers' test VAE exactly (2 blocks); 8 (the default, 4 blocks) gives
    the real model's geometry, so a 512 px image makes 64×64 latents as with SD2.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=5 if depth else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
    )
    scheduler = PNDMScheduler(skip_prk_steps=True)
    torch.manual_seed(seed)
    blocks = {2: [32, 64], 8: [32, 32, 64, 64]}[vae_scale_factor]
    vae = AutoencoderKL(
        block_out_channels=blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        latent_channels=4,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            pad_token_id=1,
            vocab_size=1000,
        )
    ).eval()
    depth_estimator = feature_extractor = None
    if depth:
        depth_estimator = DPTForDepthEstimation(_tiny_dpt_config()).eval()
        feature_extractor = tiny_image_processor(32)
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        scheduler=scheduler,
        depth_estimator=depth_estimator,
        feature_extractor=feature_extractor,
        name="tiny" if depth else "tiny-img2img",
        source="built-in",
    )


def _tiny_dpt_config() -> DPTConfig:
    """DPT-Hybrid (BiT backbone + ViT) at toy size: the architecture SD2-depth's estimator uses."""
    backbone = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[3, 4, 9],
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
        hidden_sizes=[96, 192, 384, 768],
        num_groups=2,
    )
    return DPTConfig(
        image_size=32,
        patch_size=16,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=4,
        backbone_out_indices=(0, 1, 2, 3),
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        is_decoder=False,
        initializer_range=0.02,
        is_hybrid=True,
        backbone_config=backbone,
        backbone_featmap_shape=[1, 384, 24, 24],
    )
