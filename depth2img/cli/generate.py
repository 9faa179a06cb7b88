"""``depth2img generate``: options (from the request spec) → GenerationRequest → files.

Order matters for the user's time: scalar options are validated first (milliseconds, no heavy
imports), then every output target is checked, then the inputs are decoded, and only then do the
weights load. A write that fails after the generation falls back to a file beside the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..request import PARAMS, GenerationRequest, flag
from .handling import one_line_errors, say, warn
from .loading import load, run_with_progress
from .options import ControlNetOpt, DepthModelOpt, DeviceOpt, DtypeOpt, CompileOpt, EmbeddingsDirOpt, LoraDirOpt, LowMemoryOpt, ModelOpt, ThreadsOpt, decode_inputs, request_options, to_request_fields

SPEED_FIELDS = tuple(n for n, p in PARAMS.items() if p.group == "speed")
GENERATE_FIELDS = (
    "image", "prompt", "negative_prompt", "styles", "loras", "strength", "steps", "guidance_scale", "seed", "scheduler", "batch_size",
    "width", "height", "resize_mode", "depth_map", "eta", "mask", "mask_blur", "masked_content", "inpaint_area",
    "padding", "invert_mask", "invert_depth", "depth_clip", "depth_strength", "depth_end",
    "control_weight", "control_start", "control_end", "control_mode", "control_resize", "processor_res", "pixel_perfect",
    *SPEED_FIELDS,  # preset and the fast-mode knobs: every field of the "speed" group, from the spec
)


@one_line_errors
@request_options(GENERATE_FIELDS)
def generate(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output image: .png (A1111 'parameters' infotext), .jpg or .webp (infotext in EXIF).")] = Path("out.png"),
    save_depth: Annotated[
        Optional[Path],
        typer.Option("--save-depth", help="Also write the depth used: .png = the estimate, 16-bit, white = near; .npy = the exact normalised map fed to the UNet."),
    ] = None,
    depth_model: DepthModelOpt = None,
    styles_file: Annotated[Optional[Path], typer.Option("--styles-file", help="A1111 styles.csv (name, prompt, negative_prompt) for --style.")] = None,
    controlnet: ControlNetOpt = None,
    embeddings_dir: EmbeddingsDirOpt = None,
    lora_dir: LoraDirOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    low_memory: LowMemoryOpt = False,
    compile: CompileOpt = False,
    threads: ThreadsOpt = None,
    *,
    fields: dict[str, Any],
) -> None:
    """Make new pictures from a photo and a prompt, keeping the photo's depth."""
    from ..outputs import DEPTH_SUFFIXES, Target, batch_paths, check_targets

    request = GenerationRequest(**to_request_fields(fields)).validate(label=flag)
    paths = batch_paths(out, request.batch_size)
    check_targets([Target("--out", tuple(paths))] + ([Target("--save-depth", (save_depth,), DEPTH_SUFFIXES)] if save_depth else []))
    request = request.replace(**decode_inputs(to_request_fields(fields))).validate(label=flag)
    from ..prompts.styles import apply_styles, load_styles

    styles = load_styles(styles_file) if styles_file is not None else None
    apply_styles(request.prompt, request.negative_prompt, request.styles, styles)  # an unknown --style fails before loading

    if embeddings_dir is not None and not embeddings_dir.is_dir():
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"--embeddings-dir: folder not found: {embeddings_dir}")
    loras = None
    if lora_dir is not None or request.loras:  # an unknown --lora fails before loading
        from ..prompts.lora import LoraLibrary, requested

        loras = LoraLibrary(lora_dir) if lora_dir is not None else None
        requested("", "", request.loras, loras)
    pipe = load(model, device, dtype, depth_model, controlnet, low_memory=low_memory, threads=threads, compile=compile)
    pipe.loras = loras
    pipe.styles = styles
    if embeddings_dir is not None:
        from ..pipeline import set_embeddings

        set_embeddings(pipe, embeddings_dir)
    if save_depth is not None and not pipe.backend.uses_depth:
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"--save-depth: '{pipe.name}' is a plain img2img model and uses no depth map")
    result = run_with_progress(pipe, request)
    if request.seed in (None, -1):
        say(f"seed {result.seeds[0]}" + (f" (images use {result.seeds[0]}..{result.seeds[-1]})" if len(result.seeds) > 1 else ""))
    warn(result.warnings)
    write_results(result, paths, save_depth, control=pipe.backend.depth_at_pixels)


def write_results(result: Any, paths: list[Path], save_depth: Path | None, *, control: bool = False) -> None:
    """Write every picture (and the depth), never losing one: a failed write falls back beside the target."""
    from ..outputs import save_image, save_or_fall_back

    for picture, infotext, path in zip(result.images, result.infotexts, paths):
        written, problem = save_or_fall_back(lambda p, pic=picture, info=infotext: save_image(pic, p, infotext=info), path)
        warn([problem] if problem else [])
        say(f"wrote {written}")
    if save_depth is not None and result.depth_map is not None:
        written, problem = save_or_fall_back(lambda p: write_depth(result.depth_map, p, control=control), save_depth)
        warn([problem] if problem else [])
        say(f"wrote {written}")


def write_depth(depth: Any, path: Path, *, control: bool = False) -> None:
    """.npy: the exact normalised map the UNet got; .png: the raw estimate, 16-bit, white = near.
    ``control`` (ControlNet): the control image instead, at the output size ([0, 1] in .npy; 16-bit .png)."""
    from ..outputs import atomic_output, save_image

    if path.suffix.lower() == ".npy":
        import numpy as np

        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            normalized = depth.normalized[0, 0].cpu().numpy()
            np.save(handle, (normalized + 1) / 2 if control else normalized)
    elif control:  # the ControlNet's image: normalised at full size in float32, quantised only here
        save_image(depth.to_image("normalized", bits=16), path)
    else:
        save_image(depth.to_image("raw", bits=16), path)
