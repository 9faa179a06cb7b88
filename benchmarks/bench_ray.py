"""--executor ray against --executor local: throughput with 1 and 2 Ray workers, and the executor's
overhead per item (ratios measured side by side in one run; printed, never asserted; not a test).

The same folder of small photos runs through ``run_batch`` with the local executor (this process,
torch limited to one thread like each actor) and with a Ray pool of 1 and then 2 actors on a local
``ray.init(num_cpus=2)``. The pool is started and its model loaded *before* the clock starts (that
one-off cost is printed separately), so the per-item numbers compare steady states:
overhead per item = (Ray 1 worker s/item) / (local s/item). The machine may be shared: every round
runs local and the pool back to back, and the medians of the per-round ratios are printed.

    .venv/bin/python benchmarks/bench_ray.py [--model tiny] [--items 16] [--size 64] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="d2i-bench-ray-"))
    home, raytmp = work / "home", Path(tempfile.mkdtemp(prefix="d2ibr"))  # short: Ray's socket paths
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    os.environ.update(HOME=str(home), RAY_TMPDIR=str(raytmp), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                      RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1",
                      PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])))
    (raytmp / "ray").mkdir()

    import numpy as np
    import ray
    import torch
    from PIL import Image
    from skimage import data

    from depth2img import GenerationRequest, load_pipeline
    from depth2img.batch.folder import list_inputs, run_batch
    from depth2img.executors.base import ModelSpec
    from depth2img.executors.local import LocalExecutor
    from depth2img.executors.ray import RayExecutor

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((4 * args.size, 4 * args.size)))
    folder = work / "in"
    folder.mkdir()
    for i in range(args.items):
        y, x = (i * 37) % (3 * args.size), (i * 53) % (3 * args.size)
        Image.fromarray(photo[y : y + args.size, x : x + args.size]).save(folder / f"img{i:03d}.png")
    inputs = list_inputs(folder)
    request = GenerationRequest(image="(each input)", prompt="an oil painting", steps=args.steps, strength=1.0, seed=1)

    def timed(executor, name: str) -> float:
        out = work / name
        start = time.perf_counter()
        summary = run_batch(None, request, inputs, out, executor=executor)
        elapsed = time.perf_counter() - start
        assert summary.ok == args.items, summary.failures
        shutil.rmtree(out)
        return elapsed

    import statistics

    torch.set_num_threads(1)  # as each actor (one CPU each); this script's own process
    pipe = load_pipeline(args.model)
    local = LocalExecutor(lambda: pipe)
    timed(local, "warm")

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    init_s = time.perf_counter() - start
    rows = {}
    try:
        for workers in (1, 2):
            pool = RayExecutor(ModelSpec(args.model), workers=workers)
            start = time.perf_counter()
            ray.get([actor.ready.remote() for actor in pool.start()])
            ready_s = time.perf_counter() - start
            timed(pool, f"warm{workers}")
            local_times, pool_times = [], []
            for r in range(args.rounds):  # side by side: local, then the pool, under the same load
                local_times.append(timed(local, f"local{workers}-{r}"))
                pool_times.append(timed(pool, f"ray{workers}-{r}"))
            ratios = [p / l for p, l in zip(pool_times, local_times)]
            rows[workers] = (ready_s, statistics.median(local_times), statistics.median(pool_times), statistics.median(ratios))
            pool.close()
    finally:
        ray.shutdown()
        shutil.rmtree(raytmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    n = args.items
    print(f"{n} items of {args.size}x{args.size}, {args.steps} steps, model {args.model}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; one torch thread per worker; "
          f"medians of {args.rounds} rounds")
    print(f"ray.init(num_cpus=2): {init_s:.1f} s (once per run of the CLI)")
    print(f"{'executor':<18}{'s/item':>10}{'items/s':>10}{'local s/item (same rounds)':>28}{'ray/local':>11}{'pool ready s':>14}")
    for workers, (ready_s, local_s, pool_s, ratio) in rows.items():
        print(f"{f'ray, {workers} worker(s)':<18}{pool_s / n:>10.3f}{n / pool_s:>10.2f}{local_s / n:>28.3f}{ratio:>11.2f}{ready_s:>14.1f}")
    speedup = rows[1][3] / rows[2][3]
    print(f"throughput 2 vs 1 worker (each normalised by its side-by-side local runs): {speedup:.2f}x")
    print(f"executor overhead per item (ray 1 worker / local, median per-round ratio): {rows[1][3]:.2f}x "
          f"= {(rows[1][2] - rows[1][1]) / n * 1000:+.0f} ms/item")


if __name__ == "__main__":
    main()
