"""A1111's prompt encoding on any CLIP-style text encoder: 75-token chunks and emphasis.

Like A1111's ``modules/sd_hijack_clip.py`` (FrozenCLIPEmbedderWithCustomWords):

- the parsed prompt (:func:`~.parser.parse_prompt_attention`) is tokenized piece by piece, without
  start/end tokens; each token carries its piece's weight;
- tokens are filled into chunks of 75; ``BREAK`` closes the current chunk; when a chunk is full and
  its last comma is at most ``comma_backtrack`` (20) tokens back, the words after that comma move to
  the next chunk (A1111's "comma padding backtrack");
- each chunk becomes ``[start] + 75 tokens + [end]``: what is short of 75 is end-of-text, and
  everything after the first end token is the tokenizer's pad token (A1111 does this for SD2, whose
  pad differs; for SD1 pad = end, the same thing). That is exactly the tokenizer's own
  ``padding="max_length"`` output, so a short prompt gives the ids it always gave;
- each chunk is encoded alone; textual-inversion vectors replace the token embeddings at their
  positions; then the hidden states are multiplied by the token weights and scaled back to the
  chunk's original mean ("Original" emphasis); chunks are concatenated: ``(1, 77 * n, D)``.

:func:`encode_text` keeps the plain path (one tokenizer call, the encoder's output untouched) for a
prompt without syntax, embeddings or more than 75 tokens, so such a prompt is bit-identical to
before and to diffusers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidRequestError
from .parser import parse_prompt_attention

CHUNK = 75  # prompt tokens per chunk; +2 for start and end = the encoder's 77 positions
COMMA_BACKTRACK = 20  # A1111's default for "comma padding backtrack"
MAX_CHUNKS = 20  # 1,500 tokens: a bound on encoder work per prompt; beyond it tokens are dropped (noted)


@dataclass
class Chunk:
    """77 token ids, their weights, and (position, vectors) textual-inversion fixes."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, torch.Tensor]] = field(default_factory=list)


@dataclass
class Tokenized:
    chunks: list[Chunk]
    used_embeddings: list[str]  # names, in order of first use
    dropped: int = 0  # prompt tokens beyond MAX_CHUNKS


def tokenize_prompt(
    tokenizer: Any, text: str, embeddings: Any = None, *, comma_backtrack: int = COMMA_BACKTRACK,
    max_chunks: int = MAX_CHUNKS,
) -> Tokenized:
    """Split an A1111 prompt into 77-token chunks (see the module docstring)."""
    parsed = parse_prompt_attention(text)
    for piece, weight in parsed:
        if not math.isfinite(weight):
            raise InvalidRequestError(f"prompt weight of {piece!r} is not a finite number ({weight})")
    pieces = tokenizer([t for t, _ in parsed], add_special_tokens=False, truncation=False, verbose=False).input_ids
    comma = tokenizer.get_vocab().get(",</w>")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    chunks: list[Chunk] = []
    used: list[str] = []
    current = Chunk()
    last_comma = -1

    def close_chunk() -> None:
        nonlocal current, last_comma
        body = current.tokens + [eos] * (CHUNK - len(current.tokens))
        first_end = body.index(eos) if eos in body else CHUNK
        ids = [bos] + body[:first_end] + [eos] + [pad] * (CHUNK - first_end)
        weights = [1.0] + current.weights + [1.0] * (CHUNK + 1 - len(current.weights))
        chunks.append(Chunk(ids, weights, current.fixes))
        current, last_comma = Chunk(), -1

    for ids, (piece, weight) in zip(pieces, parsed):
        if (piece, weight) == ("BREAK", -1.0):
            close_chunk()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == comma:
                last_comma = len(current.tokens)
            elif comma_backtrack and len(current.tokens) == CHUNK and last_comma != -1 \
                    and CHUNK - last_comma <= comma_backtrack:
                cut = last_comma + 1
                moved_tokens, moved_weights = current.tokens[cut:], current.weights[cut:]
                current.tokens, current.weights = current.tokens[:cut], current.weights[:cut]
                fixes = current.fixes
                current.fixes = [f for f in fixes if f[0] < cut]
                close_chunk()
                current.tokens, current.weights = moved_tokens, moved_weights
                current.fixes = [(p - cut, v) for p, v in fixes if p >= cut]
            if len(current.tokens) == CHUNK:
                close_chunk()
            found = embeddings.find_at(ids, position) if embeddings is not None else None
            if found is None:
                current.tokens.append(token)
                current.weights.append(weight)
                position += 1
                continue
            name, vectors, length = found
            if len(vectors) > CHUNK:
                raise InvalidRequestError(f"embedding {name!r} has {len(vectors)} vectors; at most {CHUNK} fit a chunk")
            if len(current.tokens) + len(vectors) > CHUNK:
                close_chunk()
            current.fixes.append((len(current.tokens), vectors))
            current.tokens += [pad if pad != eos else bos] * len(vectors)  # placeholders, replaced by the vectors
            current.weights += [weight] * len(vectors)
            position += length
            if name not in used:
                used.append(name)
    if current.tokens or not chunks:
        close_chunk()
    dropped = sum(sum(1 for t in c.tokens[1:] if t not in (bos, eos, pad)) for c in chunks[max_chunks:])
    return Tokenized(chunks[:max_chunks], used, dropped)


