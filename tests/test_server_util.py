"""Helpers for the server tests: a real uvicorn server on a free loopback port, stopped by the fixture."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import socket
import threading
import time

import numpy as np
import uvicorn
from PIL import Image


class ServerThread:
    """uvicorn serving ``create_app(settings)`` in a thread, on a socket bound to 127.0.0.1:0."""

    def __init__(self, settings, preload=None):
        from depth2img.server.app import create_app

        self.app = create_app(settings)
        self.services = self.app.services
        if preload is not None:  # a pipeline already loaded: saves the model load in tests that do not compare
            self.services.registry._pipe, self.services.registry._key = preload, ("tiny", None, None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for job_id in self.services.store.queued_ids():
            self.services.worker.cancel(job_id)
        self.services.worker.interrupt("the test server stopped")
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "server thread did not stop"
        assert not self.services.worker.alive, "worker thread did not stop"

    def tweak(self, **changes):
        """Change settings of a running server (queue size, timeout...)."""
        settings = dataclasses.replace(self.services.settings, **changes)
        self.services.settings = self.services.worker.settings = settings


def settings(tmp_path, **changes):
    from depth2img.server.settings import Settings

    return Settings(outputs=tmp_path / "outputs", model="tiny", shutdown_grace=2.0, **changes)


def photo_png(size=(64, 64), seed=0) -> bytes:
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) * 127 / sum(size)], -1)
    array = np.clip(base + rng.randint(0, 40, base.shape), 0, 255).astype(np.uint8)
    return png_bytes(Image.fromarray(array))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wait_state(client, job_id, states=("done", "failed", "cancelled"), timeout=60.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(interval)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def wait_step(client, job_id, step=1, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] == "running" and job["step"] >= step:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.02)
    raise AssertionError("job did not reach the step")
