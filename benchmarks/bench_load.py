"""Load time of a full-size SD2-depth original-layout file: depth2img vs diffusers, side by side.

Writes (once, into --workdir) a checkpoint with exactly the layout of 512-depth-ema.ckpt (1,608 keys,
random values) as fp32 .safetensors and, with --ckpt, as a Lightning-style .ckpt. Each measurement runs
in a fresh subprocess so "cold" includes imports and the first read of the file (the OS page cache is
whatever the previous run left: it is not dropped); "warm" is a second load in the same process.

    .venv/bin/python benchmarks/bench_load.py [--workdir /tmp/d2i-bench] [--ckpt]

Compared: depth2img ``load_single_file`` (all components: UNet, VAE, text encoder, DPT-Hybrid,
tokenizer, scheduler), depth2img's UNet alone, and diffusers ``UNet2DConditionModel.from_single_file``
(UNet only, with an explicit local config so it works offline). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, json, os
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, {root!r})
import torch
what, path, extra = sys.argv[1], sys.argv[2], sys.argv[3]
def once():
    t = time.perf_counter()
    if what == "depth2img":
        from depth2img.models.single_file import load_single_file
        c = load_single_file(path, cache_dir=extra or None)
        n = sum(p.numel() for m in (c.unet, c.vae, c.text_encoder, c.depth_estimator) for p in m.parameters())
    elif what == "depth2img-unet":
        from depth2img.models.safe_load import load_state_dict
        from depth2img.models.detect import detect
        from depth2img.models.single_file import build_unet
        sd = load_state_dict(path)
        u = build_unet(sd, detect(sd, path), torch.float32)
        n = sum(p.numel() for p in u.parameters())
    else:
        from diffusers import UNet2DConditionModel
        u = UNet2DConditionModel.from_single_file(path, config=extra, subfolder="unet", local_files_only=True)
        n = sum(p.numel() for p in u.parameters())
    return time.perf_counter() - t, n
t0 = time.perf_counter()
cold, n = once()
warm, _ = once()
print(json.dumps({{"cold": cold, "warm": warm, "params": n, "process": time.perf_counter() - t0}}))
"""


def make_files(workdir: Path, ckpt: bool) -> tuple[Path, Path | None, Path]:
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from tests._sd2_layout import layout, random_tensor

    workdir.mkdir(parents=True, exist_ok=True)
    st, ck, cfg = workdir / "512-depth-ema.safetensors", workdir / "512-depth-ema.ckpt", workdir / "config"
    if not st.is_file() or (ckpt and not ck.is_file()):
        print("writing the full-size fixture (fp32, 5.7 GB per file)...", flush=True)
        gen = torch.Generator().manual_seed(0)
        sd = {k: random_tensor(k, s, gen) for k, s in layout().items()}
        if not st.is_file():
            save_file(sd, str(st))
        if ckpt and not ck.is_file():
            torch.save({"state_dict": sd, "global_step": 0}, ck)
        del sd
    if not (cfg / "unet" / "config.json").is_file():
        from depth2img.models.detect import detect
        from depth2img.models.safe_load import load_state_dict
        from depth2img.models.single_file import build_unet

        sd = {k: torch.empty(s, device="meta") for k, s in layout().items()}
        unet = build_unet(sd, detect(sd), None)
        unet.save_config(cfg / "unet")
        del load_state_dict
    return st, (ck if ckpt else None), cfg


def run(what: str, path: Path, extra: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), what, str(path), extra],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/d2i-bench"))
    ap.add_argument("--ckpt", action="store_true", help="also measure a .ckpt (pickle) and the safetensors cache")
    args = ap.parse_args()
    st, ck, cfg = make_files(args.workdir, args.ckpt)
    rows = [
        ("depth2img, all components, .safetensors", run("depth2img", st)),
        ("depth2img, UNet only, .safetensors", run("depth2img-unet", st)),
        ("diffusers from_single_file, UNet, .safetensors", run("diffusers", st, str(cfg))),
    ]
    if ck is not None:
        cache = args.workdir / "cache"
        rows += [
            ("depth2img, UNet only, .ckpt", run("depth2img-unet", ck)),
            ("diffusers from_single_file, UNet, .ckpt", run("diffusers", ck, str(cfg))),
            ("depth2img, all, .ckpt, cache miss", run("depth2img", ck, str(cache))),
            ("depth2img, all, .ckpt, cache hit", run("depth2img", ck, str(cache))),
        ]
    print(f"\n{'':48s} {'cold s':>8s} {'warm s':>8s} {'params':>14s}")
    for name, r in rows:
        print(f"{name:48s} {r['cold']:8.2f} {r['warm']:8.2f} {r['params']:14,d}")
    ours, theirs = rows[1][1], rows[2][1]
    print(f"\nUNet .safetensors, diffusers / depth2img: cold x{theirs['cold'] / ours['cold']:.2f}, warm x{theirs['warm'] / ours['warm']:.2f}")
    if ck is not None:
        o, t = rows[3][1], rows[4][1]
        print(f"UNet .ckpt, diffusers / depth2img: cold x{t['cold'] / o['cold']:.2f}, warm x{t['warm'] / o['warm']:.2f}")
        miss, hit = rows[5][1], rows[6][1]
        print(f".ckpt all components: cache miss {miss['cold']:.1f} s -> cache hit {hit['cold']:.1f} s (x{miss['cold'] / hit['cold']:.1f})")


if __name__ == "__main__":
    main()
