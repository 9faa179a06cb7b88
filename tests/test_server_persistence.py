"""Jobs survive the process: SIGKILL with one job running and some queued, restart on the same
--outputs; and SIGTERM finishes the running job before exiting. Real subprocesses, loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_server_util import b64, photo_png, wait_state, wait_step

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def start(tmp_path):
    procs: list[subprocess.Popen] = []

    def run(outputs: Path):
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "depth2img.server", "--port", str(port), "--outputs",
                                 str(outputs), "--model", "tiny"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"server-{port}.log", "wb"))
        procs.append(proc)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.time() + 90
        while True:
            try:
                if client.get("/api/v1/health").status_code == 200:
                    return proc, client
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / f"server-{port}.log").read_text()[-2000:]
            time.sleep(0.2)

    yield run
    for proc in procs:  # nothing outlives the test
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def submit(client, **fields):
    r = client.post("/api/v1/jobs", json={"image": b64(photo_png()), "prompt": "p", "steps": 2, "seed": 1, **fields})
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.mark.slow
def test_sigkill_then_restart_loses_nothing(start, tmp_path):
    outputs = tmp_path / "out"
    proc, client = start(outputs)
    finished = submit(client, seed=1)
    assert wait_state(client, finished)["state"] == "done"
    before = client.get(f"/api/v1/jobs/{finished}/images/0").content
    running = submit(client, steps=1000, strength=1.0)
    queued = [submit(client, seed=s) for s in (2, 3)]
    wait_step(client, running, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    client.close()

    proc, client = start(outputs)
    assert client.get(f"/api/v1/jobs/{finished}/images/0").content == before
    failed = client.get(f"/api/v1/jobs/{running}").json()
    assert failed["state"] == "failed" and "interrupted by restart" in failed["error"]
    for job_id, seed in zip(queued, (2, 3)):
        job = wait_state(client, job_id)
        assert job["state"] == "done" and job["seeds"] == [seed]
    assert not list(outputs.rglob("*.tmp*"))  # atomic writes left no temporaries
    client.close()


@pytest.mark.slow
def test_sigterm_finishes_the_running_job_and_exits(start, tmp_path):
    proc, client = start(tmp_path / "out")
    job = submit(client, steps=12, strength=1.0)
    wait_step(client, job, 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
    client.close()
    proc, client = start(tmp_path / "out")
    final = client.get(f"/api/v1/jobs/{job}").json()
    assert final["state"] == "done", final
    client.close()
