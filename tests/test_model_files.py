"""One place for model-file facts: suffix tables, same-name configs, model kinds; converted files' mode."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import depth2img
from depth2img.models.files import sidecar_config
from depth2img.models.kinds import kind_from_unet_channels

PACKAGE = Path(depth2img.__file__).parent


def _suffix_tuples(tree: ast.AST) -> list[int]:
    """Line numbers of tuple/list/set literals holding the string ".ckpt" or ".safetensors"."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if values & {".ckpt", ".safetensors"}:
                lines.append(node.lineno)
    return lines


def test_only_models_files_spells_checkpoint_suffixes():
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        if source == PACKAGE / "models" / "files.py":
            continue
        for line in _suffix_tuples(ast.parse(source.read_text(), str(source))):
            offenders.append(f"{source.relative_to(PACKAGE)}:{line}")
    assert not offenders, f"checkpoint suffix lists outside models/files.py: {offenders}"


def test_the_scan_sees_a_suffix_tuple():
    assert _suffix_tuples(ast.parse('X = (".ckpt", ".pt")')) and not _suffix_tuples(ast.parse('X = (".png",)'))


def test_sidecar_config_is_the_same_name_yaml_or_yml(tmp_path):
    ckpt = tmp_path / "m.ckpt"
    assert sidecar_config(ckpt) is None
    (tmp_path / "m.yml").write_text("x")
    assert sidecar_config(ckpt) == tmp_path / "m.yml"
    (tmp_path / "m.yaml").write_text("x")
    assert sidecar_config(ckpt) == tmp_path / "m.yaml"  # .yaml first, as A1111


def test_kind_from_unet_channels():
    assert [kind_from_unet_channels(n) for n in (5, 4, 9, 8, None)] == ["depth", "img2img", None, None, None]


def test_converted_files_have_the_mode_of_a_plain_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    from depth2img.models.convert import convert

    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        src = tmp_path / "src.safetensors"
        save_file({"a": torch.zeros(2)}, str(src))
        (tmp_path / "src.yaml").write_text("model: {}\n")
        out_st = convert(src, tmp_path / "out.safetensors")
        out_ckpt = convert(src, tmp_path / "out.ckpt")
        from depth2img.models.convert import copy_sidecar_config

        copy_sidecar_config(src, out_st)
    finally:
        os.umask(old)
    want = plain.stat().st_mode & 0o777
    assert want == 0o640
    for p in (out_st, out_ckpt, tmp_path / "out.yaml"):
        assert p.stat().st_mode & 0o777 == want, p
    assert not list(tmp_path.glob(".*tmp*"))


def test_models_are_built_with_meta_parameters_and_real_buffers():
    """single_file builds every model without allocating parameters; buffers the file does not carry
    (CLIP's position_ids) must stay real."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from depth2img.models.single_file import empty_parameters

    with empty_parameters():
        model = CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=16))
    assert all(p.device.type == "meta" for p in model.parameters())
    buffers = dict(model.named_buffers())
    assert buffers and all(b.device.type == "cpu" for b in buffers.values())
    position_ids = next(b for name, b in buffers.items() if name.endswith("position_ids"))
    assert torch.equal(position_ids.flatten(), torch.arange(16))


def test_the_midas_transform_returns_a_transformers_batch_feature():
    import numpy as np
    from transformers import BatchFeature

    from depth2img.models.midas import MidasTransform

    out = MidasTransform()(images=[np.zeros((64, 96, 3), np.uint8)], return_tensors="pt")
    assert isinstance(out, BatchFeature) and list(out.keys()) == ["pixel_values"]
    assert out.pixel_values is out["pixel_values"] and tuple(out.pixel_values.shape) == (1, 3, 256, 384)  # MiDaS "minimal": scale 4 (closer to 1 than 6)
    assert out.to("cpu").pixel_values.dtype.is_floating_point
