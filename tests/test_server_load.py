"""Many clients at once, and property-based fuzzing of the native OpenAPI schema."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import hypothesis
import pytest
import schemathesis
from PIL import Image

from depth2img.infotext import parse_infotext
from tests.test_server_util import ServerThread, b64, photo_png, settings, wait_state

PHOTO = b64(photo_png((32, 32)))


@pytest.mark.slow
def test_50_concurrent_jobs_finish_exactly_once_with_their_seeds(tmp_path, tiny_pipe):
    with ServerThread(settings(tmp_path, queue_size=64), preload=tiny_pipe) as server:
        def one(seed: int) -> tuple[int, dict]:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                r = c.post("/api/v1/jobs", json={"image": PHOTO, "steps": 2, "strength": 1.0, "seed": seed,
                                                 "guidance_scale": 1.0})
                assert r.status_code == 202, r.text
                job = wait_state(c, r.json()["id"], timeout=300, interval=0.5)
                png = Image.open(io.BytesIO(c.get(job["images"][0]).content))
                return seed, {**job, "png_seed": parse_infotext(png.info["parameters"])["Seed"]}

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(1000, 1050)))
        ids = [job["id"] for _, job in results]
        assert len(set(ids)) == 50
        for seed, job in results:
            assert job["state"] == "done" and job["seeds"] == [seed] and job["png_seed"] == str(seed)
        store = server.services.store
        jobs, total = store.list(limit=100)
        assert total == 50 and sorted(j.id for j in jobs) == sorted(ids)
        assert all(j.started is not None and j.finished >= j.started for j in jobs)
        runs = sorted((j.started, j.finished) for j in jobs)
        assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:]))  # one at a time: the worker is serial


def test_schemathesis_native_api_never_5xx(tmp_path):
    """Every /api/v1 operation, 8 valid and 8 invalid generated requests each (bounded, in CI): never a 5xx."""
    from depth2img.server.app import create_app

    app = create_app(settings(tmp_path, queue_size=4))  # the worker is not started: jobs stay queued, cheap
    schema = schemathesis.openapi.from_asgi("/openapi.json", app.fastapi).include(path_regex="^/api/v1/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in [(op, mode) for op in operations for mode in modes]:
        @hypothesis.given(case=operation.as_strategy(mode))
        @hypothesis.settings(max_examples=8, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def fuzz(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:  # an operation without inputs has no invalid variant
            assert mode == schemathesis.GenerationMode.NEGATIVE
