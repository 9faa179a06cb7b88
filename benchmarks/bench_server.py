"""Throughput and latency of ``depth2img serve`` against the tiny model, and its overhead per job.

Starts the server in-process (uvicorn on a free 127.0.0.1 port, its own outputs folder in a temp dir),
sends ``--jobs`` native API jobs from ``--clients`` threads (each submits, then follows its job's
server-sent events to the end, then downloads the PNG), and prints throughput and p50/p95 latency
(submit -> PNG in hand). Then it runs the same requests with ``Pipeline.generate`` in-process, one after
another, and prints the server's wall time per job divided by the direct time per job (the overhead
ratio: HTTP, base64, validation, SQLite, PNG writing and reading). Timings are printed, never asserted.

    .venv/bin/python benchmarks/bench_server.py [--clients 4] [--jobs 24] [--size 64] [--steps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo(size: int) -> bytes:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    array = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8) * (255 // size)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import httpx
    import uvicorn

    from depth2img import load_pipeline
    from depth2img.server.app import create_app
    from depth2img.server.settings import Settings

    image = photo(args.size)
    body = {"image": base64.b64encode(image).decode(), "prompt": "a room", "steps": args.steps, "strength": 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(outputs=Path(tmp), model="tiny", queue_size=max(16, args.jobs)))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with httpx.Client(base_url=url, timeout=600) as c:  # warm-up: loads the model, first-call costs
                job = c.post("/api/v1/jobs", json={**body, "seed": 0}).json()
                with c.stream("GET", f"/api/v1/jobs/{job['id']}/events") as r:
                    r.read()

            def one(seed: int) -> float:
                t0 = time.perf_counter()
                with httpx.Client(base_url=url, timeout=600) as c:
                    job = c.post("/api/v1/jobs", json={**body, "seed": seed}).json()
                    with c.stream("GET", f"/api/v1/jobs/{job['id']}/events") as r:
                        r.read()
                    assert c.get(f"/api/v1/jobs/{job['id']}/images/0").status_code == 200
                return time.perf_counter() - t0

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                latencies = list(pool.map(one, range(1, args.jobs + 1)))
            wall = time.perf_counter() - t0
        finally:
            server.should_exit = True
            thread.join(60)

    pipe = load_pipeline("tiny")
    pipe.generate(image=image, prompt="a room", steps=args.steps, strength=1.0, seed=0)  # warm-up
    t0 = time.perf_counter()
    for seed in range(1, args.jobs + 1):
        pipe.generate(image=image, prompt="a room", steps=args.steps, strength=1.0, seed=seed)
    direct = (time.perf_counter() - t0) / args.jobs

    print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, {args.jobs} jobs from {args.clients} clients")
    print(f"throughput        {args.jobs / wall:8.2f} jobs/s   ({wall:.1f} s wall)")
    print(f"latency p50 / p95 {statistics.median(latencies):8.3f} / {percentile(latencies, 95):.3f} s")
    print(f"server per job    {wall / args.jobs:8.3f} s")
    print(f"direct per job    {direct:8.3f} s   (Pipeline.generate in-process)")
    print(f"overhead ratio    {wall / args.jobs / direct:8.2f}x")


if __name__ == "__main__":
    main()
