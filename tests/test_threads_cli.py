"""The thread count is the CLI's option (`--threads`), a process-wide torch setting the library never touches."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from depth2img.cli import app
from depth2img.pipeline import Pipeline

from .conftest import photo


def test_threads_option_sets_torchs_thread_count_for_the_run(tmp_path, monkeypatch):
    image = tmp_path / "cat.png"
    photo("chelsea", (64, 48)).save(image)
    seen = []
    generate = Pipeline.generate

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())  # what torch itself reports while generating
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "generate", spy)
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1  # differs from the current setting, so a no-op would show
    try:
        result = CliRunner().invoke(app, ["generate", "--model", "tiny", "--image", str(image), "--prompt", "x",
                                          "--steps", "2", "--seed", "1", "--threads", str(wanted), "--out", str(tmp_path / "o.png")])
    finally:
        torch.set_num_threads(before)  # the CLI owns its process; this test process must get its setting back
    assert result.exit_code == 0, result.output
    assert seen == [wanted]
    bad = CliRunner().invoke(app, ["generate", "--model", "tiny", "--image", str(image), "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output


def test_library_never_sets_threads(monkeypatch):
    from depth2img import load_pipeline

    def refuse(n):
        raise AssertionError("the library must not change torch's process-wide thread count")

    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", refuse)
    pipe = load_pipeline("tiny")
    pipe.generate(image=photo("chelsea", (64, 48)), prompt="x", steps=2, seed=1)
    assert torch.get_num_threads() == before
