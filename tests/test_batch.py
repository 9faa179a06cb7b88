"""depth2img batch: names follow inputs, the manifest, resume, per-item seeds, bad files, partners."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depth2img.batch.folder import item_seed
from depth2img.cli import app
from depth2img.infotext import parse_infotext, read_infotext

from .conftest import photo

COMMON = ("--model", "tiny", "--prompt", "a castle", "--steps", "2", "--strength", "1", "--seed", "100")
NAMES = ("astronaut", "chelsea", "coffee", "motorcycle")


def run(*args: str):
    return CliRunner().invoke(app, list(args))


LOADS: list[str] = []


@pytest.fixture(autouse=True)
def shared_model(tiny_pipe, monkeypatch):
    """The CLI's loader hands out the session's tiny model (loading it per run costs seconds); each
    load is counted, so a test can check the model loads once per batch."""
    LOADS.clear()
    monkeypatch.setattr("depth2img.cli.batch.load", lambda model, *a, **k: LOADS.append(model) or tiny_pipe)


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in NAMES:
        photo(name, (48, 32)).save(src / f"{name}.png")
    return src


def outputs(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_names_follow_inputs_and_seeds_are_keyed_by_the_item(folder, tmp_path):
    out = tmp_path / "out"
    result = run("batch", *COMMON, "--input", str(folder), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(outputs(out)) == [f"{n}.png" for n in NAMES]
    assert "4 succeeded, 0 failed, 0 skipped" in result.output
    assert LOADS == ["tiny"]  # the model loads once for the whole batch
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 4
    import hashlib

    for r in records:  # independent: the documented rule, and the file's own sha256
        k = int(hashlib.sha256(r["item"].encode()).hexdigest()[:8], 16) % 2**20
        assert r["seed"] == 100 + k
        assert parse_infotext(read_infotext(out / (r["item"].removesuffix(".png") + ".png")))["Seed"] == str(100 + k)
        assert r["input_sha256"] == hashlib.sha256((folder / r["item"]).read_bytes()).hexdigest()
    # an item alone (a reordered / reduced folder) gets the same seed and the same picture
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "coffee.png", alone / "coffee.png")
    run("batch", *COMMON, "--input", str(alone / "*.png"), "--output", str(tmp_path / "out2"))
    assert (tmp_path / "out2" / "coffee.png").read_bytes() == (out / "coffee.png").read_bytes()


def test_same_seed_gives_every_item_the_seed():
    assert {item_seed(7, n, same_seed=True) for n in NAMES} == {7}
    assert len({item_seed(7, n) for n in NAMES}) == 4


def test_resume_after_interruption_redoes_only_missing_items_byte_identical(folder, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert run("batch", *COMMON, "--input", str(folder), "--output", str(full)).exit_code == 0

    # an interrupted run: the process dies while generating the third item
    from depth2img.pipeline import Pipeline

    original, calls = Pipeline.generate, []

    def dying(self, request=None, /, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, request, **kw)

    part = tmp_path / "part"
    monkeypatch.setattr(Pipeline, "generate", dying)
    assert run("batch", *COMMON, "--input", str(folder), "--output", str(part)).exit_code == 130
    monkeypatch.setattr(Pipeline, "generate", original)
    assert sorted(outputs(part)) == ["astronaut.png", "chelsea.png"]

    done = []
    monkeypatch.setattr(Pipeline, "generate", lambda self, r=None, /, **kw: done.append(r.seed) or original(self, r, **kw))
    result = run("batch", *COMMON, "--input", str(folder), "--output", str(part), "--resume")
    assert result.exit_code == 0, result.output
    assert "2 succeeded, 0 failed, 2 skipped" in result.output
    assert len(done) == 2
    LOADS.clear()
    result = run("batch", *COMMON, "--input", str(folder), "--output", str(part), "--resume")
    assert "0 succeeded, 0 failed, 4 skipped" in result.output and LOADS == []  # nothing to do: no load
    assert outputs(part) == outputs(full)

    # changed settings: the manifest no longer matches, everything is redone
    result = run("batch", *COMMON[:-1], "101", "--input", str(folder), "--output", str(part), "--resume")
    assert "4 succeeded, 0 failed, 0 skipped" in result.output


def test_bad_files_are_reported_and_the_rest_finishes(folder, tmp_path):
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "chelsea.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not a picture")
    out = tmp_path / "out"
    result = run("batch", *COMMON, "--input", str(folder), "--output", str(out))
    assert result.exit_code == 1, result.output
    assert "4 succeeded, 3 failed, 0 skipped" in result.output
    assert sorted(outputs(out)) == [f"{n}.png" for n in NAMES]
    records = {json.loads(line)["item"]: json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert "empty (0 bytes)" in records["empty.png"]["error"]
    assert "truncated or corrupt" in records["broken.png"]["error"]
    assert "not a supported image" in records["notes.txt"]["error"]
    assert all(records[n]["status"] == "failed" for n in ("empty.png", "broken.png", "notes.txt"))


def test_depth_partners_by_name_and_a_missing_partner_is_a_per_item_error(folder, tmp_path):
    depths = tmp_path / "depths"
    depths.mkdir()
    ramp = np.tile(np.linspace(0, 65535, 48, dtype=np.uint16), (32, 1))
    for name in NAMES[:3]:
        Image.fromarray(ramp).save(depths / f"{name}.png")
    out = tmp_path / "out"
    result = run("batch", *COMMON, "--input", str(folder), "--output", str(out), "--depth-dir", str(depths))
    assert result.exit_code == 1
    assert "3 succeeded, 1 failed" in result.output
    assert "no depth map for 'motorcycle.png'" in result.output
    assert parse_infotext(read_infotext(out / "coffee.png"))["Depth"] == "own map"
