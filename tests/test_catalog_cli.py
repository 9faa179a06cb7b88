"""`depth2img models` / `depth2img convert` and the catalog behind them."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from depth2img.models.catalog import list_models, short_hash


def _tree(tmp_path):
    a1111 = tmp_path / "models" / "Stable-diffusion"
    comfy = tmp_path / "models" / "checkpoints" / "sd2"
    for d in (a1111, comfy, tmp_path / "models" / "Lora", tmp_path / "models" / "diffusers" / "my-depth" / "unet"):
        d.mkdir(parents=True)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 5, 3, 3)}, str(a1111 / "512-depth-ema.safetensors"))
    (a1111 / "512-depth-ema.yaml").write_text("model: {params: {unet_config: {params: {in_channels: 5}}}}")
    torch.save({"state_dict": {"a": torch.zeros(1)}}, comfy / "v2-1_768.ckpt")
    save_file({"lora_unet.weight": torch.zeros(1)}, str(tmp_path / "models" / "Lora" / "style.safetensors"))
    folder = tmp_path / "models" / "diffusers" / "my-depth"
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": 5}))
    return tmp_path / "models"


def test_catalog_finds_a1111_comfy_and_diffusers_but_not_loras(tmp_path):
    root = _tree(tmp_path)
    found = {(m.name, m.kind, m.layout, m.config.name if m.config else None) for m in list_models(root)}
    assert found == {
        ("512-depth-ema", "depth", "checkpoint", "512-depth-ema.yaml"),
        ("sd2/v2-1_768", "?", "checkpoint", None),  # a pickle is never opened for a listing
        ("diffusers/my-depth", "depth", "diffusers", None),
    }
    assert all(m.short_hash is None for m in list_models(root))  # hashing only on request


def test_short_hash_is_a1111s_and_remembered(tmp_path):
    root = _tree(tmp_path)
    f = root / "Stable-diffusion" / "512-depth-ema.safetensors"
    expected = hashlib.sha256(f.read_bytes()).hexdigest()[:10]
    cache = tmp_path / "cache"
    assert short_hash(f, cache) == expected
    assert (cache / "index.json").is_file() and expected in (cache / "index.json").read_text()
    assert short_hash(f, cache) == expected


def test_cli_models_and_convert(tmp_path, monkeypatch):
    from depth2img.cli import app

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = _tree(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["models", str(root), "--no-hf-cache"])
    assert res.exit_code == 0 and "512-depth-ema" in res.output and "depth" in res.output
    # converting a file that is not a complete model fails with one line, exit 2
    res = runner.invoke(app, ["convert", str(root / "Stable-diffusion" / "512-depth-ema.safetensors"), str(tmp_path / "out")])
    assert res.exit_code == 2 and "error:" in res.output
    # .ckpt -> .safetensors through the safe loader
    res = runner.invoke(app, ["convert", str(root / "checkpoints" / "sd2" / "v2-1_768.ckpt"), str(tmp_path / "v2"), "--format", "safetensors"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v2.safetensors").is_file()


def test_cli_models_lists_unreadable_files_apart_without_hashes(tmp_path, monkeypatch):
    """Issue 7 item 17: zero-byte and random files were listed as '?' checkpoints with the empty file's hash."""
    import hashlib

    from depth2img.cli import app

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = _tree(tmp_path)
    (root / "empty.ckpt").write_bytes(b"")
    (root / "noise.safetensors").write_bytes(bytes(range(256)) * 4)
    res = CliRunner().invoke(app, ["models", str(root), "--no-hf-cache", "--hash"])
    assert res.exit_code == 0, res.output
    table, _, apart = res.output.partition("unreadable file(s), not models:")
    assert "empty" not in table and "noise" not in table  # not in the models table
    assert "empty: empty.ckpt is empty (0 bytes)" in apart and "noise: noise.safetensors is not a safetensors file" in apart
    assert hashlib.sha256(b"").hexdigest()[:10] not in res.output  # never hashed