def needs_chunking(tokenizer: Any, text: str, embeddings: Any = None) -> bool:
    """False when the plain path gives A1111's result: no syntax, no embedding, at most 75 tokens."""
    if parse_prompt_attention(text) != [(text, 1.0)]:
        return True
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    if len(ids) > CHUNK:
        return True
    return embeddings is not None and any(embeddings.find_at(ids, i) is not None for i in range(len(ids)))


def encode_chunks(text_encoder: Any, chunks: Sequence[Chunk], device: Any, *, mask: bool = False) -> torch.Tensor:
    """Encode each chunk, apply its fixes and weights with mean restoration; ``(1, 77 * n, D)``."""
    outputs = []
    for chunk in chunks:
        ids = torch.tensor([chunk.tokens], device=device)
        attention = torch.ones_like(ids) if mask else None
        if chunk.fixes:
            with _embedding_fixes(text_encoder, chunk.fixes):
                z = text_encoder(ids, attention_mask=attention)[0]
        else:
            z = text_encoder(ids, attention_mask=attention)[0]
        outputs.append(apply_emphasis(z, torch.tensor(chunk.weights, dtype=z.dtype, device=z.device)))
    return torch.cat(outputs, dim=1)


def apply_emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis on ``z`` (1, 77, D): multiply each position by its weight, then
    scale the whole chunk so its mean is what it was. All weights 1: ``z`` unchanged."""
    if bool((weights == 1).all()):
        return z
    original_mean = z.mean()
    weighted = z * weights[None, :, None]
    return weighted * (original_mean / weighted.mean())


class _embedding_fixes:
    """For one encoder call: the token embeddings at the fixes' positions are the given vectors
    (A1111's EmbeddingsWithFixes), through a forward hook removed afterwards."""

    def __init__(self, text_encoder: Any, fixes: list[tuple[int, torch.Tensor]]):
        self.layer, self.fixes, self.handle = text_encoder.get_input_embeddings(), fixes, None

    def _hook(self, module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for offset, vectors in self.fixes:
            output[0, 1 + offset : 1 + offset + len(vectors)] = vectors.to(output.device, output.dtype)
        return output

    def __enter__(self) -> None:
        self.handle = self.layer.register_forward_hook(self._hook)

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def pad_to_same_length(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make prompt and negative prompt the same number of chunks by appending the empty prompt's
    encoding (A1111's "pad prompt/negative prompt" option), so guidance batches them together."""
    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([t, empty.repeat(t.shape[0], n // empty.shape[1], 1)], dim=1) if n > 0 else t

    difference = cond.shape[1] - uncond.shape[1]
    return pad(cond, -difference), pad(uncond, difference)
