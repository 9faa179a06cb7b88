"""Infotext "Model hash" is A1111's short hash (sha256 of the whole file, first 10 hex digits, computed in
the test with hashlib) for every single file: .ckpt through the cache or not, .safetensors; none for folders."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.infotext import parse_infotext
from tests._sd2_layout import TINY_IMG2IMG_YAML, tiny_img2img_state_dict


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hash")
    sd = tiny_img2img_state_dict(seed=5)
    ckpt, st = d / "m.ckpt", d / "m2.safetensors"
    torch.save({"state_dict": sd}, ckpt)
    save_file(sd, str(st))
    for f in (ckpt, st):
        f.with_suffix(".yaml").write_text(TINY_IMG2IMG_YAML)
    return ckpt, st


def _a1111_short_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def _infotext_hash(pipe):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    res = pipe.generate(prompt="x", image=img, steps=2, strength=0.5, seed=1)
    return parse_infotext(res.infotexts[0]).get("Model hash")


@pytest.mark.parametrize("which", ["ckpt", "safetensors"])
@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
def test_model_hash_is_a1111_short_hash(files, tmp_path, which, cached):
    path = files[0] if which == "ckpt" else files[1]
    cache = tmp_path / "cache" if cached else None
    pipe = load_pipeline(str(path), cache_dir=cache)
    assert pipe.model_hash == _a1111_short_hash(path)
    assert _infotext_hash(pipe) == _a1111_short_hash(path)
    if cached:  # remembered: a second load reads the index, not the file
        from depth2img.models import cache as cache_module

        cache_module._MEMO.clear()

        def no_rehash(*a, **k):
            raise AssertionError("hashed twice")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cache_module, "sha256_file", no_rehash)
            assert load_pipeline(str(path), cache_dir=cache).model_hash == _a1111_short_hash(path)


def test_folders_have_no_model_hash():
    assert load_pipeline("tiny").model_hash is None
