"""Ray on one machine for the tests: loopback only, its files in a temporary folder, nothing left running.

Settings from ../shared/reference/server_ui_ray_setup.md ("Ray on one machine"): HOME in a temporary
folder (Ray writes ~/.ray/auth_token there), RAY_TMPDIR with its ``ray`` subfolder (Cluster writes
ray_current_cluster there), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (keeps every node on 127.0.0.1), a
``ray_bootstrap_config.yaml`` with a local provider (no cloud metadata probe), no usage stats.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import photo

OBJECT_STORE = 100 * 2**20  # explicit: the default is 30 % of RAM (scale.md §1.7-2)


@contextmanager
def ray_environment(root: Path) -> Iterator[dict[str, str]]:
    """Set the environment Ray's processes inherit; restore it afterwards. Ray's own folder is a short
    one in /tmp (its socket paths must stay under 108 bytes, which pytest's tmp paths exceed); it is
    removed afterwards and named by ``values["RAY_TMPDIR"]``."""
    import shutil
    import tempfile

    home, tmp = root / "home", Path(tempfile.mkdtemp(prefix="d2iray"))
    (tmp / "ray").mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    values = {"HOME": str(home), "RAY_TMPDIR": str(tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
              "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
              "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ray_processes(tmp: Path) -> list[str]:
    """Processes still running from this Ray temp folder (there must be none after shutdown)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(tmp) in line and "ps -eo" not in line]


def make_folder(folder: Path, count: int, size: tuple[int, int] = (40, 32)) -> list[str]:
    """``count`` small photos (four scikit-image photos, shifted so every file differs)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [np.asarray(photo(name, size)) for name in ("astronaut", "chelsea", "coffee", "motorcycle")]
    names = []
    for i in range(count):
        picture = np.roll(sources[i % 4], 3 * (i // 4), axis=1)
        Image.fromarray(picture).save(folder / f"img{i:03d}.png")
        names.append(f"img{i:03d}.png")
    return names
