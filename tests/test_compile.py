"""``compile``: the UNet through torch.compile (inductor), on the tiny model.

The compiled image is held to diffusers' eager pipeline (the parity tolerance, 1/255); that compiling really
happened is read from torch's own dynamo counters, not from our wrapper. Runs that change the UNet between
calls (DeepCache, LoRA) must take the eager UNet: bit-equal to a pipeline loaded without compile, and no new
graph. One inductor cache folder serves the module, so only the first test pays the full compile (~1 min).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from depth2img import load_pipeline
from depth2img.cli import app
from depth2img.cli.loading import use_inductor_cache

from ._reference import diffusers_depth_pipe, run_diffusers
from .conftest import photo

PROMPT = "A painting of a squirrel eating a burger"
RUN = dict(prompt=PROMPT, seed=3, steps=4, scheduler="pndm", guidance_scale=6.0, strength=0.8)


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inductor")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def compiled(inductor_cache):
    return load_pipeline("tiny", compile=True)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(int)


def test_compiled_unet_matches_diffusers_and_reports_its_compile_time(compiled):
    picture = photo("astronaut", (64, 64))
    before = graphs()
    first = compiled.generate(image=picture, **RUN)
    assert graphs() > before  # dynamo compiled a graph: the compiled module ran, not the eager one
    reference = diffusers_depth_pipe(compiled)  # compiled.unet is the eager module: diffusers runs eagerly
    expected = run_diffusers(reference, "pndm", seed=3, prompt=PROMPT, image=picture, steps=4, strength=0.8,
                             guidance_scale=6.0)[0].astype(int)
    assert np.abs(pixels(first) - expected).max() <= 1
    assert [w for w in first.warnings if w.startswith("torch.compile: the UNet's first call for input (2, 5, 8, 8)")]

    compiled_graphs = graphs()
    again = compiled.generate(image=picture, **{**RUN, "seed": 4})  # same size: the compiled graph is reused
    assert graphs() == compiled_graphs
    assert not [w for w in again.warnings if w.startswith("torch.compile")]
    assert np.abs(pixels(again) - pixels(first)).max() > 1  # another seed, another picture: not a stale output


def _lora_folder(root: Path, unet: torch.nn.Module) -> Path:
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_v")):
            state[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g)
            state[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g)
    save_file(state, str(root / "style.safetensors"))
    return root


def test_deepcache_and_lora_runs_use_the_eager_unet(compiled, tmp_path):
    eager = load_pipeline("tiny", lora_dir=_lora_folder(tmp_path, compiled.unet))
    compiled.loras = eager.loras
    picture = photo("chelsea", (64, 64))
    for fields in ({"deepcache_interval": 2}, {"loras": ("style:0.8",)}):
        before = graphs()
        got = compiled.generate(image=picture, **RUN, **fields)
        assert graphs() == before, fields  # nothing compiled (or recompiled) for a module that changes per call
        assert np.array_equal(pixels(got), pixels(eager.generate(image=picture, **RUN, **fields))), fields
    plain = pixels(eager.generate(image=picture, **RUN))
    assert np.abs(pixels(got) - plain).max() > 1  # the LoRA did act: the equality above is not vacuous


def test_cli_compile_option(inductor_cache, tmp_path):
    out, image = tmp_path / "out.png", tmp_path / "astronaut.png"
    photo("astronaut", (64, 64)).save(image)
    result = CliRunner().invoke(app, ["generate", "--model", "tiny", "--image", str(image), "--prompt", PROMPT,
                                      "--steps", "2", "--width", "64", "--height", "64", "--compile", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "torch.compile: the UNet's first call" in result.output
    assert any(inductor_cache.rglob("*"))  # the kernels went to the cache folder the environment names


def test_cli_inductor_cache_default(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert use_inductor_cache() == tmp_path / ".cache" / "depth2img" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache" / "depth2img" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_inductor_cache() == tmp_path / "mine"  # the user's choice wins


def test_compile_with_low_memory_says_what_it_costs():
    pipe = load_pipeline("tiny", compile=True, low_memory=True)  # nothing compiles until the first call
    assert [n for n in pipe.compiled_unet.take_notes() if n.startswith("--compile with --low-memory")]
    assert load_pipeline("tiny", compile=True).compiled_unet.take_notes() == []
