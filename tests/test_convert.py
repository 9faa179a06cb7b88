"""Conversion between original-layout files and diffusers folders: bit-exact both ways, depth_model
included, and generation from the converted model equals generation from the source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.errors import ModelLoadError
from depth2img.models.convert import EXTRAS_FILE, convert, folder_to_state_dict
from depth2img.models.safe_load import load_state_dict
from tests._sd2_layout import TINY_YAML, tiny_original_state_dict


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("convert")
    sd = tiny_original_state_dict(seed=2)
    path = d / "tiny-depth.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    (d / "tiny-depth.yaml").write_text(TINY_YAML)
    return path, sd


@pytest.fixture(scope="module")
def tiny_folder(tiny_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder") / "tiny-depth"
    convert(tiny_file[0], out)
    return out


def _assert_same(a, b):
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_original_to_folder_writes_a_diffusers_depth_folder(tiny_folder):
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionDepth2ImgPipeline"
    assert index["depth_estimator"] == ["transformers", "DPTForDepthEstimation"]
    cfg = json.loads((tiny_folder / "depth_estimator" / "config.json").read_text())
    assert cfg["architectures"] == ["DPTForDepthEstimation"] and cfg["is_hybrid"]
    fe = json.loads((tiny_folder / "feature_extractor" / "preprocessor_config.json").read_text())
    assert fe["size"] == {"height": 384, "width": 384} and fe["image_mean"] == [0.5, 0.5, 0.5]
    sched = json.loads((tiny_folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "epsilon" and sched["steps_offset"] == 1
    assert (tiny_folder / EXTRAS_FILE).is_file()


@pytest.mark.parametrize("fmt", [".safetensors", ".ckpt"])
def test_original_folder_original_is_bit_exact(tiny_file, tiny_folder, tmp_path, fmt):
    out = convert(tiny_folder, tmp_path / f"back{fmt}", config=tiny_file[0].with_suffix(".yaml"))
    _assert_same(load_state_dict(out), tiny_file[1])


def test_folder_original_folder_is_bit_exact(tiny_file, tiny_folder, tmp_path):
    ckpt = convert(tiny_folder, tmp_path / "x.safetensors", config=tiny_file[0].with_suffix(".yaml"))
    assert (tmp_path / "x.yaml").read_text() == TINY_YAML  # the yaml the file needs, beside it
    folder2 = convert(ckpt, tmp_path / "again")
    for part, name in [("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                       ("text_encoder", "model.safetensors"), ("depth_estimator", "model.safetensors")]:
        _assert_same(load_state_dict(folder2 / part / name), load_state_dict(tiny_folder / part / name))


def test_a_plain_diffusers_folder_gets_the_original_schedule(tiny_folder, tmp_path):
    """Without extras (a folder from elsewhere), the 12 buffers are computed like register_schedule."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_folder, bare)
    (bare / EXTRAS_FILE).unlink()
    sd = folder_to_state_dict(bare)
    # the original SD config (linear_start 0.00085, linear_end 0.012, 1000 steps, "linear" = the square of a
    # linspace of square roots) and ldm's register_schedule formulas, computed here in float64 numpy
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    expected = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod), "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    assert set(expected) <= set(sd)
    for k, v in expected.items():
        assert sd[k].dtype == torch.float32, k
        torch.testing.assert_close(sd[k], torch.tensor(v, dtype=torch.float32), rtol=2.5e-7, atol=0, msg=k)
    assert abs(float(sd["alphas_cumprod"][-1]) - 0.0046601) < 1e-6  # original_and_a1111.md §2
    assert "cond_stage_model.model.text_projection" not in sd  # nothing is invented


def test_half_conversion(tiny_file, tiny_folder, tmp_path):
    out = convert(tiny_folder, tmp_path / "half.safetensors", half=True, config=tiny_file[0].with_suffix(".yaml"))
    sd = load_state_dict(out)
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].dtype == torch.float16


def test_refuses_to_overwrite(tiny_folder, tmp_path):
    (tmp_path / "exists.ckpt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="already exists"):
        convert(tiny_folder, tmp_path / "exists.ckpt")


def test_generation_from_converted_equals_source(tiny_file, tiny_folder, tmp_path):
    """Same request on the source file and on the folder converted from it (and back again). The depth map
    is supplied so the two depth front-ends (MiDaS transform vs the folder's 384x384 processor, by design)
    do not enter; the estimator weights themselves are proven bit-exact above."""
    from depth2img import pipeline
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    depth = Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8))
    kw = dict(prompt="a red house", image=img, depth_map=depth, steps=2, strength=1.0, seed=3)
    src = pipeline.load_pipeline(str(tiny_file[0])).generate(**kw).images[0]
    conv = pipeline.load_pipeline(str(tiny_folder)).generate(**kw).images[0]
    back = convert(tiny_folder, tmp_path / "rt.safetensors", config=tiny_file[0].with_suffix(".yaml"))
    rt = pipeline.load_pipeline(str(back)).generate(**kw).images[0]
    assert np.array_equal(np.asarray(src), np.asarray(conv))
    assert np.array_equal(np.asarray(src), np.asarray(rt))
