"""A1111's emphasis and chunking on the tiny CLIP text encoder. Every expected tensor is computed
here from the tokenizer and text encoder directly (A1111's rules written out), never by
depth2img.prompts.weighting."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from depth2img.errors import InvalidRequestError

FAST = dict(steps=2, seed=0, scheduler="ddim")


def plain(pipe, text):
    """diffusers' encoding: one call, padded to 77 (what depth2img did before issue 13)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


def ids_of(pipe, pieces):
    """BOS + the pieces tokenized one by one (A1111) + EOS + pad to 77."""
    tok = pipe.tokenizer
    body = [t for p in pieces for t in tok(p, add_special_tokens=False).input_ids]
    ids = [tok.bos_token_id] + body + [tok.eos_token_id]
    return ids + [tok.pad_token_id] * (77 - len(ids)), body


@torch.no_grad()
def test_plain_prompt_bit_identical(tiny_pipe):
    for text in ("a photo of a cat", "", "a cat, 4k, highly detailed <b>"):
        assert torch.equal(tiny_pipe._encode_text(text, "prompt", []), plain(tiny_pipe, text))


@torch.no_grad()
def test_weight_one_equals_plain(tiny_pipe):
    for text, same in (("(cat:1.0)", "cat"), ("a (cat:1) sat", "a cat sat"), ("\\(cat\\)", "(cat)")):
        assert torch.equal(tiny_pipe._encode_text(text, "prompt", []), plain(tiny_pipe, same))


@torch.no_grad()
def test_weights_change_only_weighted_tokens_then_mean_restored(tiny_pipe):
    got = tiny_pipe._encode_text("a (cat:1.5) [sat]", "prompt", [])
    ids, _ = ids_of(tiny_pipe, ["a ", "cat", " ", "sat"])
    z = tiny_pipe.text_encoder(torch.tensor([ids]))[0]
    n_a = len(tiny_pipe.tokenizer("a ", add_special_tokens=False).input_ids)
    n_cat = len(tiny_pipe.tokenizer("cat", add_special_tokens=False).input_ids)
    n_sat = len(tiny_pipe.tokenizer("sat", add_special_tokens=False).input_ids)
    w = torch.ones(77)
    cat = slice(1 + n_a, 1 + n_a + n_cat)
    sat = slice(1 + n_a + n_cat, 1 + n_a + n_cat + n_sat)
    w[cat], w[sat] = 1.5, 1 / 1.1
    weighted = z * w[None, :, None]
    expected = weighted * (z.mean() / weighted.mean())
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert torch.isclose(got.mean(), z.mean(), rtol=1e-5, atol=1e-6)  # the mean is restored
    before_restoration = got * (weighted.mean() / z.mean())
    changed = (before_restoration - z).abs().amax(dim=-1)[0] > 1e-5
    assert changed.nonzero().flatten().tolist() == list(range(cat.start, sat.stop))  # only cat and sat


@torch.no_grad()
def test_150_tokens_make_two_chunks(tiny_pipe):
    tok = tiny_pipe.tokenizer
    text = "a " * 150
    assert len(tok(text, add_special_tokens=False).input_ids) == 150
    notes: list[str] = []
    got = tiny_pipe._encode_text(text, "prompt", notes)
    assert got.shape == (1, 154, tiny_pipe.text_encoder.config.hidden_size)
    assert notes == []  # nothing is dropped: no truncation note
    assert tiny_pipe._encode_text("a " * 76, "prompt", []).shape[1] == 154  # 76 tokens: already two chunks
    half = plain(tiny_pipe, "a " * 75)
    assert torch.equal(got[:, :77], half) and torch.equal(got[:, 77:], half)


@torch.no_grad()
def test_break_and_comma_backtrack(tiny_pipe):
    got = tiny_pipe._encode_text("cat BREAK dog", "prompt", [])
    assert torch.equal(got, torch.cat([plain(tiny_pipe, "cat"), plain(tiny_pipe, "dog")], dim=1))
    # 70 tokens, a comma, then 10: the chunk fills at 75 with the comma 5 back (<= 20), so the
    # 4 words after the comma move to the second chunk with the other 6.
    text = "a " * 70 + ", " + "b " * 10
    got = tiny_pipe._encode_text(text, "prompt", [])
    expected = torch.cat([plain(tiny_pipe, "a " * 70 + ","), plain(tiny_pipe, "b " * 10)], dim=1)
    assert torch.equal(got, expected)
    # a comma too far back (30 > 20): plain cut at 75
    text = "a " * 45 + ", " + "b " * 40
    got = tiny_pipe._encode_text(text, "prompt", [])
    expected = torch.cat([plain(tiny_pipe, "a " * 45 + ", " + "b " * 29), plain(tiny_pipe, "b " * 11)], dim=1)
    assert torch.equal(got, expected)


@torch.no_grad()
def test_negative_prompt_padded_with_empty_prompt(tiny_pipe):
    cond, uncond = tiny_pipe.encode_prompt("a " * 150, "blurry", 2, True, [])
    assert cond.text.shape[:2] == uncond.text.shape[:2] == (2, 154)
    assert torch.equal(uncond.text[:1], torch.cat([plain(tiny_pipe, "blurry"), plain(tiny_pipe, "")], dim=1))
    cond, uncond = tiny_pipe.encode_prompt("cat", "x BREAK y BREAK z", 1, True, [])
    assert torch.equal(cond.text, torch.cat([plain(tiny_pipe, "cat"), plain(tiny_pipe, ""), plain(tiny_pipe, "")], dim=1))


@torch.no_grad()
def test_generate_long_prompt_no_warning_and_weights_matter(tiny_pipe):
    depth = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)  # depth only: no DPT run
    FAST_D = dict(FAST, depth_map=depth, width=32, height=32)
    result = tiny_pipe.generate(prompt="a " * 150, **FAST_D)
    assert result.warnings == []
    base, same, heavy = (np.asarray(tiny_pipe.generate(prompt=p, **FAST_D).images[0])
                         for p in ("cat", "(cat:1.0)", "(cat:1.2)"))
    assert np.array_equal(base, same) and not np.array_equal(base, heavy)


def test_huge_prompt_bounded_and_bad_weights_refused(tiny_pipe):
    notes: list[str] = []
    with torch.no_grad():
        got = tiny_pipe._encode_text("a " * 2000, "prompt", notes)
    assert got.shape[1] == 77 * 20
    assert len(notes) == 1 and re.match(r"prompt is longer than 20 chunks of 75 tokens: the last 500 tokens", notes[0])
    with pytest.raises(InvalidRequestError, match="not a finite number"):
        tiny_pipe._encode_text("(a:" + "9" * 400 + ")", "prompt", [])
