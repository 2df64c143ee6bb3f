"""The released SDK's SSE parsing approach, re-implemented from its documented
algorithm (API.md, usage guide) for benchmark comparison only."""

import json
from typing import Any, Iterator, List, Optional


def parse_chunk(chunk: str) -> Optional[Any]:
    data = chunk[6:]
    if data.strip() == "[DONE]":
        return None
    try:
        delta = json.loads(data)["choices"][0]["delta"]
        if "content" in delta:
            return delta["content"]
        return None
    except Exception:
        return None


def parse_stream(data: str) -> str:
    out = ""
    for piece in data.split("\n\n"):
        if piece.startswith("data: "):
            c = parse_chunk(piece)
            if c:
                out += c
    return out


def parse_stream_generator(data: str) -> Iterator[Any]:
    for piece in data.split("\n\n"):
        if piece.startswith("data: "):
            c = parse_chunk(piece)
            if c:
                yield c


class NaiveIncremental:
    """What a released-SDK user does without an incremental decoder: append
    each chunk to a text buffer and re-split the whole buffer on every chunk
    (quadratic in the stream length)."""

    def __init__(self) -> None:
        self.raw = b""
        self.emitted = 0

    def feed(self, chunk: bytes) -> List[str]:
        self.raw += chunk
        pieces = self.raw.decode("utf-8", "replace").split("\n\n")[:-1]
        out: List[str] = []
        for piece in pieces[self.emitted :]:
            if piece.startswith("data: "):
                c = parse_chunk(piece)
                if c:
                    out.append(c)
        self.emitted = len(pieces)
        return out
