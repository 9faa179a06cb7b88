"""Issue 8: each parameter declared once; A1111 names in one place; extra validated up front."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import depth2img
from depth2img import a1111
from depth2img.errors import InvalidRequestError
from depth2img.request import PARAMS, GenerationRequest, param, spec_of

PACKAGE = Path(depth2img.__file__).parent


def test_adding_a_parameter_is_one_edit():
    """A subclass adds one field with its Param; the CLI option and the validation follow from it."""
    from depth2img.cli.options import request_options

    @dataclasses.dataclass
    class Extended(GenerationRequest):
        sharpness: float = param(0.5, "float", "How crisp the edges are.", low=0.0, high=2.0, group="extra")

    params, _ = spec_of(Extended)
    app = typer.Typer()
    seen: dict[str, Any] = {}

    @app.command()
    @request_options(("prompt", "image", "sharpness"), Extended)
    def make(*, fields: dict[str, Any]) -> None:
        seen.update(fields)
        try:
            Extended(**fields).validate(label=lambda f: "--" + f.replace("_", "-"))
        except InvalidRequestError as error:
            typer.echo(f"error: {error}")
            raise typer.Exit(2) from None

    help_text = CliRunner().invoke(app, ["--help"]).output
    assert "--sharpness" in help_text and "How crisp the edges are. Range 0..2." in help_text
    assert "[default: 0.5]" in help_text
    bad = CliRunner().invoke(app, ["--prompt", "x", "--image", "a.png", "--sharpness", "5"])
    assert bad.exit_code == 2 and "--sharpness must be in [0, 2], got 5" in bad.output
    good = CliRunner().invoke(app, ["--prompt", "x", "--image", "a.png", "--sharpness", "1.5"])
    assert good.exit_code == 0 and seen["sharpness"] == 1.5
    with pytest.raises(InvalidRequestError, match="sharpness must be in"):
        Extended(prompt="x", image="a.png", sharpness=-1.0).validate()
    assert params["sharpness"].group == "extra" and "sharpness" not in PARAMS  # the base spec is untouched


def test_every_field_is_declared_with_help_and_the_cli_shows_it():
    from depth2img.cli import app
    from depth2img.cli.generate import GENERATE_FIELDS
    from depth2img.request import flag

    assert set(PARAMS) == {f.name for f in dataclasses.fields(GenerationRequest)}
    help_text = CliRunner().invoke(app, ["generate", "--help"]).output
    for name in GENERATE_FIELDS:
        assert PARAMS[name].help and flag(name) in help_text
    assert set(PARAMS) - set(GENERATE_FIELDS) == {"extra"}  # everything else reaches the CLI


def test_choices_are_the_a1111_tables_keys_and_the_sampler_registry():
    from depth2img.sampling import SCHEDULERS

    assert set(PARAMS["scheduler"].choices) == set(a1111.SAMPLERS) == set(SCHEDULERS)
    assert set(PARAMS["resize_mode"].choices) == set(a1111.RESIZE_MODES)
    assert set(PARAMS["masked_content"].choices) == set(a1111.MASKED_CONTENT)
    assert set(PARAMS["inpaint_area"].choices) == set(a1111.INPAINT_AREAS)


def test_a1111_codes_match_the_documented_api():
    """ux_anchors.md §2: resize_mode 0/1/2, inpainting_fill 0 fill 1 original 2 latent noise 3 latent nothing."""
    assert {k: v[0] for k, v in a1111.RESIZE_MODES.items()} == {"just_resize": 0, "crop_and_resize": 1, "resize_and_fill": 2}
    assert {v[0]: v[1] for v in a1111.MASKED_CONTENT.values()} == {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
    assert a1111.sampler_from_a1111("DPM++ 2M", "Karras") == "dpmpp_2m_karras"
    assert a1111.sampler_from_a1111("DPM++ 2M Karras") == "dpmpp_2m_karras"  # pre-1.9 combined label
    assert a1111.sampler_from_a1111("Euler a", "Automatic") == "euler_a"
    assert a1111.sampler_from_a1111("Heun") is None


# Strings only the A1111 table may spell: a second copy elsewhere is a second source of truth.
A1111_SPELLINGS = ["Crop and resize", "Resize and fill", "latent nothing", "latent noise", "Inpaint not masked",
                   "Whole picture", "Only masked", "DPM++ 2M", "Euler a", "PLMS", "My prompt is more important",
                   "ControlNet is more important", "Crop and Resize", "depth_midas"]


def test_no_other_module_spells_a1111_names_or_codes():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "a1111.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may cite A1111's labels
        offenders += [f"{path.relative_to(PACKAGE)}: {s!r}" for s in A1111_SPELLINGS if f'"{s}"' in code]
    assert offenders == []


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"Seed": 5}, "'Seed' is written by depth2img itself"),
        ({"Steps": 1}, "'Steps' is written by depth2img itself"),
        ({"Negative prompt": "x"}, "cannot be overridden"),
        ({"bad,key": 1}, "not a valid infotext key"),
        ({"Note": object()}, "must be text or a number"),
        ([("a", 1)], "must be a mapping"),
    ],
)
def test_extra_is_validated_before_any_work(extra, message):
    with pytest.raises(InvalidRequestError, match=message):
        GenerationRequest(prompt="x", image="a.png", extra=extra).validate()


def test_extra_reaches_the_infotext(tiny_pipe):
    from depth2img.infotext import parse_infotext

    from .conftest import photo

    result = tiny_pipe.generate(prompt="x", image=photo("astronaut", (32, 32)), steps=2, seed=1, extra={"Note": "hi"})
    fields = parse_infotext(result.infotexts[0])
    assert fields["Note"] == "hi" and fields["Seed"] == "1"


def test_request_module_stays_light():
    """Validation needs no torch: request.py (and what it imports) must not pull the engine in."""
    import subprocess
    import sys

    code = "import sys, depth2img.request; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
