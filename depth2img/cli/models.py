"""``depth2img convert`` and ``depth2img models``: model files, not generation.

All work is in ``depth2img.models.convert`` / ``catalog``; this module only parses options and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .handling import one_line_errors, say

FORMATS = ("auto", "diffusers", "safetensors", "ckpt")


@one_line_errors
def convert_command(
    src: Annotated[Path, typer.Argument(help="A .ckpt/.safetensors checkpoint or a diffusers folder.")],
    out: Annotated[Path, typer.Argument(help="Output: a folder (diffusers) or a .safetensors/.ckpt file.")],
    half: Annotated[bool, typer.Option("--half", help="Write float16 weights.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="auto (from OUT's name), diffusers, safetensors or ckpt.")] = "auto",
    config: Annotated[Optional[Path], typer.Option("--config", help="Original .yaml: for a checkpoint SRC (default: the same-name .yaml beside it), or for a folder converted to a file whose layout is not the standard one.")] = None,
) -> None:
    """Convert between an original-layout checkpoint and a diffusers folder (depth model included).

    Pickle checkpoints are read with the weights-only loader; nothing in them runs."""
    from ..errors import InvalidRequestError
    from ..models.convert import convert, copy_sidecar_config
    from ..models.files import MODEL_SUFFIXES
    from ..outputs import Target, check_targets

    if fmt not in FORMATS:
        raise InvalidRequestError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt in ("safetensors", "ckpt") and out.suffix.lower() != f".{fmt}":
        out = out.with_name(out.name + f".{fmt}")
    if fmt == "diffusers" and out.suffix:
        raise InvalidRequestError(f"--format diffusers writes a folder; {out} looks like a file name")
    to_file = out.suffix.lower() in MODEL_SUFFIXES
    check_targets([Target("OUT", (out,), MODEL_SUFFIXES if to_file else (), folder=not to_file)])
    if Path(out).resolve() == Path(src).resolve():
        raise InvalidRequestError(f"OUT '{out}' is SRC itself: converting in place would destroy the source")
    result = convert(src, out, half=half, config=config)
    if src.is_file():
        copy_sidecar_config(src, result)
    say(f"wrote {result}")


@one_line_errors
def models_command(
    root: Annotated[Path, typer.Argument(help="A models folder (A1111 or ComfyUI root, or a folder of checkpoints).")] = Path("models"),
    with_hash: Annotated[bool, typer.Option("--hash", help="Compute A1111's short hash (reads every file once; remembered).")] = False,
    hf_cache: Annotated[bool, typer.Option("--hf-cache/--no-hf-cache", help="Also list diffusers models in the Hugging Face cache.")] = True,
) -> None:
    """List models: name, kind (depth/img2img), layout, size, yaml, and optionally the short hash; then the
    ControlNets (A1111 models/ControlNet, ComfyUI models/controlnet) as "name [hash]", A1111's old short hash;
    then LoRAs and embeddings (A1111's models/Lora and embeddings/, ComfyUI's models/loras and
    models/embeddings); --hash adds A1111's short hashes."""
    from rich.console import Console
    from rich.table import Table

    from ..errors import ModelLoadError
    from ..models.catalog import list_controlnets, list_models, short_hash
    from ..models.networks import list_networks

    cache_dir = hf_dir = None
    if hf_cache or with_hash:
        from huggingface_hub import constants

        hf_dir = Path(constants.HF_HUB_CACHE) if hf_cache else None
        cache_dir = Path(constants.HF_HOME) / "depth2img"
    if not root.is_dir():
        raise ModelLoadError(f"no models folder at {root}")
    entries = list_models(root, hf_cache=hf_dir)
    controlnets = list_controlnets(root)
    extra = list_networks(root)
    if not entries and not controlnets and not extra:
        say(f"no models found under {root}")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "layout", "size", "yaml") + (("hash",) if with_hash else ()):
        table.add_column(col)
    readable = [m for m in entries if not m.problem]
    for m in readable:
        row = [m.name, m.kind, m.layout, f"{m.size / 2**30:.2f} GB", m.config.name if m.config else ""]
        if with_hash:
            row.append(short_hash(m.path, cache_dir) if m.layout == "checkpoint" else "")
        table.add_row(*row)
    for n in extra:  # LoRAs and embeddings: the folder they are in is their layout
        if n.problem is None:
            row = [n.name, n.kind, n.path.parent.name, f"{n.size / 2**20:.1f} MB", ""]
            if with_hash:
                row.append(n.short_hash(cache_dir))
            table.add_row(*row)
    if readable or any(n.problem is None for n in extra):
        Console(soft_wrap=True).print(table)
    unreadable = [m for m in entries if m.problem] + [n for n in extra if n.problem]
    if unreadable:
        say(f"{len(unreadable)} unreadable file(s), not models:")
        for m in unreadable:
            say(f"  {m.name}: {m.problem}")
    if controlnets:
        from rich.markup import escape

        nets = Table(box=None, pad_edge=False, title="ControlNets", title_justify="left")
        for col in ("name", "layout", "size"):
            nets.add_column(col)
        for c in controlnets:
            nets.add_row(escape(c.title), c.layout, f"{c.size / 2**30:.2f} GB")
        Console(soft_wrap=True).print(nets)
