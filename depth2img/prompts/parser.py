"""A1111's prompt attention syntax, parsed as ``modules/prompt_parser.parse_prompt_attention`` does.

``(x)`` multiplies the attention of x by 1.1, ``[x]`` divides it by 1.1, ``(x:w)`` multiplies it by w;
brackets nest (multipliers multiply); ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters;
an unclosed bracket still applies to everything after it; a stray closing bracket is literal text;
``BREAK`` (upper case, a whole word) starts a new 75-token chunk. The result is a list of
``(text, weight)`` pairs with neighbouring equal weights merged, BREAK as ``("BREAK", -1.0)``.

Written from A1111's documented behaviour (its docstring's examples are tests/test_prompt_parser.py);
one deliberate difference: a weight A1111 cannot read (``(x:.)``, ``(x:1.2.3)``) makes A1111 raise,
here the ``:...)`` is kept as literal text.
"""

from __future__ import annotations

import re

ROUND = 1.1
SQUARE = 1 / 1.1
BREAK = ("BREAK", -1.0)

# One alternative per kind of piece, tried in order at each position.
_PIECE = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\]?)               # \( \) \[ \] \\ or a lone backslash
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)      # ":1.3)" closes a round bracket with a weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+ | :)
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)

# A1111's extra networks: <lora:name:weight>, <hypernet:...>; removed from the prompt before parsing.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """``'a (b:1.3) [c]'`` → ``[('a ', 1.0), ('b', 1.3), (' ', 1.0), ('c', 0.909...)]``."""
    pieces: list[list] = []  # [text, weight]
    round_open: list[int] = []  # index in pieces where each open "(" starts
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _PIECE.finditer(text):
        kind, value = match.lastgroup, match.group(0)
        weight = _number(match.group("weight")) if match.group("weight") is not None else None
        if kind == "escape":
            pieces.append([value[1:], 1.0])  # a lone backslash is dropped, as in A1111
        elif kind == "open":
            (round_open if value == "(" else square_open).append(len(pieces))
        elif kind == "weight" and weight is not None and round_open:
            scale(round_open.pop(), weight)
        elif value == ")" and round_open:
            scale(round_open.pop(), ROUND)
        elif value == "]" and square_open:
            scale(square_open.pop(), SQUARE)
        else:  # text, a stray closer, a ":" or an unreadable/unmatched ":w)"
            for i, part in enumerate(_BREAK.split(value)):
                if i:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])
    for start in round_open:
        scale(start, ROUND)
    for start in square_open:
        scale(start, SQUARE)

    merged: list[list] = []
    for piece in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(t, float(w)) for t, w in merged]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def has_attention_syntax(text: str) -> bool:
    """Whether parsing changes anything: otherwise the text goes to the tokenizer exactly as typed."""
    return parse_prompt_attention(text) != [(text, 1.0)]


def extract_extra_networks(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Remove ``<kind:arg:arg...>`` tags as A1111 does: ``('a <lora:x:0.7> b')`` → ``('a  b', [('lora', ['x', '0.7'])])``."""
    found: list[tuple[str, list[str]]] = []

    def take(match: re.Match[str]) -> str:
        found.append((match.group(1), match.group(2).split(":")))
        return ""

    return _EXTRA_NETWORK.sub(take, text), found
