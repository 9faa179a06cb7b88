"""Single-file loading: every real key maps (meta tensors), strict errors name the key, detection and
yaml mismatches, and value-level fidelity on a scaled-down fp32 original-layout checkpoint (text encoder
= the original penultimate layer + ln_final; a pickle with the Lightning wrapper loads; the cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from depth2img.errors import ModelLoadError
from depth2img.models.convert_midas import dpt_to_midas
from depth2img.models.detect import detect
from depth2img.models.ldm_keys import openclip_to_ldm, unet_to_ldm, vae_to_ldm
from depth2img.models.single_file import (
    CheckpointKeyError,
    NonFiniteWeightsError,
    components_from_state_dict,
    ignored_reason,
    load_single_file,
)
from tests._sd2_layout import TINY_CLIP_BLOCKS, TINY_YAML, UNET_KEYS_JSON, layout, tiny_original_state_dict

# --------------------------------------------------------------------------------------------------
# the real layout, on meta tensors (no memory)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_shapes():
    return layout()


@pytest.fixture(scope="module")
def meta_components(real_shapes):
    sd = {k: torch.empty(s, device="meta") for k, s in real_shapes.items()}
    return components_from_state_dict(sd, path="/models/512-depth-ema.ckpt", check_finite=False)


def test_every_real_key_maps_and_back(real_shapes, meta_components):
    c = meta_components
    assert c.kind == "depth" and c.name == "512-depth-ema"
    unet_ref = json.loads(UNET_KEYS_JSON.read_text())["keys"]
    assert {k: list(v.shape) for k, v in c.unet.state_dict().items()} == {k: v["shape"] for k, v in unet_ref.items()}
    assert c.unet.config.in_channels == 5 and list(c.unet.config.attention_head_dim) == [5, 10, 20, 20]
    assert c.unet.config.cross_attention_dim == 1024 and c.unet.config.use_linear_projection
    assert c.text_encoder.config.num_hidden_layers == 23 and c.text_encoder.config.hidden_size == 1024
    sched = dict(c.scheduler.config)
    expected = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                    trained_betas=None, timestep_spacing="leading")
    assert {k: sched[k] for k in expected} == expected and type(c.scheduler).__name__ == "PNDMScheduler"
    assert c.vae.config.scaling_factor == 0.18215
    # reverse: the components' keys map back to exactly the file's keys minus the listed ignored ones
    back = {}
    back.update({"model.diffusion_model." + k: v for k, v in unet_to_ldm(c.unet.state_dict(), c.unet.config).items()})
    back.update({"first_stage_model." + k: v for k, v in vae_to_ldm(c.vae.state_dict(), 4).items()})
    back.update({"cond_stage_model.model." + k: v for k, v in openclip_to_ldm(c.text_encoder.state_dict()).items()})
    back.update(dpt_to_midas(c.depth_estimator.state_dict()))
    ignored = {k for k in real_shapes if ignored_reason(k, 23)}
    assert len(ignored) == 12 + 2 + 12 + 2  # schedule, CLIP head, 24th resblock, MiDaS head
    assert set(back) == set(real_shapes) - ignored
    assert all(list(back[k].shape) == real_shapes[k] for k in back)


def _meta(shapes, **changes):
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    for k, v in changes.items():
        if v is None:
            sd.pop(k)
        else:
            sd[k] = torch.empty(v, device="meta")
    return sd


@pytest.mark.parametrize(
    "change, match",
    [
        ({"model.diffusion_model.output_blocks.3.0.in_layers.2.weight": None}, "lacks 'model.diffusion_model.output_blocks.3.0.in_layers.2.weight'"),
        ({"first_stage_model.decoder.up.1.block.0.conv1.weight": [512, 512, 1, 1]}, "'first_stage_model.decoder.up.1.block.0.conv1.weight' has shape"),
        ({"model.diffusion_model.foo.weight": [3]}, "foo"),
        ({"cond_stage_model.model.transformer.resblocks.3.ln_1.weight": None}, "text encoder"),
        ({"depth_model.model.scratch.refinenet2.out_conv.bias": None}, "depth model"),
        ({"depth_model.model.scratch.extra.bias": [3]}, "depth_model.model.scratch.extra.bias"),
        ({"some_other_model.weight": [3]}, "some_other_model.weight"),
    ],
)
def test_strict_errors_name_the_key(real_shapes, change, match):
    with pytest.raises(CheckpointKeyError, match=match):
        components_from_state_dict(_meta(real_shapes, **{k: v for k, v in change.items()}), check_finite=False)


def test_yaml_saying_4_channels_names_the_cause(real_shapes, tmp_path):
    y = tmp_path / "v2-inference.yaml"
    y.write_text(TINY_YAML.replace("in_channels: 5", "in_channels: 4").replace("model_channels: 32", "model_channels: 320").replace("context_dim: 64", "context_dim: 1024"))
    with pytest.raises(ModelLoadError, match=r"this is a depth model \(\[320, 5, 3, 3\]\), but config v2-inference.yaml says 4 input channels"):
        detect(_meta(real_shapes), config=y)


def test_sidecar_yaml_wins(real_shapes, tmp_path):
    ckpt = tmp_path / "512-depth-ema.ckpt"
    ckpt.write_bytes(b"")
    (tmp_path / "512-depth-ema.yaml").write_text(
        TINY_YAML.replace("model_channels: 32", "model_channels: 320").replace("context_dim: 64", "context_dim: 1024")
        .replace("    conditioning_key: hybrid\n", "    conditioning_key: hybrid\n    parameterization: v\n"))
    spec = detect(_meta(real_shapes), path=ckpt)
    assert spec.config_path.name == "512-depth-ema.yaml" and spec.prediction_type == "v_prediction"


def test_detection_by_keys():
    base = {"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]}
    assert (detect(base).family, detect(base).prediction_type, detect(base).kind) == ("sd2", "v_prediction", "img2img")
    sd1 = dict(base, **{"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]})
    assert (detect(sd1).family, detect(sd1).prediction_type) == ("sd1", "epsilon")
    with pytest.raises(ModelLoadError, match="inpainting"):
        detect(dict(base, **{"model.diffusion_model.input_blocks.0.0.weight": [320, 9, 3, 3]}))
    with pytest.raises(ModelLoadError, match="no MiDaS weights"):
        detect(dict(base, **{"model.diffusion_model.input_blocks.0.0.weight": [320, 5, 3, 3]}))
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint"):
        detect({"lora_unet_down.weight": [4, 4]})


# --------------------------------------------------------------------------------------------------
# values: the scaled-down fp32 checkpoint
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """The scaled-down checkpoint as a Lightning-style .ckpt (state_dict wrapper, global_step) + yaml."""
    d = tmp_path_factory.mktemp("tiny_ckpt")
    sd = tiny_original_state_dict(seed=1)
    path = d / "tiny-depth.ckpt"
    torch.save({"state_dict": sd, "global_step": 12345, "epoch": 1}, path)
    (d / "tiny-depth.yaml").write_text(TINY_YAML)
    return path, sd


@pytest.fixture(scope="module")
def tiny_components(tiny_ckpt):
    return load_single_file(tiny_ckpt[0])


def _openclip_reference(sd, ids, n_layers, p="cond_stage_model.model."):
    """Original FrozenOpenCLIPEmbedder.encode_with_transformer: embeddings, the first n_layers resblocks
    (nn.MultiheadAttention with the causal mask, pre-LN, exact GELU MLP), then ln_final."""
    x = sd[p + "token_embedding.weight"][ids] + sd[p + "positional_embedding"]
    n, L, w = x.shape
    heads = w // 64
    mask = torch.full((L, L), float("-inf")).triu(1)
    for i in range(n_layers):
        r = f"{p}transformer.resblocks.{i}."
        h = F.layer_norm(x, (w,), sd[r + "ln_1.weight"], sd[r + "ln_1.bias"], 1e-5)
        q, k, v = F.linear(h, sd[r + "attn.in_proj_weight"], sd[r + "attn.in_proj_bias"]).chunk(3, -1)
        q, k, v = (t.reshape(n, L, heads, -1).transpose(1, 2) for t in (q, k, v))
        a = ((q @ k.transpose(-2, -1)) / (w // heads) ** 0.5 + mask).softmax(-1) @ v
        x = x + F.linear(a.transpose(1, 2).reshape(n, L, w), sd[r + "attn.out_proj.weight"], sd[r + "attn.out_proj.bias"])
        h = F.layer_norm(x, (w,), sd[r + "ln_2.weight"], sd[r + "ln_2.bias"], 1e-5)
        h = F.linear(F.gelu(F.linear(h, sd[r + "mlp.c_fc.weight"], sd[r + "mlp.c_fc.bias"])), sd[r + "mlp.c_proj.weight"], sd[r + "mlp.c_proj.bias"])
        x = x + h
    return F.layer_norm(x, (w,), sd[p + "ln_final.weight"], sd[p + "ln_final.bias"], 1e-5)


def test_text_encoder_is_original_penultimate_plus_final_norm(tiny_ckpt, tiny_components):
    _, sd = tiny_ckpt
    c = tiny_components
    assert c.text_encoder.config.num_hidden_layers == TINY_CLIP_BLOCKS - 1
    ids = c.tokenizer(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[0, 7:].eq(0).all()  # open_clip pads with 0
    with torch.no_grad():
        got = c.text_encoder(ids).last_hidden_state
    ref = _openclip_reference(sd, ids, TINY_CLIP_BLOCKS - 1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_lightning_ckpt_loads_with_yaml_and_tolerates_ema_counters(tiny_components):
    c = tiny_components
    assert c.kind == "depth" and c.name == "tiny-depth"
    assert c.unet.config.in_channels == 5 and c.unet.dtype == torch.float32
    assert type(c.feature_extractor).__name__ == "MidasTransform"
    assert type(c.depth_estimator).__name__ == "MidasDPTForDepthEstimation"


def test_nan_weights_are_reported(tiny_ckpt):
    _, sd = tiny_ckpt
    bad = dict(sd)
    bad["model.diffusion_model.out.2.bias"] = torch.tensor([0.0, float("nan"), 0.0, 0.0])
    bad["model_ema.decay"] = torch.tensor(float("nan"))  # ignored keys do not count
    cfg_path = tiny_ckpt[0].with_suffix(".yaml")
    with pytest.raises(NonFiniteWeightsError) as info:
        components_from_state_dict(bad, config=cfg_path)
    assert str(info.value) == (  # exactly one used tensor is named: the ignored NaN EMA counter is not counted
        "the checkpoint has NaN/Inf values in 'model.diffusion_model.out.2.bias'; it would only produce black images"
    )
    only_ignored = dict(sd, **{"model_ema.decay": torch.tensor(float("nan"))})
    assert components_from_state_dict(only_ignored, config=cfg_path).kind == "depth"  # NaN in an ignored key loads


def test_fp16_safetensors_and_cache(tiny_ckpt, tmp_path):
    from safetensors.torch import save_file

    path, sd = tiny_ckpt
    st = tmp_path / "tiny-depth.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}, str(st))
    (tmp_path / "tiny-depth.yaml").write_text(TINY_YAML)
    c = load_single_file(st, dtype=torch.float16)
    assert c.unet.dtype == torch.float16
    w = c.unet.conv_in.weight
    assert torch.equal(w, sd["model.diffusion_model.input_blocks.0.0.weight"].half())
    # the cache: a pickle becomes a memory-mapped safetensors copy keyed by the file's sha256
    cache = tmp_path / "cache"
    c1 = load_single_file(path, cache_dir=cache)
    entries = sorted(p.name for p in cache.glob("*.safetensors"))
    assert len(entries) == 1 and c1.model_hash and entries[0].startswith(c1.model_hash[:16])
    c2 = load_single_file(path, cache_dir=cache)
    assert c2.model_hash == c1.model_hash
    assert torch.equal(c2.unet.conv_in.weight, c1.unet.conv_in.weight)


def test_one_step_generation_from_single_file(tiny_components):
    from depth2img import pipeline
    pipe = pipeline.load_pipeline(tiny_components)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    res = pipe.generate(prompt="a cat", image=img, steps=1, strength=1.0, seed=1, guidance_scale=7.5)
    assert res.images[0].size == (64, 64)
    arr = np.asarray(res.images[0])
    assert arr.std() > 0


def test_buffers_not_in_the_file_equal_a_plainly_built_model(tiny_components):
    """Text encoder and DPT are built without transformers' weight init (their weights come from the file):
    every buffer the file does not carry (CLIP's position_ids, ...) must equal the same class built the
    ordinary way, transformers' full ``__init__`` + ``_init_weights`` on real tensors."""
    for part in ("text_encoder", "depth_estimator"):
        model = getattr(tiny_components, part)
        reference = type(model)(model.config)
        persistent = set(model.state_dict())
        buffers = {n: b for n, b in model.named_buffers() if n not in persistent}
        expected = dict(reference.named_buffers())
        assert buffers or part == "depth_estimator", part  # DPT-Hybrid has none; CLIP has position_ids
        for name, b in buffers.items():
            assert torch.equal(b, expected[name]), f"{part}.{name} differs from a plainly built model"


def test_single_file_low_precision_casts_each_weight_once_per_run(tiny_components):
    """The single-file loader's modules behave as diffusers' from_pretrained ones under torch.autocast: the
    UNet's weights are cast to bf16 once per image (autocast caches casts only of parameters that require
    grad; this loader once switched that off, so every step re-cast every weight)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from depth2img import pipeline

    pipe = pipeline.load_pipeline(tiny_components)
    weight = pipe.unet.conv_in.weight
    casts = []

    class CountCasts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() == weight.data_ptr():
                casts.append(kwargs.get("dtype"))
            return func(*args, **kwargs)

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with CountCasts():
        pipe.generate(prompt="a cat", image=img, steps=4, strength=1.0, seed=1, scheduler="euler", low_precision=True)
    assert casts == [torch.bfloat16]
