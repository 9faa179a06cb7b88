"""The fast-mode knobs, each alone and bundled: speed-up over the exact path and drift from its image.

For every knob (depth2img/fast.py) and for ``fast=True``: speed-up = exact time ÷ knob time (medians of
repeats measured interleaved in one run, so machine load affects both alike) and drift of the image from
the exact one (max and mean |pixel difference| in 0..255, PSNR in dB). Random weights: the "small"
SD2-depth-shaped UNet of bench_vs_diffusers.py (4 levels, attention in 3, 64-dim heads), so the drift
says how far a knob moves the sampler, not how a real picture looks; timings include the tiny VAE/DPT.

    .venv/bin/python benchmarks/bench_fast.py --size 128 --steps 10 --repeats 2
    .venv/bin/python benchmarks/bench_fast.py --size 64 --steps 10 --model /tmp/d2i-perf/diffusers   # full size

``--model``: any model depth2img loads instead of the small UNet, e.g. the full-size random-weight SD2-depth
folder that ``bench_perf.py --keep-files`` leaves in its workdir (there the UNet dominates, as in real use).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_diffusers import small_components  # noqa: E402  (the same reduced SD2-depth UNet)

from depth2img.fast import FAST_BUNDLE, native_low_precision  # noqa: E402
from depth2img.pipeline import Pipeline  # noqa: E402

KNOBS = {  # label -> request fields; each knob alone at the fast bundle's value, then the bundle
    f"uncond_sigma={FAST_BUNDLE['uncond_sigma']:g} (NGMS)": {"uncond_sigma": FAST_BUNDLE["uncond_sigma"]},
    f"deepcache_interval={FAST_BUNDLE['deepcache_interval']}": {"deepcache_interval": FAST_BUNDLE["deepcache_interval"]},
    "low_precision (bf16 autocast)": {"low_precision": True},
    "fast=True (bundle)": {"fast": True},
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels (128-256)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--scheduler", default="dpmpp_2m_karras")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", help="a model to load instead of the small UNet (folder, file or built-in name)")
    args = parser.parse_args()

    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((args.size, args.size), Image.Resampling.LANCZOS)
    if args.model:
        from depth2img import load_pipeline

        pipe = load_pipeline(args.model)
    else:
        pipe = Pipeline(small_components())
    base = dict(prompt="a marble statue", negative_prompt="blurry", image=image, seed=1, steps=args.steps,
                strength=args.strength, scheduler=args.scheduler, guidance_scale=7.5)
    pipe.generate(**base)  # warm-up; also fills the exact-mode caches, so the timings below are UNet + VAE

    def run(fields: dict) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        result = pipe.generate(**base, **fields)
        return time.perf_counter() - start, np.asarray(result.images[0])

    exact_times: list[float] = []
    times: dict[str, list[float]] = {label: [] for label in KNOBS}
    images: dict[str, np.ndarray] = {}
    exact_image = None
    for _ in range(args.repeats):  # interleaved: exact, knob 1, exact, knob 2, ...
        for label, fields in KNOBS.items():
            t, exact_image = run({})
            exact_times.append(t)
            t, images[label] = run(fields)
            times[label].append(t)
    assert exact_image is not None
    exact = statistics.median(exact_times)
    print(f"# bench_fast: {args.model or 'small SD2-depth-shaped UNet'}, {args.size}px, {args.steps} steps x strength {args.strength}, "
          f"{args.scheduler}, {args.repeats} repeats, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native bf16: {native_low_precision(torch.device('cpu'))}")
    print(f"# exact: median {exact:.3f} s (min {min(exact_times):.3f})")
    print("| knob | median s | speed-up (exact ÷ knob) | max |Δpx| | mean |Δpx| | PSNR dB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in KNOBS:
        median = statistics.median(times[label])
        diff = np.abs(images[label].astype(int) - exact_image.astype(int))
        print(f"| {label} | {median:.3f} | {exact / median:.2f} | {diff.max()} | {diff.mean():.2f} | "
              f"{psnr(images[label], exact_image):.1f} |")


if __name__ == "__main__":
    main()
