"""outputs.py: the one atomic writer, formats by extension, output checks before any model loads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depth2img import outputs
from depth2img.outputs import save_image as save_png

from .conftest import photo


@pytest.fixture()
def chelsea() -> Image.Image:
    return photo("chelsea")  # 451x300 RGB


def diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


# --- atomic writes --------------------------------------------------------------------------------

def test_save_png_writes_text_chunks_and_creates_dirs(tmp_path: Path, chelsea: Image.Image) -> None:
    dest = tmp_path / "new" / "dir" / "out.png"
    assert save_png(chelsea, dest, infotext="a cat ✓\nSteps: 20", extra_text={"Software": "depth2img"}) == dest
    with Image.open(dest) as im:
        assert im.info["parameters"] == "a cat ✓\nSteps: 20" and im.info["Software"] == "depth2img"
        assert diff(im.convert("RGB"), chelsea) == 0
    assert os.listdir(dest.parent) == ["out.png"]
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    assert dest.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777  # umask kept, not 0600


def test_save_png_failure_leaves_destination_untouched(tmp_path: Path, chelsea: Image.Image,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"old")
    with pytest.raises(OSError):  # PNG cannot hold mode F: the real encoder fails
        save_png(Image.new("F", (8, 8)), dest)
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_png(chelsea, dest)
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]


def test_atomic_output_keeps_suffix_for_np_save(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    with outputs.atomic_output(tmp_path / "depth.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".npy") and tmp.exists()
        np.save(tmp, arr)
    assert np.array_equal(np.load(tmp_path / "depth.npy"), arr) and os.listdir(tmp_path) == ["depth.npy"]
    with pytest.raises(KeyboardInterrupt), outputs.atomic_output(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["depth.npy"]
    assert outputs.atomic_write_bytes(tmp_path / "depth.npy", b"new").read_bytes() == b"new"


def test_sixteen_threads_writing_one_target_leave_one_complete_file(tmp_path: Path) -> None:
    """Writers that overlap in time (chunked writes with pauses, as a slow encoder would) never share a
    temporary file: the target ends up as one writer's complete bytes and no temporaries are left."""
    import time

    dest = tmp_path / "same.bin"
    payloads = [bytes([i]) * 64_000 for i in range(16)]
    barrier = threading.Barrier(16)

    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        barrier.wait()
        try:
            with outputs.atomic_output(dest) as tmp, open(tmp, "r+b") as handle:
                for start in range(0, len(data), 16_000):
                    handle.write(data[start:start + 16_000])
                    handle.flush()
                    time.sleep(0.002)
        except BaseException as error:  # a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []  # every writer succeeded
    assert os.listdir(tmp_path) == ["same.bin"]  # no temporaries left behind
    assert dest.read_bytes() in payloads  # one writer's complete bytes, never a mix


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP"), (".png", "PNG")])
def test_the_extension_names_the_format_and_the_infotext_is_where_a1111_reads_it(tmp_path, chelsea, suffix, fmt):
    from depth2img.infotext import read_infotext

    dest = save_png(chelsea, tmp_path / f"out{suffix}", infotext="a cat, ✓\nSteps: 20, Seed: 1")
    with Image.open(dest) as im:
        assert im.format == fmt
    assert read_infotext(dest) == "a cat, ✓\nSteps: 20, Seed: 1"


def test_jpeg_user_comment_is_what_piexif_writes():
    # piexif.helper.UserComment.dump(text, encoding="unicode"), as A1111 calls it: prefix + UTF-16BE.
    assert outputs.user_comment("ab✓") == b"UNICODE\x00" + "ab✓".encode("utf-16-be")
    assert outputs.user_comment("ab")[8:] == b"\x00a\x00b"


def test_unknown_extension_is_refused(tmp_path, chelsea):
    from depth2img.errors import OutputError

    with pytest.raises(OutputError, match="unknown image extension '.gif'"):
        save_png(chelsea, tmp_path / "x.gif")
    with pytest.raises(OutputError, match="unknown image extension"):
        save_png(chelsea, tmp_path / "noext")
    assert os.listdir(tmp_path) == []


def _check(tmp_path, *targets):
    from depth2img.errors import OutputError

    with pytest.raises(OutputError) as info:
        outputs.check_targets(targets)
    return str(info.value)


def test_check_targets_refuses_each_class_with_the_option_named(tmp_path):
    T = outputs.Target
    (tmp_path / "file.png").write_bytes(b"x")
    assert "--out '" in _check(tmp_path, T("--out", (tmp_path,))) and "is a folder" in _check(tmp_path, T("--out", (tmp_path,)))
    assert "--out is empty" in _check(tmp_path, T("--out", (Path(""),)))
    assert "is a file, not a folder" in _check(tmp_path, T("--out", (tmp_path / "file.png" / "x.png",)))
    assert "unknown extension '.txt'" in _check(tmp_path, T("--save-depth", (tmp_path / "d.txt",), (".png", ".npy")))
    msg = _check(tmp_path, T("--out", (tmp_path / "a.png",)), T("--save-depth", (tmp_path / "a.png",), (".png",)))
    assert msg.startswith("--save-depth") and "same path as --out" in msg
    batch = outputs.batch_paths(tmp_path / "o.png", 2)
    assert "same path as --out" in _check(tmp_path, T("--out", tuple(batch)), T("--save-depth", (tmp_path / "o-1.png",)))
    outputs.check_targets([T("--out", tuple(batch)), T("--save-depth", (tmp_path / "new" / "deep" / "d.npy",), (".npy",))])


def test_check_targets_refuses_an_unwritable_folder(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    real_access = os.access  # CI runs as root, who may write anywhere: ask as a normal user would
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    assert "no permission" in _check(tmp_path, outputs.Target("--out", (locked / "a.png",)))


def test_a_failed_write_falls_back_beside_the_target(tmp_path):
    dest = tmp_path / "out.png"
    calls = []

    def write(path: Path) -> None:
        calls.append(path)
        if path == dest:
            raise OSError(28, "No space left on device")
        path.write_bytes(b"picture")

    written, warning = outputs.save_or_fall_back(write, dest)
    assert written.parent == tmp_path and written != dest and written.read_bytes() == b"picture"
    assert warning is not None and "No space left on device" in warning and str(written) in warning
