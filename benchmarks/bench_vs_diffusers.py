"""depth2img vs diffusers' StableDiffusionDepth2ImgPipeline: same weights, same inputs, side by side.

Prints the median wall time of each and their ratio (ours / diffusers), measured interleaved in one run
so machine load affects both alike. Random weights: a "small" SD2-depth-shaped model (UNet 4 levels,
attention in 3, linear projections, 64-dim heads, DPT-Hybrid) by default, or the built-in "tiny".

    .venv/bin/python benchmarks/bench_vs_diffusers.py --size 256 --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import StableDiffusionDepth2ImgPipeline, UNet2DConditionModel

from depth2img.models.tiny import tiny_components
from depth2img.pipeline import Pipeline


def small_components():
    """Tiny text/VAE/DPT, but a UNet with SD2-depth's layout at a fifth of its width."""
    components = tiny_components(vae_scale_factor=8)
    torch.manual_seed(0)
    components.unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=5,
        out_channels=4,
        block_out_channels=(64, 128, 256, 256),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(1, 2, 4, 4),  # 64-dim heads, as SD2
        cross_attention_dim=32,
        use_linear_projection=True,
        layers_per_block=2,
    )
    return components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["small", "tiny"], default="small")
    parser.add_argument("--size", type=int, default=256, help="square image side in pixels")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from skimage import data
    from PIL import Image

    image = Image.fromarray(data.astronaut()).resize((args.size, args.size), Image.Resampling.LANCZOS)
    components = small_components() if args.model == "small" else tiny_components()
    ours = Pipeline(components)
    reference = StableDiffusionDepth2ImgPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=components.scheduler, depth_estimator=components.depth_estimator,
        feature_extractor=components.feature_extractor,
    )
    reference.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a marble statue", strength=args.strength, guidance_scale=7.5)

    def run_ours() -> None:
        ours.generate(image=image, steps=args.steps, seed=0, **kwargs)

    def run_reference() -> None:
        reference(image=image, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **kwargs)

    run_ours(), run_reference()  # warm-up: first-call allocations and lazy imports
    times: dict[str, list[float]] = {"depth2img": [], "diffusers": []}
    for _ in range(args.repeats):
        for name, fn in (("depth2img", run_ours), ("diffusers", run_reference)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"model={args.model} size={args.size} steps={args.steps} strength={args.strength} repeats={args.repeats} threads={torch.get_num_threads()}")
    for name, value in medians.items():
        print(f"  {name:10s} median {value:7.3f} s  (runs: {', '.join(f'{v:.3f}' for v in times[name])})")
    print(f"  ratio depth2img/diffusers = {medians['depth2img'] / medians['diffusers']:.3f}")


if __name__ == "__main__":
    main()
