"""Load options (``--low-memory``, ``--compile``) reach every model load: ``serve``'s registry and its Ray
actors, ``batch`` and ``video`` (locally and through the workers' ModelSpec). Each is checked on the loaded
pipeline itself (a low-memory releaser, a compiled UNet wrapper); the compile happens at the first call, so
these loads stay cheap."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
from typer.testing import CliRunner

from depth2img import load_pipeline
from depth2img.cli import app
from depth2img.executors.base import ModelSpec
from depth2img.server.actor import JobActor
from depth2img.server.registry import Registry

from .conftest import photo

# flag, the load_pipeline keyword, and what a pipeline loaded with it has
OPTIONS = [
    ("--low-memory", "low_memory", lambda pipe: pipe.releaser is not None),
    ("--compile", "compile", lambda pipe: pipe.compiled_unet is not None),
]


@pytest.mark.parametrize("flag,keyword,applied", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_every_model_load_gets_the_option(flag, keyword, applied, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a --compile load may point it
    for command in ("generate", "serve", "batch", "video"):
        assert flag in CliRunner().invoke(app, [command, "--help"], terminal_width=200).output, command
    # serve: the flag reaches the settings, and the registry's loads use them
    seen = {}
    monkeypatch.setattr("depth2img.server.command.run", lambda settings, *a, **k: seen.setdefault("settings", settings))
    result = CliRunner().invoke(app, ["serve", flag, "--outputs", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert getattr(settings, keyword) is True
    assert applied(Registry(dataclasses.replace(settings, model="tiny")).get("tiny"))
    # a Ray actor of the server (ray itself stubbed: only the actor's load path is under test)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(
        get_runtime_context=lambda: types.SimpleNamespace(get_node_id=lambda: "node")))
    actor = JobActor("cpu", "float32", str(tmp_path / "cache"), None, (None, None, None),
                     settings.low_memory, settings.compile)
    assert applied(actor._pipeline(("tiny", None, None)))
    # batch and video: the local load and the workers' ModelSpec
    assert applied(ModelSpec("tiny", **{keyword: True}).load())
    assert not applied(ModelSpec("tiny").load())
    for command, module in (("batch", "depth2img.cli.batch"), ("video", "depth2img.cli.video")):
        loads = []
        monkeypatch.setattr(f"{module}.load", lambda *a, **k: loads.append(k) or load_pipeline("tiny"))
        (tmp_path / command).mkdir()
        photo("astronaut", (64, 64)).save(tmp_path / command / "a.png")
        target = str(tmp_path / "batch-out") if command == "batch" else str(tmp_path / "v.mp4")
        CliRunner().invoke(app, [command, "--model", "tiny", "--input", str(tmp_path / command), "--output", target,
                                 flag, "--steps", "2", "--prompt", "x"])
        assert loads and all(k.get(keyword) is True for k in loads), (command, loads)
