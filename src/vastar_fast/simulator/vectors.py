"""Deterministic embedding vectors for the simulator's embeddings endpoints.

A text's vector is the normalised sum of one pseudo-random vector per word
(lower-cased ``\\w+`` runs), each drawn from SHAKE-256 of the word. So the same
text always gives the same vector, in every process and on every platform,
and texts that share words have a positive cosine similarity: enough for a
retrieval test to rank an overlapping document above an unrelated one.
"""

from __future__ import annotations

import base64
import hashlib
import math
import operator
import re
import struct
from functools import lru_cache
from typing import List, Tuple

__all__ = ["embed", "to_base64"]

_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=4096)
def _word_vector(word: str, dims: int) -> Tuple[int, ...]:
    raw = hashlib.shake_256(word.encode("utf-8")).digest(2 * dims)
    return struct.unpack(f"<{dims}h", raw)


@lru_cache(maxsize=1024)
def _embed(text: str, dims: int) -> Tuple[float, ...]:
    # Integer sums through map() and 7-decimal quantisation by int(): round() per
    # element cost more than everything else together (docs/decisions.md); numpy is
    # not a dependency of vastar_fast.
    words = _WORD_RE.findall(text.lower()) or [text]
    acc = _word_vector(words[0], dims)
    for word in words[1:]:
        acc = tuple(map(operator.add, acc, _word_vector(word, dims)))
    norm = math.sqrt(sum(map(operator.mul, acc, acc))) or 1.0
    scale = 1e7 / norm
    return tuple([int(a * scale) / 1e7 for a in acc])


def embed(text: str, dims: int) -> List[float]:
    """The unit-length vector of ``text`` with ``dims`` dimensions."""
    return list(_embed(text, dims))


def to_base64(vector: List[float]) -> str:
    """OpenAI's ``encoding_format: "base64"``: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
