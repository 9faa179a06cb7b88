"""Chunk padding when the pad token is not the end token: SD2's OpenCLIP tokenizer pads with "!" (id 0).

A1111's rule (modules/sd_hijack_clip.py, ``process_tokens``: "SD1 uses the same token for padding and end
of text, while SD2 uses different ones"): each chunk is ``[start] + 75 tokens + [end]``, the 75 filled up
with the end token, then every position after the *first* end token is set to the pad token. It is
written out here (``a1111_chunk``) and compared with depth2img's chunks, on the real CLIP BPE with SD2's
pad (and SD1's, where the rule changes nothing), and end to end on the tiny text encoder with a tokenizer
whose pad is "!" (id 0), as SD2's.
"""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from transformers import CLIPTokenizer

from depth2img import load_pipeline
from depth2img.models.clip_tokenizer import build_clip_tokenizer
from depth2img.prompts.weighting import tokenize_prompt

WORDS = "a quiet harbour town with red roofs and small boats under a pale morning sky "


def a1111_chunk(tokenizer, body):
    """One chunk by A1111's rule: start + body filled to 75 with end + end; after the first end, pad."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = [bos] + body + [eos] * (75 - len(body)) + [eos]
    first_end = ids.index(eos)
    return ids[: first_end + 1] + [pad] * (len(ids) - first_end - 1)


def a1111_chunks(tokenizer, text):
    """A prompt without syntax or commas: its tokens cut into 75s."""
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    return [a1111_chunk(tokenizer, tokens[i : i + 75]) for i in range(0, max(len(tokens), 1), 75)]


@pytest.mark.parametrize("pad", ["!", "<|endoftext|>"])
def test_chunks_follow_a1111s_pad_rule(pad):
    tokenizer = build_clip_tokenizer(pad_token=pad)
    if pad == "!":
        assert tokenizer.pad_token_id == 0 != tokenizer.eos_token_id  # SD2's tokenizer, as the hub's says
    for text in ("a cat", WORDS * 6, "", "wow!!! a <|endoftext|> inside the text"):
        chunks = [c.tokens for c in tokenize_prompt(tokenizer, text).chunks]
        assert chunks == a1111_chunks(tokenizer, text), text
    long = [c.tokens for c in tokenize_prompt(tokenizer, WORDS * 6).chunks]
    assert len(long) == 2 and long[1].count(tokenizer.pad_token_id) >= 1 and all(len(c) == 77 for c in long)
    # a short prompt is the tokenizer's own max_length padding (the plain path's ids)
    assert tokenize_prompt(tokenizer, "a cat").chunks[0].tokens == tokenizer(
        "a cat", padding="max_length", max_length=77).input_ids


def test_break_and_weights_pad_each_chunk_with_pad():
    tokenizer = build_clip_tokenizer(pad_token="!")
    got = [c.tokens for c in tokenize_prompt(tokenizer, "a (red:1.3) house BREAK [a boat]").chunks]
    first = tokenizer("a ", add_special_tokens=False).input_ids + tokenizer("red", add_special_tokens=False).input_ids \
        + tokenizer(" house", add_special_tokens=False).input_ids
    second = tokenizer("a boat", add_special_tokens=False).input_ids
    assert got == [a1111_chunk(tokenizer, first), a1111_chunk(tokenizer, second)]


@torch.no_grad()
def test_sd2_style_pad_end_to_end_on_the_tiny_encoder():
    pipe = load_pipeline("tiny")
    folder = resources.files("depth2img") / "data" / "tiny_tokenizer"
    pipe.tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!",
                                   model_max_length=77)
    assert pipe.tokenizer.pad_token_id == 0 != pipe.tokenizer.eos_token_id
    text = "a cat on a mat " * 12  # > 75 byte-level tokens: the chunked path
    expected = torch.cat([pipe.text_encoder(torch.tensor([ids]))[0] for ids in a1111_chunks(pipe.tokenizer, text)], 1)
    got = pipe._encode_text(text, "prompt", [])
    assert got.shape[1] == expected.shape[1] > 77
    assert torch.equal(got, expected)
