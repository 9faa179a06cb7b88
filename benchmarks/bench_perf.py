"""depth2img vs diffusers' StableDiffusionDepth2ImgPipeline, full-size SD2-depth architecture, one command.

Prints a table and writes a JSON file. Ours and diffusers run on the same weights (a random-valued checkpoint
with the exact key layout of 512-depth-ema.ckpt, written once into --workdir and deleted at the end unless
--keep-files) and the same inputs, interleaved, repeated; ratios are ours / diffusers (min and median).

    .venv/bin/python benchmarks/bench_perf.py --quick          # 128 px, 1 repeat: minutes
    .venv/bin/python benchmarks/bench_perf.py                  # 256 px, 3 repeats, latent up to 64
    .venv/bin/python benchmarks/bench_perf.py --quick --step   # one section alone (flags combine)

Sections (no flag = all):
  --step      per-step time of the whole denoising step (UNet + CFG + scheduler), from step callbacks, and
              achieved GFLOP/s (torch.utils.flop_counter on a meta copy of the UNet) as a fraction of the
              fp32 GEMM peak measured in this run (2048^2 matmul);
  --image     time-to-image at identical settings (same sampler, steps, strength, seed) and the pixel
              difference between the two images (exact mode: within float tolerance);
  --variants  each side's defaults: diffusers' __call__ defaults vs our variants table (GenerationRequest(),
              preset="reference", fast=True; a variant whose fields this build lacks prints "not available in
              this build"), speed ratio and drift (max/mean pixel difference, PSNR) against diffusers' image;
  --memory    peak resident memory (VmHWM) of a fresh process that loads the full-size model and generates;
  --start     cold (fresh process) and warm (second load in the process) time to the first UNet step from the
              original-layout .safetensors and .ckpt: our loader vs diffusers' from_single_file (the UNet: diffusers
              0.42 has no single-file loader for the depth pipeline), our .ckpt cache miss and hit, and our whole
              pipeline from the cached .ckpt;
  --scaling   UNet-only CFG call at latent 8..64 and batch 1..4, channels_last and thread count: how time grows;
  --compile   our --compile (torch.compile, inductor) around the UNet vs the eager UNet (the module diffusers calls):
              the first call's time with an empty inductor cache and, in a second fresh process, with the cache
              the first one left (what a restart pays), and the per-call time compiled / eager, interleaved.

Timings are printed, never asserted. The OS page cache is not dropped between runs ("cold" = fresh process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPT = "a marble statue of an astronaut"
SECTIONS = ("step", "image", "variants", "memory", "start", "scaling", "compile")
# Our variants (GenerationRequest fields); a variant whose fields the request type lacks is reported as
# "not available in this build" (the presets and the fast mode come from another branch of issue 11).
VARIANTS = (
    ("ours GenerationRequest() defaults", {}),
    ("ours preset=reference", {"preset": "reference"}),
    ("ours preset=default", {"preset": "default"}),
    ("ours fast=True", {"fast": True}),
)


# --------------------------------------------------------------------------------------------------
# machine facts and the roofline
# --------------------------------------------------------------------------------------------------


def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        info["family_model"] = f"{fields.get('CPU family', '').strip()}/{fields.get('Model', '').strip()}"
        flags = set(fields.get("Flags", "").split())
        info["flags"] = sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni"})
    except (OSError, subprocess.CalledProcessError, ValueError):
        info["cpu"], info["flags"] = platform.processor(), []
    info["cores"] = os.cpu_count()
    import diffusers
    import transformers

    info["diffusers"], info["transformers"] = diffusers.__version__, transformers.__version__
    return info


def gemm_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul at the current thread count: the roofline every ratio is read against.
    (bf16 without native units is emulated at well under 1 GFLOP/s: measure it with a small n.)"""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def unet_flops(unet_config: dict, batch: int, latent: int) -> int:
    """FLOPs of one UNet forward (conv, linear, attention matmuls; 2 per MAC) counted on the meta device."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        x = torch.randn(batch, unet_config["in_channels"], latent, latent)
        emb = torch.randn(batch, 77, unet_config["cross_attention_dim"])
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(x, torch.tensor(500), encoder_hidden_states=emb)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------------
# the full-size fixture (random values, the real key layout)
# --------------------------------------------------------------------------------------------------


def ensure_files(workdir: Path, ckpt: bool, folder: bool) -> dict[str, Path]:
    """``512-depth-ema.safetensors`` (fp32, 5.7 GB), optionally the same as a Lightning-style ``.ckpt`` and
    as a diffusers folder (our converter: the folder diffusers' from_pretrained and our loader both read)."""
    from tests._sd2_layout import layout, random_tensor

    workdir.mkdir(parents=True, exist_ok=True)
    files = {"safetensors": workdir / "512-depth-ema.safetensors", "ckpt": workdir / "512-depth-ema.ckpt",
             "folder": workdir / "diffusers"}
    need_st = not files["safetensors"].is_file()
    need_ck = ckpt and not files["ckpt"].is_file()
    if need_st or need_ck:
        t = time.perf_counter()
        print("writing the full-size random checkpoint (fp32, 5.7 GB per file)...", flush=True)
        gen = torch.Generator().manual_seed(0)
        sd = {k: random_tensor(k, s, gen) for k, s in layout().items()}
        if need_st:
            from safetensors.torch import save_file

            save_file(sd, str(files["safetensors"]))
        if need_ck:
            torch.save({"state_dict": sd, "global_step": 0}, files["ckpt"])
        del sd
        print(f"  written in {time.perf_counter() - t:.0f} s", flush=True)
    if folder and not (files["folder"] / "model_index.json").is_file():
        from depth2img.models.convert import original_to_folder

        t = time.perf_counter()
        print("converting it to a diffusers folder...", flush=True)
        original_to_folder(files["safetensors"], files["folder"])
        print(f"  converted in {time.perf_counter() - t:.0f} s", flush=True)
    return files


def remove_files(workdir: Path) -> None:
    import shutil

    for name in ("512-depth-ema.safetensors", "512-depth-ema.ckpt"):
        (workdir / name).unlink(missing_ok=True)
    for name in ("diffusers", "cache", "cache-miss"):
        shutil.rmtree(workdir / name, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# in-process pair: our Pipeline and diffusers' pipeline on the very same modules
# --------------------------------------------------------------------------------------------------


def test_image(size: int):
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)


class Pair:
    """Ours and diffusers' pipeline sharing one set of modules (loaded once, by our folder loader)."""

    def __init__(self, folder: Path) -> None:
        from diffusers import StableDiffusionDepth2ImgPipeline

        from depth2img.models.folder import load_folder
        from depth2img.pipeline import Pipeline

        c = load_folder(folder)
        self.ours = Pipeline(c)
        self.ref = StableDiffusionDepth2ImgPipeline(
            vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet, scheduler=c.scheduler,
            depth_estimator=c.depth_estimator, feature_extractor=c.feature_extractor,
        )
        self.ref.set_progress_bar_config(disable=True)
        self.unet_config = dict(c.unet.config)

    def run_ours(self, fields: dict) -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []

        def on_step(info: Any) -> None:
            stamps.append(time.perf_counter())

        t = time.perf_counter()
        result = self.ours.generate(callback=on_step, **fields)
        return time.perf_counter() - t, _intervals(stamps), np.asarray(result.images[0])

    def run_ref(self, kwargs: dict) -> tuple[float, list[float], np.ndarray]:
        stamps: list[float] = []

        def on_step(pipe: Any, i: int, t: Any, kw: dict) -> dict:
            stamps.append(time.perf_counter())
            return {}

        t = time.perf_counter()
        image = self.ref(callback_on_step_end=on_step, **kwargs).images[0]
        return time.perf_counter() - t, _intervals(stamps), np.asarray(image)


def _intervals(stamps: list[float]) -> list[float]:
    """Step durations from consecutive step-end stamps (the first step's start is not observed)."""
    return [b - a for a, b in zip(stamps, stamps[1:])]


def request_fields() -> set[str]:
    from depth2img.request import GenerationRequest

    return {f.name for f in dataclasses.fields(GenerationRequest)}


def drift(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((d**2).mean())
    return {"max_px": float(d.max()), "mean_px": float(d.mean()), "psnr_db": math.inf if mse == 0 else 10 * math.log10(255**2 / mse)}


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "n": len(values)}


def exact_pair(pair: Pair, args: argparse.Namespace, sections: set[str], peak: float, rows: list[dict]) -> None:
    """Sections 1 (step) and 2 (image): identical settings, interleaved, ``--repeats`` times."""
    image = test_image(args.size)
    common = dict(prompt=PROMPT, strength=args.strength, guidance_scale=7.5)
    fields = dict(image=image, steps=args.steps, seed=0, scheduler="pndm", **common)
    if "preset" in request_fields():
        fields["preset"] = "reference"  # the diffusers-equivalent path, once presets exist
    kwargs = dict(image=image, num_inference_steps=args.steps, **common)
    total: dict[str, list[float]] = {"ours": [], "diffusers": []}
    steps: dict[str, list[float]] = {"ours": [], "diffusers": []}
    images: dict[str, np.ndarray] = {}
    pair.run_ours({**fields, "steps": 2, "strength": 1.0})  # warm-up: lazy imports, first allocations
    for _ in range(args.repeats):
        t, s, images["ours"] = pair.run_ours(fields)
        total["ours"].append(t), steps["ours"].extend(s)
        t, s, images["diffusers"] = pair.run_ref({**kwargs, "generator": torch.Generator().manual_seed(0)})
        total["diffusers"].append(t), steps["diffusers"].extend(s)
    latent = args.size // 8
    flops = unet_flops(pair.unet_config, 2, latent)  # one CFG step = one batch-2 UNet forward
    settings = f"{args.size}px pndm {args.steps} steps x strength {args.strength}, CFG 7.5"
    if "step" in sections:
        o, d = stats(steps["ours"]), stats(steps["diffusers"])
        rows.append(row("1 step", f"denoising step, {settings}", o, d, "s",
                        note=f"{flops / 1e9:.1f} GFLOP/step; ours {flops / o['min'] / 1e9:.1f} GFLOP/s = "
                             f"{flops / o['min'] / 1e9 / peak:.2f} of peak, diffusers {flops / d['min'] / 1e9:.1f} = "
                             f"{flops / d['min'] / 1e9 / peak:.2f}",
                        extra={"flops_per_step": flops, "gflops_ours": flops / o["min"] / 1e9,
                               "gflops_diffusers": flops / d["min"] / 1e9, "fraction_of_peak_ours": flops / o["min"] / 1e9 / peak}))
    if "image" in sections:
        dr = drift(images["ours"], images["diffusers"])
        rows.append(row("2 image", f"time-to-image, identical ({settings})", stats(total["ours"]), stats(total["diffusers"]), "s",
                        note=f"ours vs diffusers: max {dr['max_px']:.0f}/255, mean {dr['mean_px']:.3f}, PSNR {dr['psnr_db']:.1f} dB",
                        extra={"drift": dr}))


def variants(pair: Pair, args: argparse.Namespace, rows: list[dict]) -> None:
    """Sections 2b and 6: diffusers' defaults vs each of our variants, drift against diffusers' image."""
    image = test_image(args.variant_size)
    available = request_fields()
    ref_times, ref_image = [], None
    ours: dict[str, tuple[list[float], np.ndarray | None]] = {}
    for _ in range(args.repeats):
        t, _, ref_image = pair.run_ref(dict(image=image, prompt=PROMPT, generator=torch.Generator().manual_seed(0)))
        ref_times.append(t)
        for name, extra in VARIANTS:
            if not set(extra) <= available:
                continue
            t, _, img = pair.run_ours(dict(image=image, prompt=PROMPT, seed=0, **extra))
            ours.setdefault(name, ([], None))[0].append(t)
            ours[name] = (ours[name][0], img)
    d = stats(ref_times)
    for name, extra in VARIANTS:
        if name not in ours:
            missing = sorted(set(extra) - available)
            rows.append(row("2/6 variants", f"{name} vs diffusers' defaults", None, d, "s",
                            note=f"not available in this build (GenerationRequest has no {', '.join(missing)})"))
            continue
        times, img = ours[name]
        dr = drift(img, ref_image)
        rows.append(row("2/6 variants", f"{name} vs diffusers' defaults ({args.variant_size}px)", stats(times), d, "s",
                        note=f"drift vs diffusers: max {dr['max_px']:.0f}/255, mean {dr['mean_px']:.2f}, PSNR {dr['psnr_db']:.1f} dB",
                        extra={"drift": dr, "fields": extra}))


# --------------------------------------------------------------------------------------------------
# UNet-only scaling (section 5)
# --------------------------------------------------------------------------------------------------


def unet_call_time(unet: Any, batch: int, latent: int, repeats: int, channels_last: bool = False) -> list[float]:
    x = torch.randn(batch, unet.config.in_channels, latent, latent)
    emb = torch.randn(batch, 77, unet.config.cross_attention_dim)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        unet(x, torch.tensor(500), encoder_hidden_states=emb)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            unet(x, torch.tensor(500), encoder_hidden_states=emb)
            times.append(time.perf_counter() - t)
    return times


def scaling(pair: Pair, args: argparse.Namespace, peak: float, rows: list[dict]) -> None:
    unet = pair.ours.unet
    cfg = pair.unet_config
    measured: dict[tuple[int, int], dict] = {}  # (batch, latent) -> stats, reused by the later rows
    for latent in args.latents:
        s = measured[2, latent] = stats(unet_call_time(unet, 2, latent, args.repeats))
        flops = unet_flops(cfg, 2, latent)
        base = measured[2, args.latents[0]]["min"]
        rows.append(row("5 scaling", f"UNet CFG call (batch 2), latent {latent} ({latent * 8}px)", s, None, "s",
                        note=f"x{s['min'] / base:.2f} of latent {args.latents[0]}; {flops / 1e9:.0f} GFLOP, "
                             f"{flops / s['min'] / 1e9:.1f} GFLOP/s = {flops / s['min'] / 1e9 / peak:.2f} of peak",
                        extra={"flops": flops, "latent": latent}))
    latent = 16
    for images in args.batches:
        s = measured.get((2 * images, latent)) or stats(unet_call_time(unet, 2 * images, latent, args.repeats))
        measured[2 * images, latent] = s
        base = measured[2 * args.batches[0], latent]["min"] / args.batches[0]
        flops = unet_flops(cfg, 2 * images, latent)
        rows.append(row("5 scaling", f"UNet CFG call, {images} image(s) (batch {2 * images}), latent {latent}", s, None, "s",
                        note=f"per image x{s['min'] / images / base:.2f}; {flops / s['min'] / 1e9:.1f} GFLOP/s = "
                             f"{flops / s['min'] / 1e9 / peak:.2f} of peak", extra={"flops": flops, "images": images}))
    # knobs, measured on the same module: memory format and thread count (ratio = knob / plain)
    plain = measured[2, latent]
    unet.to(memory_format=torch.channels_last)
    try:
        cl = stats(unet_call_time(unet, 2, latent, args.repeats, channels_last=True))
    finally:
        unet.to(memory_format=torch.contiguous_format)
    rows.append(row("5 knobs", f"channels_last (ours col.) vs contiguous (diffusers col.), UNet latent {latent}", cl, plain, "s",
                    note="ratio < 1: channels_last is faster on this CPU"))
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        try:
            one = stats(unet_call_time(unet, 2, latent, args.repeats))
        finally:
            torch.set_num_threads(threads)
        rows.append(row("5 knobs", f"{threads} threads (ours col.) vs 1 thread (diffusers col.), UNet latent {latent}", plain, one, "s",
                        note=f"ideal {1 / threads:.2f}; the library never sets threads (CLI --threads does)"))


# --------------------------------------------------------------------------------------------------
# fresh processes: memory (3) and start (4)
# --------------------------------------------------------------------------------------------------

CHILD = r"""
import json, os, resource, sys, time
T0 = time.perf_counter()
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
what, path, extra, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def vmhwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

{vmrss}
RSS = {{}}

def image():
    from PIL import Image
    from skimage import data
    return Image.fromarray(data.astronaut()).resize((size, size))

def unet_step(u):
    x = torch.randn(2, u.config.in_channels, 8, 8)
    e = torch.randn(2, 77, u.config.cross_attention_dim)
    with torch.inference_mode():
        u(x, torch.tensor(500), encoder_hidden_states=e)

def ours_unet(p):  # load_single_file's steps for the UNet alone, finite check included
    from depth2img.models.detect import UNET, detect
    from depth2img.models.files import PICKLE_SUFFIXES
    from depth2img.models.safe_load import find_non_finite, load_state_dict
    from depth2img.models.single_file import build_unet
    try:
        from depth2img.models.single_file import cache_entry_finite
    except ImportError:  # a build before the cache entry's finite marker: every start checks
        cache_entry_finite = lambda sd, entry: False
    from pathlib import Path
    entry = None
    if extra and Path(p).suffix.lower() in PICKLE_SUFFIXES:
        from depth2img.models.cache import cached_checkpoint
        p, _ = cached_checkpoint(p, extra)
        entry = p
    sd = load_state_dict(p)
    if not (entry is not None and cache_entry_finite(sd, entry)):
        assert not find_non_finite(sd, [k for k in sd if k.startswith(UNET)])
    return build_unet(sd, detect(sd, p), torch.float32)

def load_and_step():
    t = time.perf_counter()
    if what == "ours-unet":
        unet_step(ours_unet(path))
    elif what == "diffusers-unet":
        from diffusers import UNet2DConditionModel
        unet_step(UNet2DConditionModel.from_single_file(path, config=extra, subfolder="unet", local_files_only=True))
    elif what == "ours-all":
        from depth2img import load_pipeline
        pipe = load_pipeline(path, cache_dir=extra or None)
        first = []
        def cb(info):
            first.append(time.perf_counter())
            return False
        try:
            pipe.generate(image=image(), prompt="a statue", steps=1, strength=1.0, seed=0, callback=cb)
        except Exception as e:
            if type(e).__name__ != "GenerationCancelled":
                raise
        return first[0] - t
    elif what in ("ours-generate", "ours-generate-lowmem"):
        from depth2img import load_pipeline
        pipe = load_pipeline(path, low_memory=what.endswith("lowmem"))
        RSS["after_load"] = vmrss()
        pipe.generate(image=image(), prompt="a statue", steps=int(extra), seed=0)
        RSS["after_generate"], RSS["peak_first"] = vmrss(), vmhwm()  # pipeline loaded: the state between requests
        # a 2nd request, new prompt and photo: every module runs again while the UNet's pages are resident
        pipe.generate(image=image().transpose(0), prompt="a house", steps=int(extra), seed=1)
        RSS["after_second"] = vmrss()
    elif what == "diffusers-generate":
        from diffusers import StableDiffusionDepth2ImgPipeline
        pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(path, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipe(image=image(), prompt="a statue", num_inference_steps=int(extra), generator=torch.Generator().manual_seed(0))
        RSS["peak_first"] = vmhwm()
        pipe(image=image().transpose(0), prompt="a house", num_inference_steps=int(extra), generator=torch.Generator().manual_seed(1))
    return time.perf_counter() - t

cold = load_and_step()
first_total = time.perf_counter() - T0
warm = load_and_step() if what.endswith(("-unet", "-all")) else None
print(json.dumps({{"cold": cold, "warm": warm, "process_to_first_step": first_total, "vmhwm": vmhwm(), "rss": RSS}}))
"""


def warm_page_cache(*paths: Path) -> None:
    """Read files once so the next child finds them in the page cache: the start rows compare loaders,
    not which side happened to run first after other files (the fixtures and the cache, ~21 GB together,
    do not all fit in this machine's page cache) pushed the file out."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


# VmRSS of the child process itself, for both child scripts (CHILD, COMPILE_CHILD)
VMRSS = r"""
def vmrss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
"""


def run_child(what: str, script: str, argv: list[str], threads: int, env: dict[str, str] | None = None) -> dict:
    """Run a child script (formatted with this checkout, the thread count and VMRSS) in a fresh process; its
    last stdout line is the JSON result."""
    code = script.format(root=str(ROOT), threads=threads, vmrss=VMRSS)
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(what: str, path: Path, extra: str, size: int, threads: int) -> dict:
    return run_child(what, CHILD, [what, str(path), extra, str(size)], threads)


def memory(files: dict[str, Path], args: argparse.Namespace, rows: list[dict]) -> None:
    steps = str(args.steps)
    ours, ref, single, low = [], [], [], []
    for _ in range(args.repeats):
        ours.append(child("ours-generate", files["folder"], steps, args.size, args.threads))
        ref.append(child("diffusers-generate", files["folder"], steps, args.size, args.threads))
        low.append(child("ours-generate-lowmem", files["folder"], steps, args.size, args.threads))
    single.append(child("ours-generate", files["safetensors"], steps, args.size, args.threads))
    first = lambda runs: stats([r["rss"]["peak_first"] / 2**30 for r in runs])  # noqa: E731
    peak = lambda runs: stats([r["vmhwm"] / 2**30 for r in runs])  # noqa: E731
    after = lambda runs, key: stats([r["rss"][key] / 2**30 for r in runs])  # noqa: E731
    note = f"fresh process: load the diffusers folder + generate {args.size}px, {steps} steps; VmHWM"
    rows.append(row("3 memory", "peak RSS, load + generate (diffusers folder)", first(ours), first(ref), "GiB", note=note))
    rows.append(row("3 memory", "peak RSS, ours from the single .safetensors", first(single), first(ref), "GiB",
                    note="same generation, loaded from the original-layout file"))
    rows.append(row("3 memory", "peak RSS, ours --low-memory (diffusers folder)", first(low), first(ref), "GiB",
                    note="text encoder and DPT released after load and after each use, restored from a spill file (lowmem.py)"))
    note2 = "the same process then generates again with a new prompt and photo; VmHWM over both"
    rows.append(row("3 memory", "peak RSS over 2 requests (diffusers folder)", peak(ours), peak(ref), "GiB", note=note2))
    rows.append(row("3 memory", "peak RSS over 2 requests, ours --low-memory", peak(low), peak(ref), "GiB", note=note2))
    rows.append(row("3 memory", "RSS after load, ours --low-memory (ours col.) vs default (diffusers col.)",
                    after(low, "after_load"), after(ours, "after_load"), "GiB", note="VmRSS, pipeline loaded, before generating"))
    rows.append(row("3 memory", "RSS after generate, ours --low-memory (ours col.) vs default (diffusers col.)",
                    after(low, "after_generate"), after(ours, "after_generate"), "GiB",
                    note="VmRSS with the pipeline still loaded: the steady state between requests"))
    rows.append(row("3 memory", "RSS after the 2nd request, ours --low-memory (ours col.) vs default (diffusers col.)",
                    after(low, "after_second"), after(ours, "after_second"), "GiB", note="VmRSS"))


def start(files: dict[str, Path], args: argparse.Namespace, rows: list[dict]) -> None:
    import shutil

    cfg = str(files["folder"])
    st, ck = files["safetensors"], files["ckpt"]
    cache = args.workdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)

    def both(label: str, ours_path: Path, ref_path: Path, ours_extra: str = "") -> None:
        o, d = [], []
        ours_reads = sorted(cache.glob("*.safetensors")) if ours_extra else [ours_path]
        for _ in range(args.repeats):
            warm_page_cache(*ours_reads)
            o.append(child("ours-unet", ours_path, ours_extra, args.size, args.threads))
            warm_page_cache(ref_path)
            d.append(child("diffusers-unet", ref_path, cfg, args.size, args.threads))
        for key, what in (("process_to_first_step", "cold start (fresh process, incl. imports)"), ("warm", "warm (2nd load in the process)")):
            rows.append(row("4 start", f"UNet {label}: {what} to 1st step", stats([r[key] for r in o]),
                            stats([r[key] for r in d]), "s", note="ours vs diffusers from_single_file"))

    both(".safetensors", st, st)
    miss = child("ours-unet", ck, str(cache), args.size, args.threads)  # converts the pickle once
    rows.append(row("4 start", "UNet .ckpt, cache miss (convert once): to 1st step", stats([miss["process_to_first_step"]]), None, "s",
                    note="first start ever from this .ckpt: hash + safe unpickle + write the safetensors copy"))
    both(".ckpt (2nd start: cached safetensors)", ck, ck, str(cache))
    whole = []
    for _ in range(args.repeats):
        warm_page_cache(*sorted(cache.glob("*.safetensors")))
        whole.append(child("ours-all", ck, str(cache), 64, args.threads))
    rows.append(row("4 start", "ours whole pipeline, .ckpt cached: to 1st step", stats([r["process_to_first_step"] for r in whole]), None, "s",
                    note="all components (UNet, VAE, text, DPT) + depth + text encode + 1 step at 64px; diffusers has no single-file depth pipeline"))


# --------------------------------------------------------------------------------------------------
# torch.compile (section 7): fresh processes, so the inductor cache on disk is all that carries over
# --------------------------------------------------------------------------------------------------

COMPILE_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from diffusers import UNet2DConditionModel
from depth2img.compiled import CompiledUNet
folder, latent, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
compiled = CompiledUNet(unet, torch.device("cpu"))
x = torch.randn(2, unet.config.in_channels, latent, latent)  # (2, 5, L, L): one CFG call
e = torch.randn(2, 77, unet.config.cross_attention_dim)
{vmrss}
def call(model):
    t = time.perf_counter()
    model(x, torch.tensor(500), encoder_hidden_states=e, return_dict=False)
    return time.perf_counter() - t
with torch.no_grad():
    call(unet)  # eager warm-up
    before = vmrss()
    first = call(compiled)
    after = vmrss()
    eager, fast = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        eager.append(call(unet))
        fast.append(call(compiled))
print(json.dumps({{"first": first, "eager": eager, "compiled": fast, "rss_eager": before, "rss_compiled": after}}))
"""


def compile_section(files: dict[str, Path], args: argparse.Namespace, rows: list[dict]) -> None:
    import shutil

    cache = args.workdir / "inductor"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    latent = args.latents[0] if args.quick else 16
    runs = []
    for _ in range(2):  # 1st: empty cache (compiles); 2nd: a fresh process reading what the 1st left
        runs.append(run_child("compile child", COMPILE_CHILD, [str(files["folder"]), str(latent), str(max(args.repeats, 2))],
                              args.threads, env=env))
    eager = stats(runs[0]["eager"] + runs[1]["eager"])
    for run, what in zip(runs, ("empty inductor cache (fresh process): compiles", "2nd fresh process, cache filled by the 1st")):
        rows.append(row("7 compile", f"UNet first call, latent {latent}, {what}", stats([run["first"]]), eager, "s",
                        note="diffusers col. = one eager call; ratio = the first call in eager calls"))
    rows.append(row("7 compile", f"UNet CFG call (batch 2), latent {latent}: ours --compile vs eager (= diffusers' call)",
                    stats(runs[0]["compiled"] + runs[1]["compiled"]), eager, "s",
                    note="interleaved in both processes; same math, not bit-for-bit"))
    rows.append(row("7 compile", "process RSS after the compiled UNet's first call vs before it (eager UNet loaded, warmed up)",
                    stats([r["rss_compiled"] / 2**30 for r in runs]), stats([r["rss_eager"] / 2**30 for r in runs]), "GiB",
                    note="freezing keeps a prepacked copy of the weights"))
    shutil.rmtree(cache, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------------


def row(section: str, name: str, ours: dict | None, ref: dict | None, unit: str, note: str = "", extra: dict | None = None) -> dict:
    ratio = None
    if ours and ref:
        ratio = {"min": ours["min"] / ref["min"], "median": ours["median"] / ref["median"]}
    r = {"section": section, "name": name, "unit": unit, "ours": ours, "diffusers": ref, "ratio": ratio, "note": note}
    if extra:
        r.update(extra)
    print("  " + format_row(r), flush=True)
    return r


def _cell(s: dict | None, unit: str) -> str:
    if not s:
        return "—"
    return f"{s['min']:.3g} / {s['median']:.3g} {unit}"


def format_row(r: dict) -> str:
    ratio = f"{r['ratio']['min']:.3f} / {r['ratio']['median']:.3f}" if r["ratio"] else "—"
    return f"| {r['section']} | {r['name']} | {_cell(r['ours'], r['unit'])} | {_cell(r['diffusers'], r['unit'])} | {ratio} | {r['note']} |"


def print_table(rows: list[dict]) -> str:
    lines = ["| section | measurement | ours min / median | diffusers min / median | ratio ours÷diffusers min / median | notes |",
             "|---|---|---|---|---|---|"] + [format_row(r) for r in rows]
    text = "\n".join(lines)
    print("\n" + text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 px (variants 64 px), 1 repeat, latents 8-16, batch 1-2")
    for name in SECTIONS:
        ap.add_argument(f"--{name}", action="store_true", help=f"run the {name} section (no section flag = all)")
    ap.add_argument("--size", type=int, help="image side in px (quick 128, full 256)")
    ap.add_argument("--variant-size", type=int, help="image side of the defaults/variants runs (quick 64, full = --size)")
    ap.add_argument("--steps", type=int, help="sampler steps at identical settings (quick 6, full 20)")
    ap.add_argument("--strength", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, help="repeats per measurement (quick 1, full 3)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/d2i-perf"))
    ap.add_argument("--json", type=Path, default=Path("bench_perf.json"), help="where the results go")
    ap.add_argument("--keep-files", action="store_true", help="keep the 5.7 GB fixtures in --workdir for the next run")
    args = ap.parse_args(argv)
    q = args.quick
    args.size = args.size or (128 if q else 256)
    args.steps = args.steps or (6 if q else 20)
    args.repeats = args.repeats or (1 if q else 3)
    args.variant_size = args.variant_size or (64 if q else args.size)
    args.latents = [8, 16] if q else [8, 16, 32, 64]
    args.batches = [1, 2] if q else [1, 2, 4]
    sections = {s for s in SECTIONS if getattr(args, s)} or set(SECTIONS)
    torch.set_num_threads(args.threads)

    wall = time.perf_counter()
    info = cpu_info()
    info["threads"] = args.threads
    peak = gemm_peak()
    info["gemm_fp32_gflops"] = peak
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(info["flags"]))
    info["native_bf16"] = native_bf16
    info["gemm_bf16_gflops"] = gemm_peak(torch.bfloat16, n=2048 if native_bf16 else 256, repeats=2)
    print(f"{info['cpu']} ({info['family_model']}), {info['cores']} cores, flags {' '.join(info['flags'])}; "
          f"torch {info['torch']}, diffusers {info['diffusers']}, {args.threads} threads; "
          f"GEMM 2048² fp32 {peak:.1f} GFLOP/s, bf16 {info['gemm_bf16_gflops']:.1f} GFLOP/s ({'native' if native_bf16 else 'emulated, 256²'})", flush=True)
    rows: list[dict] = []
    try:
        files = ensure_files(args.workdir, ckpt="start" in sections, folder=True)
        pair = Pair(files["folder"]) if sections & {"step", "image", "variants", "scaling"} else None
        if pair is not None:
            if sections & {"step", "image"}:
                exact_pair(pair, args, sections, peak, rows)
            if "scaling" in sections:
                scaling(pair, args, peak, rows)
        if "memory" in sections:
            memory(files, args, rows)
        if "start" in sections:
            start(files, args, rows)
        if "compile" in sections:
            compile_section(files, args, rows)
        if "variants" in sections:  # last: the longest (diffusers' defaults run 40 UNet steps)
            variants(pair, args, rows)
    finally:  # an interrupted run still leaves its table and JSON
        if not args.keep_files:
            remove_files(args.workdir)
        table = print_table(rows)
        info["wall_s"] = time.perf_counter() - wall
        cmd = "benchmarks/bench_perf.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.json.write_text(json.dumps({"command": cmd, "machine": info, "rows": rows, "table": table}, indent=1, default=str))
        print(f"\nwall time {info['wall_s']:.0f} s; JSON: {args.json}")

if __name__ == "__main__":
    main()
