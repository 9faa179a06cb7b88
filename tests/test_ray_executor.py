"""--executor ray against the local executor on one machine (a real local Ray, ray.init(num_cpus=2)).

The contract: the same folder gives the same files with the same pixels (within 1/255: another
process may use another thread count, scale.md §1.7-8) and the same manifest records (the timestamps
aside); a resumed run skips exactly what the local executor skips. Ray is a plain import: CI installs
the `ray` extra, and a missing Ray must fail here, not skip.
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil

import numpy as np
import pytest
import ray
from PIL import Image
from typer.testing import CliRunner

from depth2img.cli import app
from depth2img.executors.base import ModelSpec
from depth2img.executors.ray import RayExecutor

from ._ray import OBJECT_STORE, make_folder, ray_environment, ray_processes

COMMON = ("--model", "tiny", "--prompt", "a castle", "--steps", "2", "--strength", "1", "--seed", "100")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for this module (starting one takes 5-15 s here), shut down in the finaliser."""
    root = tmp_path_factory.mktemp("ray")
    with ray_environment(root) as env:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE, log_to_driver=False,
                 _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": env["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
        try:
            yield root
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def pool(local_ray):
    """Two actors loading `--model tiny` themselves, shared by this module's runs (a pool lives across
    runs; loading torch + diffusers in an actor takes tens of seconds here)."""
    executor = RayExecutor(ModelSpec("tiny"), workers=2)
    executor.start()
    yield executor
    executor.close()


class Made(list):
    ran: list[str]


@pytest.fixture()
def cli_pool(pool, monkeypatch):
    """The CLI parses and checks its --executor options as always, then gets the shared pool."""
    import depth2img.executors.base as base

    made, ran = Made(), []

    class Shared:  # the CLI closes its executor after a run; the module's pool stays up
        def run(self, items):
            items = list(items)
            ran.extend(item.name for item in items)
            return pool.run(items)

        def close(self):
            pass

    real = base.make_executor
    monkeypatch.setattr(base, "make_executor", lambda options, load, spec: made.append((options, spec)) or (
        Shared() if options.executor == "ray" else real(options, load, spec)))
    made.ran = ran  # what went through the pool
    return made
    assert not ray_processes(Path(env["RAY_TMPDIR"])), "Ray processes outlived ray.shutdown()"


def records(out):
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["item"]: {k: v for k, v in r.items() if k != "time"} for r in lines}


def test_ray_and_local_give_the_same_files_pixels_and_manifest(cli_pool, tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setattr("depth2img.cli.batch.load", lambda *a, **k: tiny_pipe)
    folder = tmp_path / "in"
    names = make_folder(folder, 6)
    (folder / "broken.png").write_bytes((folder / "img000.png").read_bytes()[:200])  # a bad input is a bad input on both
    out = tmp_path / "out"
    local = CliRunner().invoke(app, ["batch", *COMMON, "--input", str(folder), "--output", str(out)])
    assert local.exit_code == 1 and "6 succeeded, 1 failed, 0 skipped" in local.output, local.output
    out.rename(tmp_path / "local")  # the same output path for both runs: the manifests name it
    distributed = CliRunner().invoke(app, ["batch", *COMMON, "--input", str(folder), "--output", str(out),
                                           "--executor", "ray", "--workers", "2"])
    assert distributed.exit_code == 1 and "6 succeeded, 1 failed, 0 skipped" in distributed.output, distributed.output
    assert cli_pool[-1][1] == ModelSpec("tiny", "cpu", "float32", None)  # what the actors load: the CLI's model

    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "local").iterdir()) == sorted(names + ["manifest.jsonl"])
    for name in names:
        a = np.asarray(Image.open(out / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "local" / name), dtype=int)
        assert np.abs(a - b).max() <= 1, name
        assert Image.open(out / name).info["parameters"] == Image.open(tmp_path / "local" / name).info["parameters"]
    assert records(out) == records(tmp_path / "local")

    # resume: ray skips exactly what local skips (the broken file is redone, and fails again)
    shutil.copy(folder / "img001.png", folder / "extra.png")
    resumed = CliRunner().invoke(app, ["batch", *COMMON, "--input", str(folder), "--output", str(out), "--resume",
                                       "--executor", "ray", "--workers", "2"])
    assert "1 succeeded, 1 failed, 6 skipped" in resumed.output, resumed.output


def test_max_failures_stops_the_run_and_leaves_the_rest_for_resume(cli_pool, tmp_path):
    folder = tmp_path / "in"
    make_folder(folder, 2)
    for i in range(3):
        (folder / f"bad{i}.png").write_bytes(b"")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", *COMMON, "--input", str(folder), "--output", str(out),
                                      "--executor", "ray", "--max-failures", "1"])
    assert result.exit_code == 1, result.output
    assert "stopped after 2 failures (--max-failures 1)" in result.output
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines].count("failed") == 2 and len(lines) < 5  # the rest is left for --resume


def test_video_frames_render_in_parallel_on_ray_with_the_local_pixels(cli_pool, tiny_pipe, tmp_path, monkeypatch):
    """--temporal fixed-noise: every frame is a work item (its depth map, clip depth range and seed from
    the driver's depth pass); the frames equal the local executor's within 1/255."""
    from .test_video import pan_clip, save_frames

    monkeypatch.setattr("depth2img.cli.video.load", lambda *a, **k: tiny_pipe)
    frames = save_frames(pan_clip(3), tmp_path / "frames")
    common = ["video", "--model", "tiny", "--input", str(frames[0].parent), "--prompt", "x", "--steps", "2",
              "--strength", "1", "--seed", "1", "--temporal", "fixed-noise"]
    local = CliRunner().invoke(app, [*common, "--output", str(tmp_path / "local.mp4")])
    assert local.exit_code == 0, local.output
    distributed = CliRunner().invoke(app, [*common, "--output", str(tmp_path / "ray.mp4"), "--executor", "ray"])
    assert distributed.exit_code == 0 and "3 rendered" in distributed.output, distributed.output
    assert cli_pool.ran == ["000000", "000001", "000002"]  # every frame went through the pool
    for t in range(3):
        a = np.asarray(Image.open(tmp_path / "ray.frames" / "out" / f"{t:06d}.png"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "local.frames" / "out" / f"{t:06d}.png"), dtype=int)
        assert np.abs(a - b).max() <= 1, t
