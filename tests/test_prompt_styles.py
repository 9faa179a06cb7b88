"""A1111's styles.csv: {prompt} placeholder, else appended after ", "; order; unknown names refused."""

from __future__ import annotations

import pytest

from depth2img.errors import InvalidRequestError
from depth2img.prompts.styles import apply_styles, load_styles

CSV = '''name,prompt,negative_prompt
cinematic,"cinematic still of {prompt}, film grain","cartoon, {prompt}"
4k,"4k, detailed",blurry
empty,,
'''


@pytest.fixture
def styles(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8")
    return load_styles(path)


def test_placeholder_and_append(styles):
    assert apply_styles("a cat", "ugly", ["cinematic"], styles) == ("cinematic still of a cat, film grain", "cartoon, ugly")
    assert apply_styles("a cat", "", ["4k"], styles) == ("a cat, 4k, detailed", "blurry")
    assert apply_styles("", "", ["4k"], styles) == ("4k, detailed", "blurry")
    assert apply_styles("a cat ", "x", ["empty"], styles) == ("a cat", "x")


def test_order_matters(styles):
    assert apply_styles("a cat", "", ["4k", "cinematic"], styles) == \
        ("cinematic still of a cat, 4k, detailed, film grain", "cartoon, blurry")
    assert apply_styles("a cat", "", ["cinematic", "4k"], styles) == \
        ("cinematic still of a cat, film grain, 4k, detailed", "cartoon,, blurry")  # A1111 strips "cartoon, " before the ", "


def test_unknown_and_bad_files(styles, tmp_path):
    with pytest.raises(InvalidRequestError, match="unknown style 'nope'; styles: 4k, cinematic, empty"):
        apply_styles("a", "", ["nope"], styles)
    with pytest.raises(InvalidRequestError, match="none loaded"):
        apply_styles("a", "", ["4k"], None)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidRequestError, match="not a styles.csv"):
        load_styles(bad)
    with pytest.raises(InvalidRequestError, match="cannot read the styles file"):
        load_styles(tmp_path / "missing.csv")


def test_cli_style_reaches_the_infotext(tmp_path):
    """--style NAME (repeatable) with --styles-file: the styled prompt and the Styles key in the PNG."""
    from typer.testing import CliRunner

    from depth2img.cli import app
    from depth2img.infotext import parse_infotext, read_infotext

    (tmp_path / "styles.csv").write_text(CSV, encoding="utf-8")
    out = tmp_path / "o.png"
    depth = tmp_path / "d.npy"
    import numpy as np

    np.save(depth, np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32))
    args = ["generate", "--model", "tiny", "--depth", str(depth), "--width", "32", "--height", "32", "--steps", "2",
            "--seed", "1", "-p", "a cat", "--styles-file", str(tmp_path / "styles.csv"), "-o", str(out)]
    result = CliRunner().invoke(app, args + ["--style", "cinematic", "--style", "4k"])
    assert result.exit_code == 0, result.output
    info = parse_infotext(read_infotext(out))
    assert info["Prompt"] == "cinematic still of a cat, film grain, 4k, detailed"
    assert info["Negative prompt"] == "cartoon,, blurry"
    assert info["Styles"] == "cinematic, 4k"
    result = CliRunner().invoke(app, args + ["--style", "nope"])
    assert result.exit_code == 2 and "unknown style 'nope'" in result.output
