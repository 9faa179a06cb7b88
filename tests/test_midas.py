"""The converted depth estimator reproduces the original MiDaS DPT-Hybrid, and the transform is MiDaS's.

timm and the MiDaS package cannot be installed here, so ``reference_dpt_hybrid`` below is a minimal,
independent re-statement of the original forward, written from the original code paths
(stablediffusion ``ldm/modules/midas/midas/{dpt_depth,vit,blocks}.py`` and timm 0.4.12/0.6.13
``vit_base_resnet50_384``: ``StdConv2dSame`` eps 1e-8 with TF-SAME padding, ``GroupNormAct`` 32 groups,
``MaxPool2dSame`` padding with -inf, non-pre-activation bottlenecks, ViT blocks with LayerNorm eps 1e-6,
``forward_flex`` bilinear pos-embed resize, hooks on ResNet stages 0-1 and ViT blocks 8/11, ``ProjectReadout``,
``FeatureFusionBlock_custom`` with align_corners=True, the non-negative head). It reads the *original*
state-dict keys, so it also checks the key mapping semantically (a swapped q/k or refinenet order changes
the output). Not covered: cv2's exact resize arithmetic (cv2 is not installed; see the transform notes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests._sd2_layout import layout, random_state_dict
from PIL import Image

from depth2img.models.convert_midas import MIDAS_PREFIX, dpt_to_midas, midas_to_dpt
from depth2img.models.midas import MidasTransform, build_depth_estimator, midas_output_size

# --------------------------------------------------------------------------------------------------
# reference: original MiDaS DPT-Hybrid forward on original keys
# --------------------------------------------------------------------------------------------------


def _pad_same(x, k, s, value=0.0):
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=value)


def _std_conv(x, w, stride=1):
    w = F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, training=True, momentum=0.0, eps=1e-8).reshape_as(w)
    return F.conv2d(_pad_same(x, w.shape[-1], stride), w, None, stride)


def _gn(x, sd, p, act=True):
    x = F.group_norm(x, 32, sd[p + ".weight"], sd[p + ".bias"], 1e-5)
    return F.relu(x) if act else x


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-6)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])


def _conv(x, sd, p, stride=1, padding=0, bias=True):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias") if bias else None, stride, padding)


def reference_dpt_hybrid(sd, x):
    """Original ``DPTDepthModel(backbone="vitb_rn50_384", non_negative=True).forward`` -> (N, H, W)."""
    P = "pretrained.model."
    B = P + "patch_embed.backbone."
    n, _, h, w = x.shape
    # ResNetV2 stem (stem_type "same"): StdConv2dSame 7x7/2, GroupNormAct, MaxPool2dSame 3x3/2
    y = _std_conv(x, sd[B + "stem.conv.weight"], 2)
    y = _gn(y, sd, B + "stem.norm")
    y = F.max_pool2d(_pad_same(y, 3, 2, value=float("-inf")), 3, 2)
    hooks = []
    for si, depth in enumerate((3, 4, 9)):
        for bi in range(depth):
            q = f"{B}stages.{si}.blocks.{bi}."
            stride = (1 if si == 0 else 2) if bi == 0 else 1
            sc = y
            if bi == 0:
                sc = _gn(_std_conv(y, sd[q + "downsample.conv.weight"], stride), sd, q + "downsample.norm", act=False)
            z = _gn(_std_conv(y, sd[q + "conv1.weight"]), sd, q + "norm1")
            z = _gn(_std_conv(z, sd[q + "conv2.weight"], stride), sd, q + "norm2")
            z = _gn(_std_conv(z, sd[q + "conv3.weight"]), sd, q + "norm3", act=False)
            y = F.relu(z + sc)
        if si < 2:
            hooks.append(y)  # "1" = stages[0], "2" = stages[1]
    # forward_flex
    gh, gw = h // 16, w // 16
    pos = sd[P + "pos_embed"]
    grid = pos[0, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bilinear").permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
    pos = torch.cat([pos[:, :1], grid], dim=1)
    t = _conv(y, sd, P + "patch_embed.proj").flatten(2).transpose(1, 2)
    t = torch.cat([sd[P + "cls_token"].expand(n, -1, -1), t], dim=1) + pos
    for i in range(12):
        q = f"{P}blocks.{i}."
        a = _ln(t, sd, q + "norm1")
        qkv = _lin(a, sd, q + "attn.qkv").reshape(n, -1, 3, 12, 64).permute(2, 0, 3, 1, 4)
        att = (qkv[0] @ qkv[1].transpose(-2, -1)) * 64**-0.5
        a = (att.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(n, -1, 768)
        t = t + _lin(a, sd, q + "attn.proj")
        m = _lin(F.gelu(_lin(_ln(t, sd, q + "norm2"), sd, q + "mlp.fc1")), sd, q + "mlp.fc2")
        t = t + m
        if i in (8, 11):
            hooks.append(t)
    # act_postprocess3/4: ProjectReadout, transpose, unflatten, 1x1 conv (+ 3x3/2 conv for 4)
    layers = [hooks[0], hooks[1]]
    for k, tok in ((3, hooks[2]), (4, hooks[3])):
        q = f"pretrained.act_postprocess{k}."
        feat = torch.cat([tok[:, 1:], tok[:, :1].expand_as(tok[:, 1:])], -1)
        feat = F.gelu(_lin(feat, sd, q + "0.project.0")).transpose(1, 2).unflatten(2, (gh, gw))
        feat = _conv(feat, sd, q + "3")
        if k == 4:
            feat = _conv(feat, sd, q + "4", stride=2, padding=1)
        layers.append(feat)
    rn = [_conv(layers[i], sd, f"scratch.layer{i + 1}_rn", padding=1, bias=False) for i in range(4)]

    def rcu(v, q):
        o = _conv(F.relu(v), sd, q + ".conv1", padding=1)
        return _conv(F.relu(o), sd, q + ".conv2", padding=1) + v

    def fuse(k, a, b=None):
        q = f"scratch.refinenet{k}"
        o = a if b is None else a + rcu(b, q + ".resConfUnit1")
        o = rcu(o, q + ".resConfUnit2")
        o = F.interpolate(o, scale_factor=2, mode="bilinear", align_corners=True)
        return _conv(o, sd, q + ".out_conv")

    path = fuse(4, rn[3])
    path = fuse(3, path, rn[2])
    path = fuse(2, path, rn[1])
    path = fuse(1, path, rn[0])
    o = _conv(path, sd, "scratch.output_conv.0", padding=1)
    o = F.interpolate(o, scale_factor=2, mode="bilinear", align_corners=True)
    o = F.relu(_conv(o, sd, "scratch.output_conv.2", padding=1))
    o = F.relu(_conv(o, sd, "scratch.output_conv.4"))
    return o.squeeze(1)


@pytest.fixture(scope="module")
def midas_sd():
    shapes = {k: s for k, s in layout().items() if k.startswith(MIDAS_PREFIX)}
    return random_state_dict(shapes, seed=3)


@pytest.mark.parametrize("hw", [(96, 128), (64, 64)])
def test_converted_dpt_matches_original_midas_forward(midas_sd, hw):
    hf_sd, ignored = midas_to_dpt(midas_sd)
    assert ignored == [MIDAS_PREFIX + "pretrained.model.head.bias", MIDAS_PREFIX + "pretrained.model.head.weight"] or \
        sorted(ignored) == sorted([MIDAS_PREFIX + "pretrained.model.head.bias", MIDAS_PREFIX + "pretrained.model.head.weight"])
    model = build_depth_estimator()
    model.load_state_dict(hf_sd, strict=True, assign=True)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    orig = {k[len(MIDAS_PREFIX):]: v for k, v in midas_sd.items()}
    with torch.no_grad():
        ref = reference_dpt_hybrid(orig, x)
        got = model(x).predicted_depth
    assert got.shape == ref.shape == (2, *hw)
    assert ref.std() > 1e-3  # a meaningful, non-degenerate prediction
    err = (got - ref).abs().max() / ref.abs().max()
    assert err < 1e-4, f"relative max error {err:.2e}"


def test_midas_mapping_round_trip_is_exact(midas_sd):
    hf_sd, ignored = midas_to_dpt(midas_sd)
    back = dpt_to_midas(hf_sd)
    assert set(back) | set(ignored) == set(midas_sd)
    for k, v in back.items():
        assert torch.equal(v, midas_sd[k]), k


@pytest.mark.parametrize(
    "wh, expected_wh",
    [((512, 512), (384, 384)), ((768, 512), (576, 384)), ((512, 768), (384, 576)), ((1024, 512), (768, 384)),
     ((128, 256), (192, 384)), ((64, 64), (384, 384)), ((400, 300), (384, 288))],
)
def test_midas_output_size_examples(wh, expected_wh):
    w, h = wh
    eh, ew = midas_output_size(h, w)
    assert (ew, eh) == expected_wh


def test_transform_matches_the_original_steps():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(80, 120, 3), dtype=np.uint8)
    out = MidasTransform()(images=[Image.fromarray(arr)], return_tensors="pt").pixel_values
    assert out.shape == (1, 3, 256, 384) and out.dtype == torch.float32
    # the original order: float [0,1] HWC -> bicubic (a=-0.75, half-pixel, no antialias) -> (x-0.5)/0.5
    x = torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    ref = (F.interpolate(x, size=(256, 384), mode="bicubic", align_corners=False) - 0.5) / 0.5
    assert torch.equal(out, ref)
    # bicubic overshoot is kept (no clipping), as cv2 does
    assert out.min() < -1 or out.max() > 1


def test_transform_is_close_to_cv2_inter_cubic():
    """OpenCV is a test-only dependency (the library never uses it): the original's cv2.INTER_CUBIC is the reference."""
    import cv2
    rng = np.random.default_rng(1)
    for h, w in [(512, 768), (300, 400), (1024, 700)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        nh, nw = midas_output_size(h, w)
        ref = (cv2.resize(a.astype(np.float32) / 255, (nw, nh), interpolation=cv2.INTER_CUBIC) - 0.5) / 0.5
        got = MidasTransform()(images=[Image.fromarray(a)]).pixel_values[0].permute(1, 2, 0).numpy()
        assert np.abs(got - ref).max() < 5e-4
