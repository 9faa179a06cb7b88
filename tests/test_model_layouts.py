"""Model layouts beyond SD2-depth: an SD 1.x single file (the CLIP-L text encoder path), img2img originals
converted to a folder and back, and sharded diffusers folders - each loaded and generating (tiny sizes),
compared with transformers/diffusers loading the same weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.models.convert import convert, folder_to_state_dict
from depth2img.models.safe_load import load_state_dict
from tests._sd2_layout import TINY_CLIP_WIDTH, TINY_IMG2IMG_YAML, tiny_img2img_state_dict

GEN = dict(prompt="a red house", steps=2, strength=0.8, seed=3, guidance_scale=5.0)


def _image(size=64):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------------
# SD 1.x single file: cond_stage_model.transformer.* (OpenAI CLIP-L in transformers layout)
# --------------------------------------------------------------------------------------------------

SD1_YAML = TINY_IMG2IMG_YAML.replace(
    "      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder\n      params: {freeze: true, layer: penultimate}\n",
    "      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder\n",
)


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(7)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TINY_CLIP_WIDTH, num_hidden_layers=2, num_attention_heads=TINY_CLIP_WIDTH // 64,
        intermediate_size=4 * TINY_CLIP_WIDTH, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=TINY_CLIP_WIDTH,
    )).eval()
    sd = {k: v for k, v in tiny_img2img_state_dict(seed=4).items() if not k.startswith("cond_stage_model.")}
    for k, v in clip.state_dict().items():  # SD 1.x files: cond_stage_model.transformer.text_model.*
        sd["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v.clone()
    path = tmp_path_factory.mktemp("sd1") / "tiny-sd1.safetensors"
    save_file(sd, str(path))
    path.with_suffix(".yaml").write_text(SD1_YAML)
    return path, clip


def test_sd1_single_file_text_encoder_is_transformers_clip(sd1_file):
    path, clip = sd1_file
    pipe = load_pipeline(str(path))
    assert pipe.kind == "img2img" and pipe.text_encoder.config.hidden_act == "quick_gelu"
    ids = pipe.tokenizer(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(49407).all()  # SD 1.x pads with <|endoftext|> (CLIP's own tokenizer), SD 2.x with 0
    with torch.no_grad():
        torch.testing.assert_close(pipe.text_encoder(ids).last_hidden_state, clip(ids).last_hidden_state, rtol=0, atol=0)
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_sd1_single_file_generates(sd1_file):
    res = load_pipeline(str(sd1_file[0])).generate(image=_image(), **GEN)
    arr = np.asarray(res.images[0])
    assert arr.shape == (64, 64, 3) and arr.std() > 0


# --------------------------------------------------------------------------------------------------
# img2img original -> folder -> original, and the folder in diffusers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def img2img_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("img2img")
    sd = tiny_img2img_state_dict(seed=6)
    path = d / "tiny-img2img.safetensors"
    save_file(sd, str(path))
    path.with_suffix(".yaml").write_text(TINY_IMG2IMG_YAML)
    return path, sd


def test_img2img_original_to_folder_and_back_is_bit_exact_and_generates_the_same(img2img_file, tmp_path):
    from diffusers import StableDiffusionImg2ImgPipeline

    path, sd = img2img_file
    folder = convert(path, tmp_path / "folder")
    theirs = StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, local_files_only=True)
    ours = load_pipeline(str(folder))
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(ours, part).state_dict(), getattr(theirs, part).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), part
    back = convert(folder, tmp_path / "back.safetensors", config=path.with_suffix(".yaml"))
    again = load_state_dict(back)
    assert set(again) == set(sd) and all(torch.equal(again[k], sd[k]) for k in sd)
    kw = dict(image=_image(), **GEN)
    src = np.asarray(load_pipeline(str(path)).generate(**kw).images[0])
    assert np.array_equal(src, np.asarray(ours.generate(**kw).images[0]))
    assert np.array_equal(src, np.asarray(load_pipeline(str(back)).generate(**kw).images[0]))


# --------------------------------------------------------------------------------------------------
# sharded diffusers folders (save_pretrained(max_shard_size=...))
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tests.test_models import save_folder

    root = tmp_path_factory.mktemp("shards")
    whole = root / "whole"
    c = save_folder(whole, depth=True)
    sharded = root / "sharded"
    shutil.copytree(whole, sharded)
    for part, model in (("unet", c.unet), ("text_encoder", c.text_encoder)):
        shutil.rmtree(sharded / part)
        model.save_pretrained(sharded / part, safe_serialization=True, max_shard_size="100KB")
    return whole, sharded


def test_the_sharded_folder_really_is_sharded(folders):
    _, sharded = folders
    assert (sharded / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list((sharded / "unet").glob("diffusion_pytorch_model-0*-of-0*.safetensors"))) > 1
    assert (sharded / "text_encoder" / "model.safetensors.index.json").is_file()


def test_a_sharded_folder_loads_the_weights_diffusers_loads_and_generates_the_same(folders):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    whole, sharded = folders
    pipe = load_pipeline(str(sharded))
    unet = UNet2DConditionModel.from_pretrained(sharded, subfolder="unet", local_files_only=True)
    text = CLIPTextModel.from_pretrained(sharded / "text_encoder", local_files_only=True)
    for ours, theirs in ((pipe.unet, unet), (pipe.text_encoder, text)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    kw = dict(image=_image(32), **GEN)
    assert np.array_equal(np.asarray(pipe.generate(**kw).images[0]), np.asarray(load_pipeline(str(whole)).generate(**kw).images[0]))


def test_a_sharded_folder_converts_like_the_whole_one(folders):
    whole, sharded = folders
    a, b = folder_to_state_dict(whole), folder_to_state_dict(sharded)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
