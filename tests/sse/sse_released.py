"""The released SDK's SSEParser, re-implemented from its documented algorithm in
vastar_fast/benchmarks/released_sse.py (one copy serves the benchmarks and the tests).

Test oracle only: ours must return the same wherever this returns content.
"""

import json
from typing import Any

from vastar_fast.benchmarks.released_sse import parse_chunk, parse_stream, parse_stream_generator

__all__ = ["json_content", "parse_chunk", "parse_stream", "parse_stream_generator"]


def json_content(text: str) -> Any:
    """json.loads + the released lookup: the reference for extract_delta."""
    try:
        delta = json.loads(text)["choices"][0]["delta"]
        if "content" in delta:
            return delta["content"]
        return None
    except Exception:
        return None
