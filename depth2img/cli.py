"""The ``depth2img`` command line: translates options into a GenerationRequest, runs it, writes files.

Every user mistake ends as one line on stderr and exit code 2 (no traceback); outputs are written
atomically, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Depth-to-image with Stable Diffusion 2 depth: a photo and a prompt in, a new picture with the "
    "same 3-D layout out. Try: depth2img generate --model tiny --image photo.png --prompt 'a castle'",
)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model: 'tiny' (built-in, random weights, no meaningful image), a diffusers folder, a "
        ".ckpt/.safetensors file, or a hub id such as sd2-community/stable-diffusion-2-depth.",
    ),
]
DepthModelOpt = Annotated[
    Optional[str],
    typer.Option("--depth-model", help="Another depth estimator: a transformers folder or hub id (DPT-Large, Depth Anything V2...)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 (default), float16 or bfloat16.")]


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into 'error: ...' and exit 2; warnings into one 'warning: ...' line each."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import Depth2ImgError

        def show(message: Warning | str, category: type, *_: Any, **__: Any) -> None:
            err.print(f"[yellow]warning:[/] {message}", highlight=False)

        previous = warnings.showwarning
        warnings.showwarning = show  # type: ignore[assignment]
        try:
            return fn(*args, **kwargs)
        except Depth2ImgError as error:
            err.print(f"[red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        finally:
            warnings.showwarning = previous

    return wrapper


@app.command()
@_one_line_errors
def generate(
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="The photo whose 3-D layout is kept.")] = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the new picture shows.")] = "",
    model: ModelOpt = "tiny",
    negative_prompt: Annotated[str, typer.Option("--negative-prompt", "-n", help="What to steer away from.")] = "",
    strength: Annotated[float, typer.Option(help="Denoising strength 0..1; with depth, 1.0 still keeps the layout.")] = 0.8,
    steps: Annotated[int, typer.Option(help="Sampling steps (before strength truncation).")] = 50,
    cfg: Annotated[float, typer.Option("--cfg", help="Classifier-free guidance scale.")] = 7.5,
    seed: Annotated[int, typer.Option(help="Seed; -1 = random. Image i of a batch uses seed + i.")] = -1,
    scheduler: Annotated[str, typer.Option(help="pndm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc, lms.")] = "pndm",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images to make; files OUT-0.png, OUT-1.png...")] = 1,
    width: Annotated[Optional[int], typer.Option(help="Output width (multiple of 8); default: the image's, floored.")] = None,
    height: Annotated[Optional[int], typer.Option(help="Output height (multiple of 8); give with --width.")] = None,
    resize_mode: Annotated[str, typer.Option(help="just_resize, crop_and_resize or resize_and_fill (A1111's modes).")] = "just_resize",
    depth: Annotated[
        Optional[Path],
        typer.Option("--depth", help="Your own depth map (8/16-bit PNG/TIFF or .npy; white = near). Without --image: depth-only generation at the map's size."),
    ] = None,
    depth_model: DepthModelOpt = None,
    eta: Annotated[float, typer.Option(help="DDIM eta (0 = deterministic).")] = 0.0,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="Inpaint: white = repaint (an RGBA mask's alpha is used).")] = None,
    mask_blur: Annotated[float, typer.Option("--mask-blur", help="Mask blur sigma in pixels, 0..64 (A1111).")] = 4,
    masked_content: Annotated[str, typer.Option("--masked-content", help="original, fill, latent_noise or latent_nothing.")] = "original",
    inpaint_area: Annotated[str, typer.Option("--inpaint-area", help="whole (picture) or only_masked (crop, generate at --width/--height, paste back).")] = "whole",
    padding: Annotated[int, typer.Option("--padding", help="only_masked: pixels kept around the mask, 0..256.")] = 32,
    invert_mask: Annotated[bool, typer.Option("--invert-mask", help="Repaint what is black instead (A1111's 'Inpaint not masked').")] = False,
    invert_depth: Annotated[bool, typer.Option("--invert-depth", help="The depth map uses black = near (Blender Z, depth cameras).")] = False,
    depth_clip: Annotated[Optional[str], typer.Option("--depth-clip", help="FAR,NEAR percentiles to clip the depth to, then renormalise, e.g. 2,98.")] = None,
    depth_strength: Annotated[float, typer.Option("--depth-strength", help="0..1: how strongly the depth is followed (1 = as trained, 0 = flat).")] = 1.0,
    depth_end: Annotated[float, typer.Option("--depth-end", help="0..1: fraction of the steps that get the depth; a flat map after.")] = 1.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG (with A1111 'parameters' infotext).")] = Path("out.png"),
    save_depth: Annotated[
        Optional[Path],
        typer.Option(help="Also write the depth used: .png = the estimate, 16-bit, white = near; .npy = the exact normalised map fed to the UNet."),
    ] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
) -> None:
    """Make new pictures from a photo and a prompt, keeping the photo's depth."""
    from .depth import load_depth_map
    from .images import load_image, open_image
    from .request import GenerationRequest

    # Decode inputs before loading gigabytes of weights: bad input fails in milliseconds.
    request = GenerationRequest(
        prompt=prompt,
        image=load_image(image) if image is not None else None,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance_scale=cfg,
        seed=seed,
        batch_size=batch_size,
        width=width,
        height=height,
        resize_mode=resize_mode,  # type: ignore[arg-type]
        scheduler=scheduler,
        depth_map=load_depth_map(depth) if depth is not None else None,
        eta=eta,
        mask=open_image(mask, what="mask") if mask is not None else None,
        mask_blur=mask_blur,
        masked_content=masked_content,  # type: ignore[arg-type]
        inpaint_area=inpaint_area,  # type: ignore[arg-type]
        padding=padding,
        invert_mask=invert_mask,
        invert_depth=invert_depth,
        depth_clip=parse_pair("--depth-clip", depth_clip) if depth_clip is not None else (0.0, 100.0),
        depth_strength=depth_strength,
        depth_end=depth_end,
    ).validate()
    pipe = _load(model, device, dtype, depth_model)
    result = _run_with_progress(pipe, request)
    paths = output_paths(out, len(result.images))
    from .outputs import save_image as save_png

    for picture, infotext, path in zip(result.images, result.infotexts, paths):
        save_png(picture, path, infotext=infotext)
        err.print(f"wrote {path}", highlight=False)
    if save_depth is not None and result.depth_map is not None:
        _write_depth(result.depth_map, save_depth)
        err.print(f"wrote {save_depth}", highlight=False)


