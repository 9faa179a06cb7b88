"""SDXL ControlNet single files (diffusers/controlnet-depth-sdxl-1.0 and its -mid/-small, the layout of
sd_control_collection's diffusers_xl_depth_{full,mid,small}.safetensors) load offline with no .json beside
them: the variant is told by keys and its shipped config used, strictly.

The state dicts are built independently of depth2img's loader: diffusers' own ``ControlNetModel`` from the
shipped config gives the real key names and shapes (on the meta device), random fp16 values fill them, and
diffusers' own ``infer_diffusers_model_type`` is the reference for which variant a key set is."""

from __future__ import annotations

import socket

import pytest
import torch
from safetensors.torch import save_file

from depth2img.errors import ModelLoadError
from depth2img.models.controlnet import controlnet_layout, load_controlnet, shipped_controlnet_config

# our variant → diffusers' model type for the same keys (diffusers/loaders/single_file_utils.py)
DIFFUSERS_TYPE = {"sdxl_full": "controlnet_xl_large", "sdxl_mid": "controlnet_xl_mid",
                  "sdxl_small": "controlnet_xl_small", "sd15": "controlnet"}


def meta_state_dict(variant: str) -> dict[str, torch.Tensor]:
    from diffusers import ControlNetModel

    with torch.device("meta"):
        return ControlNetModel.from_config(shipped_controlnet_config(variant)).state_dict()


def random_file(variant: str, folder, drop: str | None = None):
    """A diffusers-keyed .safetensors of ``variant`` with random fp16 values (no .json beside it)."""
    generator = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=generator).to(torch.float16)
          for k, v in meta_state_dict(variant).items() if k != drop}
    path = folder / f"diffusers_xl_depth_{variant}.safetensors"
    save_file(sd, str(path))
    return path, sd


@pytest.mark.parametrize("variant", ["sd15", "sdxl_full", "sdxl_mid", "sdxl_small"])
def test_each_variant_is_detected_as_diffusers_detects_it(variant):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    sd = meta_state_dict(variant)
    assert infer_diffusers_model_type(sd) == DIFFUSERS_TYPE[variant]
    assert controlnet_layout(sd) == ("diffusers", variant)


@pytest.mark.parametrize("variant", ["sdxl_small", "sdxl_mid"])
def test_sdxl_file_loads_offline_without_a_json_with_identical_weights(variant, tmp_path, monkeypatch):
    path, sd = random_file(variant, tmp_path)
    assert not path.with_suffix(".json").exists()

    def no_network(*args, **kwargs):
        raise OSError("network refused in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    model, name = load_controlnet(path)
    assert name.startswith(path.stem + " [")
    assert model.config.addition_embed_type == "text_time"
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], sd[k].float()) for k in sd)


def test_sdxl_file_with_a_missing_key_is_refused_in_one_line(tmp_path):
    path, _ = random_file("sdxl_small", tmp_path, drop="controlnet_down_blocks.3.weight")
    with pytest.raises(ModelLoadError) as info:
        load_controlnet(path)
    message = str(info.value)
    assert "\n" not in message and "does not match its config (sdxl_small)" in message
    assert "controlnet_down_blocks.3.weight" in message


def test_sdxl_file_in_the_ldm_layout_is_refused_clearly(tmp_path):
    sd = {"control_model.time_embed.0.weight": torch.zeros(2), "control_model.input_hint_block.0.weight": torch.zeros(2),
          "control_model.label_emb.0.0.weight": torch.zeros(2)}
    path = tmp_path / "control_sdxl.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelLoadError, match="diffusers cannot convert"):
        load_controlnet(path)
