"""A1111's saved styles: ``styles.csv`` with the columns ``name, prompt, negative_prompt``.

A style's text contains ``{prompt}`` to say where the typed prompt goes; without it the style is
appended after ", " (A1111's ``modules/styles.py`` merge rule; an empty side adds no comma). Several
styles apply in the order given. The same for the negative prompt. The picture's infotext carries
the prompt with the styles applied (what A1111 writes) plus ``Styles: name, name`` so the names
survive a paste.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def load_styles(path: str | Path) -> dict[str, Style]:
    """Read a styles.csv (UTF-8, BOM allowed); later rows with the same name win, as in A1111."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            if reader.fieldnames is None or "name" not in reader.fieldnames:
                raise InvalidRequestError(f"{path}: not a styles.csv (needs the columns name, prompt, negative_prompt)")
            styles = {}
            for row in reader:
                name = (row.get("name") or "").strip()
                if name:
                    styles[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")
    except OSError as error:
        raise InvalidRequestError(f"cannot read the styles file {path}: {error.strerror or error}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"{path}: not a readable CSV file ({error})") from None
    return styles


def merge(style_text: str, text: str) -> str:
    """One style on one prompt: ``{prompt}`` replaced, else appended after ", "."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", text)
    return ", ".join(part for part in (text.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, names: tuple[str, ...] | list[str],
                 styles: dict[str, Style] | None) -> tuple[str, str]:
    """The prompt and negative prompt with the named styles applied in order."""
    for name in names:
        if not styles or name not in styles:
            known = ", ".join(sorted(styles)) if styles else "none loaded (give a styles file)"
            raise InvalidRequestError(f"unknown style {name!r}; styles: {known}")
        prompt = merge(styles[name].prompt, prompt)
        negative_prompt = merge(styles[name].negative_prompt, negative_prompt)
    return prompt, negative_prompt
