"""The released SDK's SSEParser, re-implemented from its documented algorithm.

Test oracle only: ours must return the same wherever this returns content.
"""

import json
from typing import Any, Iterator


def parse_chunk(chunk: str) -> Any:
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


def json_content(text: str) -> Any:
    """json.loads + the released lookup: the reference for extract_delta."""
    try:
        delta = json.loads(text)["choices"][0]["delta"]
        if "content" in delta:
            return delta["content"]
        return None
    except Exception:
        return None
