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
    assert controlnet_layout(["controlnet_cond_embedding.conv_in.weight"]) == ("diffusers", False)
    assert controlnet_layout(["controlnet_cond_embedding.conv_in.weight", "add_embedding.linear_1.weight"]) == (
        "diffusers", True)
    assert controlnet_layout(["control_model.time_embed.0.weight", "control_model.input_hint_block.0.weight"]) == (
        "ldm", False)
    assert controlnet_layout(["control_model.time_embed.0.weight", "control_model.input_hint_block.0.weight",
                              "control_model.label_emb.0.0.weight"]) == ("ldm", True)
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
