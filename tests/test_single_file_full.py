"""The full-size original layout (all 1,608 keys and shapes of 512-depth-ema.ckpt, random sensibly scaled
values, fp16 = 2.85 GB) loads offline and generates one step. The file is written once per session."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests._sd2_layout import layout, random_tensor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def full_size_fp16(tmp_path_factory):
    from safetensors.torch import save_file

    shapes = layout()
    gen = torch.Generator().manual_seed(0)
    sd = {k: random_tensor(k, s, gen, torch.float16) for k, s in shapes.items()}
    sd["model_ema.decay"] = torch.tensor(0.9999)  # real files may carry these
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    path = tmp_path_factory.mktemp("full") / "512-depth-ema.safetensors"
    save_file(sd, str(path))
    del sd
    yield path
    path.unlink()  # 2.85 GB: do not leave it in pytest's kept temp dirs


def test_full_size_file_loads_offline_and_generates(full_size_fp16, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("loading a single file must not touch the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    from depth2img import load_pipeline

    t = time.perf_counter()
    pipe = load_pipeline(str(full_size_fp16))
    load_s = time.perf_counter() - t
    assert pipe.unet.config.in_channels == 5
    assert sum(p.numel() for p in pipe.unet.parameters()) == 865_913_604
    assert type(pipe.depth_estimator).__name__ == "MidasDPTForDepthEstimation"  # from the file's depth_model.*
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    t = time.perf_counter()
    res = pipe.generate(prompt="a stone bridge", image=img, steps=1, strength=1.0, seed=7)
    gen_s = time.perf_counter() - t
    arr = np.asarray(res.images[0])
    assert arr.shape == (64, 64, 3) and arr.std() > 0
    print(f"\nfull-size fp16 file: load {load_s:.1f} s, one 64x64 step {gen_s:.1f} s")
