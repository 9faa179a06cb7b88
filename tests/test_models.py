"""Model resolution: diffusers folders (strict), hub ids (cache first, clear offline error), depth_model=."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from depth2img import load_pipeline
from depth2img.errors import ModelLoadError
from depth2img.infotext import parse_infotext
from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline

from .conftest import photo

FAST = dict(prompt="a house", steps=3, strength=0.9, guidance_scale=5.0, scheduler="ddim", seed=4)


def save_folder(path, *, depth=True):
    c = tiny_components(depth=depth)
    if depth:
        pipe = StableDiffusionDepth2ImgPipeline(
            vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet, scheduler=c.scheduler,
            depth_estimator=c.depth_estimator, feature_extractor=c.feature_extractor,
        )
    else:
        pipe = StableDiffusionImg2ImgPipeline(
            vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet, scheduler=c.scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.save_pretrained(path, safe_serialization=True)
    return c


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-depth"
    save_folder(path)
    return path


def pixels(result):
    return np.asarray(result.images[0], dtype=int)


def test_folder_loads_and_generates_like_the_components(depth_folder):
    # pndm: the folder's own scheduler. (A DDIM built from an in-memory PNDM config takes DDIM's default
    # set_alpha_to_one=True for keys the PNDM config left at default, while a saved config spells them
    # out - diffusers' from_config semantics, identical in depth2img and diffusers.)
    image = photo("chelsea", (48, 32))
    options = {**FAST, "scheduler": "pndm"}
    from_folder = load_pipeline(str(depth_folder)).generate(image=image, **options)
    direct = Pipeline(tiny_components()).generate(image=image, **options)
    assert np.abs(pixels(from_folder) - pixels(direct)).max() <= 1
    assert parse_infotext(from_folder.infotexts[0])["Model"] == "tiny-depth"


def test_plain_img2img_folder_loads(tmp_path):
    save_folder(tmp_path / "sd", depth=False)
    pipe = load_pipeline(str(tmp_path / "sd"))
    assert pipe.kind == "img2img" and pipe.depth_estimator is None
    assert pipe.generate(image=photo("coffee", (32, 32)), **FAST).depth_map is None


def test_missing_key_in_a_component_is_named(depth_folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(depth_folder, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state.pop("conv_out.bias")
    save_file(state, weights)
    with pytest.raises(ModelLoadError, match=r"unet .*missing keys: conv_out.bias"):
        load_pipeline(str(broken))


def test_wrong_unet_in_a_depth_folder_names_the_channel_count(depth_folder, tmp_path):
    broken = tmp_path / "wrong-unet"
    shutil.copytree(depth_folder, broken)
    shutil.rmtree(broken / "unet")
    tiny_components(depth=False).unet.save_pretrained(broken / "unet")
    with pytest.raises(ModelLoadError, match="depth model, but its unet has 4 input channels, not 5"):
        load_pipeline(str(broken))


def test_text_encoder_of_another_family_is_named(depth_folder, tmp_path):
    broken = tmp_path / "wrong-text"
    shutil.copytree(depth_folder, broken)
    config = json.loads((broken / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 64
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(config).save_pretrained(broken / "unet")
    with pytest.raises(ModelLoadError, match="text encoder gives 32-dim embeddings but the UNet cross-attends to 64"):
        load_pipeline(str(broken))


def test_not_a_model_folder_and_unknown_names(tmp_path):
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        load_pipeline(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not a built-in name"):
        load_pipeline("no such thing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="is not a model"):
        load_pipeline(str(tmp_path / "notes.txt"))


def _fake_hub_cache(cache, repo_id, source):
    """The huggingface_hub cache layout: refs/main -> snapshots/<commit>/..."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_hub_id_loads_from_the_cache_offline(depth_folder, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    _fake_hub_cache(tmp_path, "sd2-community/stable-diffusion-2-depth", depth_folder)
    pipe = load_pipeline("sd2-community/stable-diffusion-2-depth")
    assert pipe.kind == "depth" and pipe.name == "stable-diffusion-2-depth"


def test_hub_id_not_cached_offline_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache and downloads are off.*; pass a local diffusers model folder"):
        load_pipeline("sd2-community/stable-diffusion-2-depth")


def _save_depth_anything(path):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from depth2img.models.tiny import tiny_image_processor

    torch.manual_seed(1)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=28,
        patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8,
    )
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(path)
    processor = tiny_image_processor(28)
    processor.save_pretrained(path)


def test_depth_model_swaps_the_estimator(tmp_path):
    _save_depth_anything(tmp_path / "da")
    image = photo("astronaut", (32, 32))
    own = load_pipeline("tiny").generate(image=image, **FAST)
    swapped_pipe = load_pipeline("tiny", depth_model=str(tmp_path / "da"))
    assert type(swapped_pipe.depth_estimator).__name__ == "DepthAnythingForDepthEstimation"
    swapped = swapped_pipe.generate(image=image, **FAST)
    assert not torch.equal(own.depth_map.normalized, swapped.depth_map.normalized)
    assert parse_infotext(swapped.infotexts[0])["Depth"] == str(tmp_path / "da")


def test_depth_model_can_be_taken_from_a_model_folder(depth_folder):
    pipe = load_pipeline("tiny", depth_model=str(depth_folder))
    assert type(pipe.depth_estimator).__name__ == "DPTForDepthEstimation"