@app.command("depth")
@_one_line_errors
def depth_command(
    image: Annotated[Path, typer.Option("--image", "-i", help="The photo to estimate depth for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG (white = near).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Use this model's own depth estimator.")] = None,
    depth_model: DepthModelOpt = None,
    bits: Annotated[int, typer.Option(help="8 or 16 bits per pixel (grayscale).")] = 8,
    colormap: Annotated[bool, typer.Option("--colormap", help="Write a colour (Turbo) preview instead of grayscale.")] = False,
    sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Also write photo | depth | Turbo preview side by side.")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Estimate a depth map and write it as an image the size of the photo (white = near)."""
    from .depth import depth_sheet, depth_to_image, resize_depth
    from .errors import InvalidRequestError
    from .images import load_image
    from .outputs import save_image as save_png

    if bits not in (8, 16):
        raise InvalidRequestError(f"--bits must be 8 or 16, got {bits}")
    if model is not None and depth_model is not None:
        raise InvalidRequestError("give --model or --depth-model, not both")
    pipe = _load(model or "tiny", device, "float32", depth_model)
    picture = load_image(image)
    raw = resize_depth(pipe.estimate_depth(picture).raw, (picture.height, picture.width))
    save_png(depth_to_image(raw, bits=bits, colormap=colormap), out)
    err.print(f"wrote {out}", highlight=False)
    if sheet is not None:
        save_png(depth_sheet(picture, raw), sheet)
        err.print(f"wrote {sheet}", highlight=False)


@app.command()
@_one_line_errors
def sweep(
    image: Annotated[Path, typer.Option("--image", "-i", help="The photo to compare on.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the new picture shows.")],
    strengths: Annotated[str, typer.Option("--strengths", help="Comma-separated denoising strengths, one column each.")] = "0.4,0.6,0.8,1.0",
    model: ModelOpt = "tiny",
    compare_model: Annotated[Optional[str], typer.Option("--compare-model", help="A plain img2img model for a second row (e.g. tiny-img2img).")] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="Also vary AXIS=V1,V2 down the rows: cfg, steps, seed or scheduler.")] = None,
    negative_prompt: Annotated[str, typer.Option("--negative-prompt", "-n", help="What to steer away from.")] = "",
    steps: Annotated[int, typer.Option(help="Sampling steps (before strength truncation).")] = 50,
    cfg: Annotated[float, typer.Option("--cfg", help="Classifier-free guidance scale.")] = 7.5,
    seed: Annotated[int, typer.Option(help="Seed shared by every cell; -1 = one random seed.")] = -1,
    scheduler: Annotated[str, typer.Option(help="pndm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc, lms.")] = "pndm",
    width: Annotated[Optional[int], typer.Option(help="Cell width (multiple of 8); default: the image's, floored.")] = None,
    height: Annotated[Optional[int], typer.Option(help="Cell height (multiple of 8); give with --width.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output grid PNG.")] = Path("sweep.png"),
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
) -> None:
    """Compare depth2img (and optionally img2img) across strengths: a labelled grid, same seed everywhere."""
    from .grid import parse_axis
    from .grid import sweep as make_sweep
    from .images import load_image
    from .outputs import save_image as save_png
    from .request import GenerationRequest

    columns = parse_axis("strength", strengths)
    y_axis = None
    if y is not None:
        name, _, values = y.partition("=")
        y_axis = parse_axis(name.strip(), values)
    request = GenerationRequest(
        prompt=prompt, image=load_image(image), negative_prompt=negative_prompt, steps=steps, guidance_scale=cfg,
        seed=seed, scheduler=scheduler, width=width, height=height,
    ).validate()
    pipelines = {}
    for name in [model] if compare_model is None else [model, compare_model]:
        pipe = _load(name, device, dtype, None)
        pipelines[f"{name} ({'depth2img' if pipe.kind == 'depth' else 'img2img'})"] = pipe
    with err.status("rendering the grid...", spinner="dots") as status:
        def on_cell(done: int, total: int) -> None:
            status.update(f"rendering the grid: {done}/{total} cells")

        picture = make_sweep(pipelines, request, columns.values, y=y_axis, on_cell=on_cell)
    save_png(picture, out)
    err.print(f"wrote {out}", highlight=False)


