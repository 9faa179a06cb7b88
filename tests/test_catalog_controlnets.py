"""`depth2img models` lists ControlNets where A1111 and ComfyUI keep them, named as sd-webui-controlnet names
them: "stem [hash]" with A1111's old short hash (modules/hashes.py ``model_hash``: sha256 of the 64 KiB at
offset 1 MiB, first 8 hex digits), computed here independently from the file's bytes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from typer.testing import CliRunner

from depth2img.models.catalog import list_controlnets, list_models


def _old_hash(data: bytes) -> str:
    return hashlib.sha256(data[1024 * 1024: 1024 * 1024 + 64 * 1024]).hexdigest()[:8]


def _install(tmp_path):
    """An A1111 install (models/Stable-diffusion + models/ControlNet) and a ComfyUI one (models/controlnet)."""
    rng = np.random.default_rng(0)
    webui = tmp_path / "webui" / "models"
    (webui / "Stable-diffusion").mkdir(parents=True)
    (webui / "ControlNet" / "cn-folder").mkdir(parents=True)
    files = {}
    for name in ("control_v11f1p_sd15_depth.pth", "diffusers_xl_depth_mid.safetensors"):
        files[name] = rng.integers(0, 256, 1024 * 1024 + 100 * 1024, dtype=np.uint8).tobytes()
        (webui / "ControlNet" / name).write_bytes(files[name])
    (webui / "ControlNet" / "cn-folder" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    (webui / "ControlNet" / "notes.txt").write_text("not a model")
    comfy = tmp_path / "comfy" / "models" / "controlnet"
    comfy.mkdir(parents=True)
    files["small.safetensors"] = b"x" * 100  # under 1 MiB: the hash of nothing, as A1111
    (comfy / "small.safetensors").write_bytes(files["small.safetensors"])
    return webui, comfy, files


def test_controlnets_are_found_from_every_root_a_user_gives(tmp_path):
    webui, comfy, files = _install(tmp_path)
    expected = {"control_v11f1p_sd15_depth [" + _old_hash(files["control_v11f1p_sd15_depth.pth"]) + "]",
                "diffusers_xl_depth_mid [" + _old_hash(files["diffusers_xl_depth_mid.safetensors"]) + "]",
                "cn-folder"}
    for root in (webui.parent, webui, webui / "Stable-diffusion", webui / "ControlNet"):
        assert {c.title for c in list_controlnets(root)} == expected, root
    assert [c.title for c in list_controlnets(comfy.parent.parent)] == [f"small [{_old_hash(b'')}]"]
    assert list_models(webui / "ControlNet") == []  # a ControlNet is never listed as a checkpoint


def test_models_command_prints_the_controlnets(tmp_path):
    from depth2img.cli import app

    webui, _, files = _install(tmp_path)
    result = CliRunner().invoke(app, ["models", str(webui), "--no-hf-cache"])
    assert result.exit_code == 0, result.output
    assert "ControlNets" in result.output
    assert f"control_v11f1p_sd15_depth [{_old_hash(files['control_v11f1p_sd15_depth.pth'])}]" in result.output
