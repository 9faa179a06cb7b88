"""A real crash: `depth2img video` and `depth2img batch` run as processes, are SIGKILLed once some results
exist, and are run again with --resume. Only what was not finished is rendered again, and the results
are byte for byte those of a run that was never interrupted (a separate, uninterrupted process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_video import pan_clip, save_frames

COUNT = 6
COMMON = ["--model", "tiny", "--prompt", "a painting", "--steps", "4", "--strength", "1", "--seed", "5"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "depth2img.cli", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)  # PYTHONPATH kept: the package under test, not an installed copy
    env.update(OMP_NUM_THREADS="1", DEPTH2IMG_CACHE="")
    return env


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command(*args), env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def kill_when(args: list[str], ready) -> None:
    """Start the command, SIGKILL it as soon as ``ready()`` (polled), and check that it was still running."""
    process = subprocess.Popen(command(*args), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not ready():
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()!r}"
            assert time.monotonic() < deadline, "no result appeared"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def finished(manifest: Path, outputs) -> set[str]:
    """Items whose record was appended and whose output exists: what a resume may keep."""
    items = set()
    for line in manifest.read_text().splitlines() if manifest.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("status", "ok") == "ok" and outputs(record["item"]).exists():
            items.add(record["item"])
    return items


@pytest.mark.slow
def test_video_killed_mid_clip_resumes_byte_identical(tmp_path):
    source = tmp_path / "clip"
    save_frames(pan_clip(COUNT), source)
    args = ["video", *COMMON, "--input", str(source), "--temporal", "fusion"]
    run(args + ["--output", str(tmp_path / "full.mp4")])

    out = tmp_path / "part.frames" / "out"

    def done() -> set[str]:
        return finished(tmp_path / "part.frames" / "manifest.jsonl", lambda item: out / f"{int(item):06d}.png")

    kill_when(args + ["--output", str(tmp_path / "part.mp4")], lambda: len(done()) >= 2)
    kept = done()
    assert 2 <= len(kept) < COUNT and not (tmp_path / "part.mp4").exists()
    resumed = run(args + ["--output", str(tmp_path / "part.mp4"), "--resume"])
    counts = re.search(r"(\d+) rendered, (\d+) resumed", resumed.stdout + resumed.stderr)
    assert counts and (int(counts[1]), int(counts[2])) == (COUNT - len(kept), len(kept)), resumed.stdout
    for t in range(COUNT):
        name = f"{t:06d}.png"
        assert (out / name).read_bytes() == (tmp_path / "full.frames" / "out" / name).read_bytes(), name
    assert (tmp_path / "part.mp4").read_bytes() == (tmp_path / "full.mp4").read_bytes()


@pytest.mark.slow
def test_batch_killed_midway_resumes_byte_identical(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for t, frame in enumerate(pan_clip(COUNT, step=(7, 5))):
        Image.fromarray(np.ascontiguousarray(frame)).save(photos / f"p{t}.png")
    run(["batch", *COMMON, "--input", str(photos), "--output", str(tmp_path / "full")])

    part = tmp_path / "part"
    kill_when(["batch", *COMMON, "--input", str(photos), "--output", str(part)],
              lambda: len(finished(part / "manifest.jsonl", lambda item: part / item)) >= 2)
    kept = finished(part / "manifest.jsonl", lambda item: part / item)
    assert 2 <= len(kept) < COUNT
    resumed = run(["batch", *COMMON, "--input", str(photos), "--output", str(part), "--resume"])
    assert f"batch: {COUNT - len(kept)} succeeded, 0 failed, {len(kept)} skipped" in resumed.stdout + resumed.stderr
    for t in range(COUNT):
        assert (part / f"p{t}.png").read_bytes() == (tmp_path / "full" / f"p{t}.png").read_bytes(), t
