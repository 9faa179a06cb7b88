"""The CLIP BPE tokenizer, built offline from the vocabulary shipped in ``depth2img/data/clip``.

``bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's byte-level BPE merge list (MIT), taken unchanged from the
``open_clip_torch`` 3.3.0 wheel (MIT; see ``data/clip/LICENSE`` and ``data/clip/README.md``). The vocabulary is
rebuilt the way open_clip's ``SimpleTokenizer`` does (256 byte symbols, the same with ``</w>``, 48,894 merges,
then ``<|startoftext|>`` 49406 and ``<|endoftext|>`` 49407 = 49,408 tokens) and handed to transformers'
``CLIPTokenizer``. SD2 (OpenCLIP) pads with id 0, which is ``"!"``, as the hub tokenizer's ``pad_token`` says;
SD1 pads with ``<|endoftext|>``.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], tuple[str, ...]]:
    """(token -> id, merges as ``"a b"`` strings) of the CLIP BPE."""
    raw = resources.files("depth2img").joinpath("data/clip/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = tuple(lines)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def build_clip_tokenizer(pad_token: str = "!", model_max_length: int = 77) -> Any:
    """A transformers ``CLIPTokenizer`` with no file or network access."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], pad_token=pad_token, model_max_length=model_max_length
    )
