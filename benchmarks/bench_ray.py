"""--executor ray against --executor local: throughput with 1 and 2 Ray workers, and the executor's
overhead per item (ratios measured side by side in one run; printed, never asserted; not a test).

The same folder of small photos runs through ``run_batch`` with the local executor (this process,
torch limited to one thread like each actor) and with a Ray pool of 1 and then 2 actors on a local
``ray.init(num_cpus=2)``. The pool is started and its model loaded *before* the clock starts (that
one-off cost is printed separately), so the per-item numbers compare steady states:
overhead per item = (Ray 1 worker s/item) / (local s/item).

    .venv/bin/python benchmarks/bench_ray.py [--model tiny] [--items 16] [--size 64] [--steps 8]
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

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each actor (one CPU each)
    pipe = load_pipeline(args.model)
    local = LocalExecutor(lambda: pipe)
    timed(local, "warm")
    local_s = timed(local, "local")
    torch.set_num_threads(threads)

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    init_s = time.perf_counter() - start
    results = {}
    try:
        for workers in (1, 2):
            pool = RayExecutor(ModelSpec(args.model), workers=workers)
            start = time.perf_counter()
            ray.get([actor.ready.remote() for actor in pool.start()])
            ready_s = time.perf_counter() - start
            timed(pool, f"warm{workers}")
            results[workers] = (ready_s, timed(pool, f"ray{workers}"))
            pool.close()
    finally:
        ray.shutdown()
        shutil.rmtree(raytmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    n = args.items
    print(f"{n} items of {args.size}x{args.size}, {args.steps} steps, model {args.model}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; one torch thread per worker")
    print(f"ray.init(num_cpus=2): {init_s:.1f} s (once per run of the CLI)")
    print(f"{'executor':<18}{'s/item':>10}{'items/s':>10}{'vs local':>10}{'pool ready s':>14}")
    print(f"{'local':<18}{local_s / n:>10.3f}{n / local_s:>10.2f}{1.0:>10.2f}{'-':>14}")
    for workers, (ready_s, seconds) in results.items():
        print(f"{f'ray, {workers} worker(s)':<18}{seconds / n:>10.3f}{n / seconds:>10.2f}{(seconds / n) / (local_s / n):>10.2f}{ready_s:>14.1f}")
    one, two = results[1][1], results[2][1]
    print(f"speed-up 2 vs 1 worker: {one / two:.2f}x; executor overhead per item (ray 1 worker / local): "
          f"{one / local_s:.2f}x = {(one - local_s) / n * 1000:+.0f} ms/item")


if __name__ == "__main__":
    main()
