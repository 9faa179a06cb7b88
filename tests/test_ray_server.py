"""``depth2img serve --executor ray``: the API process keeps the store and A1111's semantics, 2 Ray actors
(a real local Ray, loopback, shut down in the finaliser) drain the one queue.

Independent references: every image is compared with the library's own ``generate()`` in this process
(another path than the server, its queue and the actors), within 1/255 (another process may use
another thread count, scale.md §1.7-8). Interrupt and a killed actor are judged by the job's state and
its reported steps, never by a timing.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import ray
from PIL import Image

from depth2img.executors.base import ExecutorOptions
from depth2img.infotext import parse_infotext
from tests.test_ray_executor import local_ray  # noqa: F401  # the module's local Ray (fixture)
from tests.test_server_util import ServerThread, b64, photo_png, settings, wait_state, wait_step

import pytest

PHOTO = photo_png((32, 32))
BODY = {"init_images": [b64(PHOTO)], "prompt": "a castle", "width": 32, "height": 32, "steps": 2,
        "denoising_strength": 1.0, "cfg_scale": 7.0, "sampler_name": "Euler a"}


def expected(tiny_pipe, seed: int, steps: int = 2) -> np.ndarray:
    """The same request through the library, in this process (scheduler, guidance, strength as A1111 maps them)."""
    image = Image.open(io.BytesIO(PHOTO))
    result = tiny_pipe.generate(image=image, prompt="a castle", seed=seed, guidance_scale=7.0, strength=1.0,
                                width=32, height=32, steps=steps, scheduler="euler_a")
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def close(got: Image.Image, want: np.ndarray) -> bool:
    return int(np.abs(np.asarray(got.convert("RGB"), dtype=np.int16) - want).max()) <= 1


STYLES = "name,prompt,negative_prompt\nmarble,\"{prompt}, carved in marble\",blurry\n"


@pytest.fixture(scope="module")
def server(local_ray, tmp_path_factory):  # noqa: F811
    options = ExecutorOptions("ray", workers=2)
    root = tmp_path_factory.mktemp("rayserve")
    (root / "styles.csv").write_text(STYLES, encoding="utf-8")
    with ServerThread(settings(root, queue_size=32, executor=options, styles_file=root / "styles.csv")) as s:
        yield s
    assert not s.services.worker.actors, "the server left its actors running"


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c


def test_20_concurrent_jobs_finish_once_on_two_actors_with_the_librarys_pixels(server, tiny_pipe):
    def one(seed: int) -> tuple[int, Image.Image]:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            r = c.post("/sdapi/v1/img2img", json={**BODY, "seed": seed})
            assert r.status_code == 200, r.text
            images = r.json()["images"]
            assert len(images) == 1
            return seed, Image.open(io.BytesIO(base64.b64decode(images[0])))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(300, 320)))
    for seed, image in results:
        assert parse_infotext(image.info["parameters"])["Seed"] == str(seed)
        assert close(image, expected(tiny_pipe, seed)), seed
    jobs, total = server.services.store.list(limit=100)
    assert total == 20 and len({j.id for j in jobs}) == 20
    assert sorted(j.seeds[0] for j in jobs) == list(range(300, 320))
    assert all(j.state == "done" and j.n_images == 1 for j in jobs)
    runs = sorted((j.started, j.finished) for j in jobs)
    assert any(b[0] < a[1] for a, b in zip(runs, runs[1:])), "no two jobs ran at once: one actor did all the work"


def test_interrupt_stops_the_remote_job_before_its_last_step(server, http):
    out: dict = {}
    caller = threading.Thread(target=lambda: out.setdefault("r", http.post(
        "/sdapi/v1/img2img", json={**BODY, "seed": 7, "steps": 400})))
    caller.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            progress = http.get("/sdapi/v1/progress").json()
            if progress["state"]["sampling_step"] >= 2:
                break
            time.sleep(0.05)
        assert progress["state"]["sampling_steps"] == 400 and 0 < progress["progress"] < 1
        job_id = progress["state"]["job"].removeprefix("task(").removesuffix(")")
        assert http.post("/sdapi/v1/interrupt").json() == {}
    finally:
        caller.join(120)
    body = out["r"].json()
    assert body["images"] == [] and json.loads(body["info"])["interrupted"] is True  # A1111: info is a JSON string
    job = server.services.store.get(job_id)
    assert job.state == "cancelled" and job.error == "interrupted"
    steps, total = server.services.worker.reported[job_id]  # what the actor reported when it stopped
    assert total == 400 and 2 <= steps < 400


def test_a_killed_actor_gets_its_job_retried_on_the_other(server, http, tiny_pipe):
    r = http.post("/api/v1/jobs", json={"image": b64(PHOTO), "prompt": "a castle", "width": 32, "height": 32,
                                        "steps": 100, "strength": 1.0, "guidance_scale": 7.0, "scheduler": "euler_a",
                                        "seed": 11})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_step(http, job_id, step=2, timeout=120)
    worker = server.services.worker
    ray.kill(worker.actors[worker.on_actor[job_id]], no_restart=False)  # the process dies; Ray restarts it
    job = wait_state(http, job_id, timeout=240, interval=0.2)
    assert job_id in worker.retried
    assert job["state"] == "done", job
    image = Image.open(io.BytesIO(http.get(job["images"][0]).content))
    assert close(image, expected(tiny_pipe, 11, steps=100))
    assert worker.reported[job_id] == (100, 100)


def test_a_style_means_the_same_on_a_ray_actor(http, tiny_pipe):
    """The server's --styles-file reaches the actors: the styled prompt (styles.csv's {prompt} rule, written out
    here) through the library equals the remote job's picture."""
    r = http.post("/sdapi/v1/img2img", json={**BODY, "seed": 41, "styles": ["marble"]})
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    info = parse_infotext(image.info["parameters"])
    assert info["Prompt"] == "a castle, carved in marble" and info["Negative prompt"] == "blurry"
    result = tiny_pipe.generate(image=Image.open(io.BytesIO(PHOTO)), prompt="a castle, carved in marble",
                                negative_prompt="blurry", seed=41, guidance_scale=7.0, strength=1.0, width=32, height=32,
                                steps=2, scheduler="euler_a")
    assert close(image, np.asarray(result.images[0].convert("RGB"), dtype=np.int16))
