"""Hardening of model loading through the Python API: the catalog sets unreadable files apart, incomplete
diffusers folders fail at once with sockets refused, offline hub messages are whole sentences, and a
conversion that could not be loaded back is refused before anything is written."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth2img.models.catalog import list_models


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails the test (as tests/test_single_file_full.py)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a local model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------------------------------
# catalog: unreadable files apart, never hashed
# --------------------------------------------------------------------------------------------------


def test_catalog_lists_unreadable_files_apart_and_never_hashes_them(tmp_path, monkeypatch):
    from depth2img.models import cache

    root = tmp_path / "Stable-diffusion"
    root.mkdir()
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(root / "good.safetensors"))
    torch.save({"state_dict": {"a": torch.zeros(1)}}, root / "good.ckpt")
    (root / "empty.ckpt").write_bytes(b"")
    (root / "noise.safetensors").write_bytes(bytes(np.random.default_rng(0).integers(1, 256, 2048, dtype=np.uint8)))
    (root / "notes.ckpt").write_text("not a model\n")
    monkeypatch.setattr(cache, "sha256_file", lambda *a, **k: pytest.fail("a listing hashed a file"))
    entries = {m.path.name: m for m in list_models(root)}
    assert entries["good.safetensors"].problem is None and entries["good.safetensors"].kind == "img2img"
    assert entries["good.ckpt"].problem is None
    assert entries["empty.ckpt"].problem == "empty.ckpt is empty (0 bytes): not a checkpoint"
    assert entries["notes.ckpt"].problem == "notes.ckpt is a text file, not a checkpoint"
    assert entries["noise.safetensors"].problem.startswith("noise.safetensors is not a safetensors file")
    assert all(m.kind == "?" and m.short_hash is None for m in entries.values() if m.problem)
