"""A1111's attention syntax: the examples of parse_prompt_attention's docstring (A1111
modules/prompt_parser.py), then adversarial text. Expected values are A1111's documented outputs or
worked out by hand from its rules, never produced by the code under test."""

from __future__ import annotations

import math
import time

import pytest

from depth2img.prompts.parser import extract_extra_networks, has_attention_syntax, parse_prompt_attention


def close(got, expected):
    assert len(got) == len(expected), got
    for (text, weight), (etext, eweight) in zip(got, expected):
        assert text == etext
        assert math.isclose(weight, eweight, rel_tol=1e-12), (text, weight, eweight)


# A1111's docstring, verbatim input → output.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]


@pytest.mark.parametrize("text,expected", A1111_EXAMPLES)
def test_a1111_docstring_examples(text, expected):
    got = parse_prompt_attention(text)
    close(got, expected)
    # A1111 documents these exact floats (products in this order): bit-equal, not just close
    assert [w for _, w in got] == [w for _, w in expected]


def test_square_brackets_nesting_and_weights():
    close(parse_prompt_attention("a [b] [[c]]"), [("a ", 1.0), ("b", 1 / 1.1), (" ", 1.0), ("c", 1 / 1.1 / 1.1)])
    close(parse_prompt_attention("a (marble:1.3) statue, [background]"),
          [("a ", 1.0), ("marble", 1.3), (" statue, ", 1.0), ("background", 1 / 1.1)])
    close(parse_prompt_attention("((a:2):0.5)"), [("a", 1.0)])
    close(parse_prompt_attention("(a: 1.5 )"), [("a", 1.5)])  # spaces around the weight (A1111 1.6+)
    close(parse_prompt_attention("(a:-1)"), [("a", -1.0)])


def test_escapes():
    close(parse_prompt_attention("\\(a\\) \\[b\\] c\\\\d"), [("(a) [b] c\\d", 1.0)])
    close(parse_prompt_attention("a\\b"), [("ab", 1.0)])  # A1111 drops a lone backslash
    close(parse_prompt_attention("(a \\) b)"), [("a ) b", 1.1)])


def test_break():
    close(parse_prompt_attention("a BREAK b"), [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)])
    close(parse_prompt_attention("(a BREAK b)"), [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)])  # A1111 scales it too
    close(parse_prompt_attention("aBREAKb break"), [("aBREAKb break", 1.0)])  # whole word, upper case only


def test_unbalanced_and_stray():
    close(parse_prompt_attention("a) b] c"), [("a) b] c", 1.0)])
    close(parse_prompt_attention("[a (b"), [("a ", 1 / 1.1), ("b", 1.1 / 1.1)])
    close(parse_prompt_attention("a:1.2) b"), [("a:1.2) b", 1.0)])  # a weight with no open bracket is text
    close(parse_prompt_attention("(a:b)"), [("a:b", 1.1)])
    close(parse_prompt_attention(""), [("", 1.0)])
    close(parse_prompt_attention("()[]"), [("", 1.0)])
    # A1111 raises on a weight float() cannot read; here the text is kept (documented deviation)
    close(parse_prompt_attention("(a:.)"), [("a:.)", 1.1)])


def test_huge_weights_and_unicode():
    close(parse_prompt_attention("(a:1e5)"), [("a:1e5", 1.1)])  # no exponent in A1111's number pattern
    got = parse_prompt_attention("(a:" + "9" * 400 + ")")
    assert got == [("a", math.inf)]  # what float() gives; the encoder refuses it (test_prompt_weighting)
    close(parse_prompt_attention("(猫:1.2) café [🙂]"), [("猫", 1.2), (" café ", 1.0), ("🙂", 1 / 1.1)])


def test_long_prompt_is_fast_and_lossless():
    text = ("(word:1.1), [other] " * 100)[:2000]
    start = time.perf_counter()
    parsed = parse_prompt_attention(text)
    assert time.perf_counter() - start < 0.5
    assert "".join(t for t, _ in parsed) == text.replace("(", "").replace(")", "").replace(":1.1", "").replace("[", "").replace("]", "")
    deep = "(" * 1000 + "x" + ")" * 1000
    weight = 1.0
    for _ in range(1000):
        weight *= 1.1
    assert parse_prompt_attention(deep) == [("x", weight)]


def test_has_attention_syntax_and_extra_networks():
    assert not has_attention_syntax("a photo of a cat, 4k")
    assert has_attention_syntax("a (cat)")
    assert has_attention_syntax("a BREAK b")
    assert not has_attention_syntax("a <b> c")
    text, nets = extract_extra_networks("a <lora:film grain:0.7> cat <lora:x:1:te=0.5>")
    assert text == "a  cat "
    assert nets == [("lora", ["film grain", "0.7"]), ("lora", ["x", "1", "te=0.5"])]