@app.command()
@_one_line_errors
def info(image: Annotated[Path, typer.Argument(help="A PNG/JPEG/WebP written by depth2img or AUTOMATIC1111.")]) -> None:
    """Print the generation parameters stored in an image."""
    from .errors import InvalidImageError
    from .infotext import parse_infotext, read_infotext

    text = read_infotext(image)
    if text is None:
        raise InvalidImageError(f"'{image}' carries no generation parameters")
    typer.echo(text)
    typer.echo("")
    for key, value in parse_infotext(text).items():
        typer.echo(f"{key}: {value}")


def parse_pair(option: str, text: str) -> tuple[float, float]:
    """'2,98' → (2.0, 98.0), with a one-line error naming the option."""
    from .errors import InvalidRequestError

    parts = [part.strip() for part in text.split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise InvalidRequestError(f"{option} must be two numbers like 2,98, got {text!r}") from None
    return low, high


def output_paths(out: Path, count: int) -> list[Path]:
    """OUT.png for one image; OUT-0.png, OUT-1.png... for a batch."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


def _load(model: str, device: str, dtype: str, depth_model: str | None):
    import diffusers
    import transformers

    from .pipeline import load_pipeline

    # One spinner instead of the libraries' per-component "Loading weights" bars (CLI-only setting).
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    with err.status(f"loading {model}...", spinner="dots"):
        return load_pipeline(model, device=device, dtype=dtype, depth_model=depth_model, cache_dir=checkpoint_cache())


def checkpoint_cache() -> Path | None:
    """Where a .ckpt is converted once to safetensors: $DEPTH2IMG_CACHE (empty: off), else ~/.cache/depth2img."""
    import os

    configured = os.environ.get("DEPTH2IMG_CACHE")
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    return Path.home() / ".cache" / "depth2img" / "checkpoints"


def _run_with_progress(pipe: Any, request: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("denoising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("denoise", total=None)

        def on_step(info: Any) -> None:
            progress.update(task, total=info.total, completed=info.step + 1)

        return pipe.generate(request, callback=on_step)


def _write_depth(depth: Any, path: Path) -> None:
    from .outputs import atomic_output, save_image as save_png

    if path.suffix.lower() == ".npy":
        import numpy as np

        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, depth.normalized[0, 0].cpu().numpy())
    else:
        save_png(depth.to_image("raw", bits=16), path)


# Commands that live beside their concern (model conversion and listing); registering them only adds
# entries to this module's own Typer app.
from .cli_models import register as _register_model_commands  # noqa: E402

_register_model_commands(app)


def main() -> None:
    app(prog_name="depth2img")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
