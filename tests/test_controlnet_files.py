"""ControlNet files: diffusers-keyed .safetensors single files (config beside them), strict loading,
key-layout detection, A1111's short name, and a crafted malicious .pth refused by the safe loader."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.errors import Depth2ImgError, ModelLoadError
from depth2img.models.controlnet import controlnet_layout, load_controlnet, tiny_controlnet


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnfile")
    model = tiny_controlnet()
    path = folder / "my_depth.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    (folder / "my_depth.json").write_text(json.dumps(dict(model.config)))
    return model, path


def test_diffusers_keyed_single_file_loads_the_same_weights(tiny_file):
    model, path = tiny_file
    loaded, name = load_controlnet(path)
    assert name.startswith("my_depth [") and len(name) == len("my_depth [12345678]")
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    pipe = load_pipeline("tiny-sd15", controlnet=str(path))
    assert pipe.backend.family == "sd-controlnet"


def test_a_file_with_a_missing_key_is_refused(tiny_file, tmp_path):
    model, path = tiny_file
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "controlnet_mid_block.bias"}
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken))
    (tmp_path / "broken.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(ModelLoadError, match="does not match its config"):
        load_controlnet(broken)


def test_layouts_are_detected_by_keys():
    assert controlnet_layout(["controlnet_cond_embedding.conv_in.weight"]) == ("diffusers", "sd15")
    assert controlnet_layout(["controlnet_cond_embedding.conv_in.weight", "add_embedding.linear_1.weight"]) == (
        "diffusers", "sdxl_small")
    assert controlnet_layout(["control_model.time_embed.0.weight", "control_model.input_hint_block.0.weight"]) == (
        "ldm", "sd15")
    assert controlnet_layout(["control_model.time_embed.0.weight", "control_model.input_hint_block.0.weight",
                              "control_model.label_emb.0.0.weight"]) == ("ldm", "sdxl_ldm")
    with pytest.raises(ModelLoadError, match="not a ControlNet"):
        controlnet_layout(["model.diffusion_model.time_embed.0.weight"])


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['CN_MARKER']}",))


def test_a_malicious_pth_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CN_MARKER", str(marker))
    path = tmp_path / "control_evil.pth"
    torch.save({"state_dict": {"control_model.time_embed.0.weight": torch.zeros(1)}, "x": _Evil()}, path)
    with pytest.raises(Depth2ImgError):
        load_controlnet(path)
    assert not marker.exists()


def to_a1111_keys(sd: dict, config: dict) -> dict:
    """diffusers ControlNet keys → A1111's ``control_model.*`` (cldm) names: the UNet part through
    depth2img's tested diffusers→LDM UNet table, the ControlNet-only parts written out here."""
    from depth2img.models.ldm_keys import unet_key_to_ldm

    n_hint = len(config["conditioning_embedding_out_channels"]) * 2 - 2  # blocks between conv_in and conv_out
    out = {}
    for key, value in sd.items():
        name, _, param = key.rpartition(".")
        if name.startswith("controlnet_down_blocks."):
            ldm = f"zero_convs.{name.split('.')[1]}.0"
        elif name == "controlnet_mid_block":
            ldm = "middle_block_out.0"
        elif name == "controlnet_cond_embedding.conv_in":
            ldm = "input_hint_block.0"
        elif name.startswith("controlnet_cond_embedding.blocks."):
            ldm = f"input_hint_block.{2 * (int(name.split('.')[2]) + 1)}"
        elif name == "controlnet_cond_embedding.conv_out":
            ldm = f"input_hint_block.{2 * (n_hint + 1)}"
        else:
            out["control_model." + unet_key_to_ldm(key, {**config, "up_block_types": []})] = value
            continue
        out[f"control_model.{ldm}.{param}"] = value
    return out


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a1111_keyed_file_loads_offline_with_the_same_weights(tiny_file, tmp_path, suffix, monkeypatch):
    import socket

    from diffusers import ControlNetModel

    # A1111 files have the real hint encoder (16, 32, 96, 256): diffusers' converter takes its last conv
    # at input_hint_block.14, so the fixture keeps that part full-size (tiny blocks otherwise).
    config = {**dict(tiny_file[0].config), "conditioning_embedding_out_channels": (16, 32, 96, 256)}
    torch.manual_seed(0)
    model = ControlNetModel.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)  # synthetic values, none zero
    sd = to_a1111_keys({k: v.contiguous() for k, v in model.state_dict().items()}, dict(model.config))
    assert "control_model.input_hint_block.0.weight" in sd and "control_model.zero_convs.0.0.weight" in sd
    target = tmp_path / f"control_tiny_depth{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": sd}, target)
    else:
        save_file(sd, str(target))
    target.with_suffix(".json").write_text(json.dumps(dict(model.config)))

    def no_network(*args, **kwargs):
        raise OSError("network refused in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded, _ = load_controlnet(target)
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_full_size_sd15_a1111_controlnet_loads_offline_from_pth_and_safetensors(tmp_path, monkeypatch):
    """Issue 12: a full-size SD 1.5 ControlNet (control_v11f1p_sd15_depth's architecture, 361 M parameters) in
    A1111's ``control_model.*`` layout, fp16 synthetic values, with no .json beside it: detected by keys, built
    from the shipped config, loaded strictly and offline from .pth and .safetensors with identical weights.
    The keys come from diffusers' ControlNetModel (built independently from the config) through
    ``to_a1111_keys``; the expected weights are that model's own."""
    import socket

    from diffusers import ControlNetModel

    from depth2img.models.controlnet import shipped_controlnet_config

    torch.manual_seed(0)
    model = ControlNetModel.from_config(shipped_controlnet_config("sd15")).half()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)  # synthetic values, none zero (a zero-init conv would hide a wrong mapping)
    expected = model.state_dict()
    assert sum(v.numel() for v in expected.values()) > 360_000_000  # the real size, not a tiny stand-in
    sd = to_a1111_keys({k: v.contiguous() for k, v in expected.items()}, dict(model.config))
    del model
    pth, st = tmp_path / "control_v11f1p_sd15_depth.pth", tmp_path / "control_v11f1p_sd15_depth_fp16.safetensors"
    torch.save(sd, pth)  # A1111's .pth files are a bare state dict
    save_file(sd, str(st))
    del sd

    def no_network(*args, **kwargs):
        raise OSError("network refused in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for path in (pth, st):
        assert not path.with_suffix(".json").exists()
        loaded, name = load_controlnet(path)
        got = loaded.state_dict()
        assert set(got) == set(expected), path.name
        assert all(torch.equal(got[k], expected[k].to(got[k].dtype)) for k in expected), path.name
        del loaded, got
