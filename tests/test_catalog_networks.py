"""`depth2img models` lists LoRAs and embeddings where A1111 and ComfyUI keep them, with A1111's short
hashes computed here by hand (hashlib): addnet's hash for a LoRA .safetensors (sha256 of what follows the
header, A1111 ``NetworkOnDisk.read_hash``), the whole file's sha256 for an embedding; 12 hex digits."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from depth2img.cli.app import app
from depth2img.models.networks import list_networks


def addnet_hash(path):
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]


def file_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _a1111(root):
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    (root / "models" / "Lora").mkdir()
    (root / "embeddings").mkdir()
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 4)}, str(root / "models" / "Lora" / "ink.safetensors"),
              metadata={"ss_output_name": "ink-v1"})
    torch.save({"string_to_param": {"*": torch.ones(1, 32)}}, root / "embeddings" / "bad-hands.pt")
    (root / "models" / "Lora" / "broken.safetensors").write_bytes(b"not a safetensors file")
    return root


def test_a1111_tree_from_its_root_or_its_models_folder(tmp_path):
    root = _a1111(tmp_path / "webui")
    for given in (root, root / "models"):
        found = [(e.name, e.kind, e.problem is None) for e in list_networks(given)]
        assert found == [("broken", "lora", False), ("ink", "lora", True), ("bad-hands", "embedding", True)]
    ink = list_networks(root)[1]
    assert ink.alias == "ink-v1" and ink.short_hash() == addnet_hash(root / "models" / "Lora" / "ink.safetensors")


def test_comfyui_tree(tmp_path):
    models = tmp_path / "ComfyUI" / "models"
    (models / "loras").mkdir(parents=True)
    (models / "embeddings").mkdir()
    save_file({"a": torch.zeros(3)}, str(models / "loras" / "style.safetensors"))
    save_file({"emb_params": torch.zeros(1, 32)}, str(models / "embeddings" / "neg.safetensors"))
    found = [(e.name, e.kind, e.path.parent.name) for e in list_networks(tmp_path / "ComfyUI")]
    assert found == [("style", "lora", "loras"), ("neg", "embedding", "embeddings")]


def test_models_command_lists_them_with_a1111_short_hashes(tmp_path):
    root = _a1111(tmp_path / "webui")
    res = CliRunner().invoke(app, ["models", str(root / "models"), "--hash", "--no-hf-cache"])
    assert res.exit_code == 0, res.output
    table, _, unreadable = res.output.partition("unreadable file(s), not models:")
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert lines["ink"][1:3] == ["lora", "Lora"] and lines["ink"][-1] == addnet_hash(root / "models" / "Lora" / "ink.safetensors")
    assert lines["bad-hands"][1:3] == ["embedding", "embeddings"]
    assert lines["bad-hands"][-1] == file_hash(root / "embeddings" / "bad-hands.pt")
    assert "broken" in unreadable and "broken" not in table
