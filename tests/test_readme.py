"""The README's promises: CI runs its test command verbatim, and its main command works."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n((?:\(command -v chromium.*\) && )?python3 -m venv .*)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    main_job, tests = readme_commands()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [tests]
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests  # never an unpinned (CUDA) torch


def test_readme_main_job_runs(tmp_path, monkeypatch):
    """The part of the main command after installation, run through the real CLI."""
    from depth2img.cli import app

    main_job = readme_commands()[0]
    args = shlex.split(main_job.split("&& .venv/bin/depth2img ", 1)[1])
    args = [str(tmp_path / a) if a.startswith("out/") else a for a in args]
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "astronaut.png").is_file() and (tmp_path / "out" / "astronaut-depth.png").is_file()
