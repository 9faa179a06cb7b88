"""The native API over real HTTP (uvicorn on a free loopback port, the tiny model)."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_server_util import ServerThread, b64, photo_png, settings, wait_state, wait_step

PHOTO = photo_png((64, 64))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(settings(tmp_path_factory.mktemp("native"))) as s:  # loads its own tiny model
        yield s


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
        assert c.get("/api/v1/health").status_code == 200  # every test leaves the server healthy


def submit(client, **fields):
    body = {"image": b64(PHOTO), "prompt": "a house", "steps": 4, "seed": 11, **fields}
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def events(client, job_id, **params):
    out = []
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", params=params) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


def test_result_equals_in_process_generate_bit_for_bit(client, tiny_pipe):
    job = submit(client, strength=0.75, batch_size=2, negative_prompt="fog", scheduler="euler_a")
    assert job["seeds"] == [11, 12]
    stream = events(client, job["id"], preview=1)
    names = [n for n, _ in stream]
    assert names[-1] == "done" and "progress" in names and "preview" in names
    steps = [d["step"] for n, d in stream if n == "progress"]
    assert steps == sorted(steps) and steps[-1] == 3  # int(4 * 0.75) steps, each reported
    expected = tiny_pipe.generate(image=PHOTO, prompt="a house", steps=4, seed=11, strength=0.75, batch_size=2,
                                  negative_prompt="fog", scheduler="euler_a")
    done = stream[-1][1]
    assert done["infotexts"] == expected.infotexts
    for i, want in enumerate(expected.images):
        r = client.get(f"/api/v1/jobs/{job['id']}/images/{i}")
        assert r.headers["content-type"] == "image/png"
        got = Image.open(io.BytesIO(r.content))
        assert got.info["parameters"] == expected.infotexts[i]
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
    depth = Image.open(io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/depth").content))
    assert depth.mode.startswith("I;16") or depth.mode == "I"
    assert np.array_equal(np.asarray(depth), np.asarray(expected.depth_map.to_image("raw", bits=16)))


def test_multipart_upload_equals_json(client):
    a = submit(client, steps=2, strength=1.0)
    r = client.post("/api/v1/jobs", data={"request": json.dumps({"prompt": "a house", "steps": 2, "seed": 11,
                                                                   "strength": 1.0})},
                    files={"image": ("photo.png", PHOTO, "image/png")})
    assert r.status_code == 202, r.text
    images = []
    for job_id in (a["id"], r.json()["id"]):
        assert wait_state(client, job_id)["state"] == "done"
        images.append(client.get(f"/api/v1/jobs/{job_id}/images/0").content)
    assert images[0] == images[1]


def test_depth_job_equals_estimate_depth(client, tiny_pipe):
    r = client.post("/api/v1/depth", json={"image": b64(PHOTO)})
    assert r.status_code == 202, r.text
    job = wait_state(client, r.json()["id"])
    assert job["state"] == "done", job
    got = Image.open(io.BytesIO(client.get(job["depth"]).content))
    want = tiny_pipe.estimate_depth(PHOTO).to_image("raw", bits=16)
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_cancel_running_job_stops_within_a_step(client):
    job = submit(client, steps=400, strength=1.0)
    wait_step(client, job["id"], 2)
    t0 = time.time()
    r = client.delete(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert time.time() - t0 < 5
    final = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert final["state"] == "cancelled" and final["images"] == []
    assert client.get(f"/api/v1/jobs/{job['id']}/images/0").status_code == 409


def test_cancel_queued_job_and_queue_full_429(client, server):
    server.tweak(queue_size=2)
    try:
        running = submit(client, steps=400, strength=1.0)
        wait_step(client, running["id"], 1)
        queued = [submit(client), submit(client)]
        r = client.post("/api/v1/jobs", json={"image": b64(PHOTO), "steps": 2})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert "queue is full" in r.json()["detail"]
        assert client.get(f"/api/v1/jobs/{queued[1]['id']}").json()["position"] == 1
        for job in (*queued, running):
            assert client.delete(f"/api/v1/jobs/{job['id']}").json()["state"] == "cancelled"
    finally:
        server.tweak(queue_size=16)


def test_timeout_fails_the_job_and_the_next_one_runs(client, server):
    server.tweak(job_timeout=0.5)
    try:
        job = submit(client, steps=400, strength=1.0)
        final = wait_state(client, job["id"])
        assert final["state"] == "failed" and "timed out" in final["error"]
    finally:
        server.tweak(job_timeout=600.0)
    assert wait_state(client, submit(client, steps=2)["id"])["state"] == "done"


@pytest.mark.parametrize("error, message", [
    (RuntimeError("boom in /home/secret/model.py"), "internal error (RuntimeError)"),
    (MemoryError(), "out of memory"),
])
def test_exception_in_a_job_fails_that_job_only(client, server, monkeypatch, error, message):
    pipe = server.services.registry.get("tiny")
    original = pipe.run

    def broken(plan, callback=None):
        monkeypatch.setattr(pipe, "run", original)  # only this one job breaks
        raise error

    monkeypatch.setattr(pipe, "run", broken)
    failed = wait_state(client, submit(client)["id"])
    assert failed["state"] == "failed" and failed["error"].startswith(message), failed
    assert "/home" not in failed["error"] and "Traceback" not in failed["error"]
    assert wait_state(client, submit(client, steps=2)["id"])["state"] == "done"


def _png_header(width, height) -> bytes:
    """A small PNG whose header claims width x height (a few bytes of pixel data follow)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("body, status, words", [
    ('{"image": "not base64!!", "steps": 2}', 422, "not valid base64"),
    ('{"image": "', 422, "not valid JSON"),
    ('[1, 2]', 422, "JSON object"),
    (json.dumps({"image": b64(PHOTO[:200])}), 422, "truncated or corrupt"),
    (json.dumps({"image": ""}), 422, "empty"),
    (json.dumps({"image": b64(_png_header(60000, 60000))}), 422, "too large"),
    (json.dumps({"image": b64(_png_header(5000, 5000))}), 422, "this server's limit"),  # under images.py's own cap
    (json.dumps({"image": b64(_png_header(0, 0))}), 422, "image"),
    (json.dumps({"image": b64(PHOTO), "steps": 0}), 422, "steps"),
    (json.dumps({"image": b64(PHOTO), "scheduler": "nope"}), 422, "scheduler"),
    (json.dumps({"image": b64(PHOTO), "bogus": 1}), 422, "bogus"),
    (json.dumps({"image": b64(PHOTO), "width": 60}), 422, "width"),
    (json.dumps({"image": b64(PHOTO), "mask_blur": 8}), 422, "mask"),
    (json.dumps({"image": "http://169.254.169.254/latest"}), 422, "does not fetch URLs"),
    (json.dumps({"image": b64(PHOTO), "model": "../../etc/passwd"}), 422, "unknown model"),
    (json.dumps({"image": b64(PHOTO), "depth_model": "/etc"}), 422, "unknown model"),
])
def test_bad_input_is_a_clear_4xx(client, body, status, words):
    r = client.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "Traceback" not in detail


def test_body_over_the_limit_is_refused_before_it_is_read(server, client):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200000000\r\n\r\n{\"image\": \"")
        reply = b""
        while chunk := sock.recv(4096):  # headers and body may arrive in separate segments
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "max-body-mb" in reply
    chunks = (b"x" * 1024 * 1024 for _ in range(80))  # chunked, no Content-Length: counted as it streams
    r = client.post("/api/v1/jobs", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_jobs_list_models_schedulers_health(client):
    submit(client, steps=2)
    page = client.get("/api/v1/jobs", params={"limit": 2}).json()
    assert page["total"] >= 2 and len(page["jobs"]) == 2 and page["limit"] == 2
    assert page["jobs"][0]["created"] >= page["jobs"][1]["created"]  # newest first
    ids = {m["id"]: m for m in client.get("/api/v1/models").json()}
    assert {"tiny", "tiny-img2img"} <= set(ids) and ids["tiny"]["default"]
    assert {s["name"] for s in client.get("/api/v1/schedulers").json()} >= {"pndm", "euler_a", "dpmpp_2m_karras"}
    assert client.post("/api/v1/models/refresh").status_code == 200
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert client.get("/api/v1/jobs/" + "0" * 32).status_code == 404
