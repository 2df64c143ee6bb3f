"""Repeated parsing and decoding must not grow memory (bounded by bytes)."""

import gc
import json
import tracemalloc
from types import ModuleType


def test_no_growth_over_200k_iterations(twin: ModuleType) -> None:
    chunk = "data: " + json.dumps({"choices": [{"delta": {"content": "h\\u00e9 😀"}}]}) + "\n\n"
    raw = chunk.encode()
    dec = twin.SSEDecoder()

    def step() -> None:
        assert twin.parse_chunk(chunk) == "h\\u00e9 😀"
        twin.parse_stream(chunk)
        twin.extract_delta(raw)
        dec.feed_deltas(raw)

    for _ in range(1000):  # warm caches / free lists
        step()
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(200_000):
            step()
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert now - base < 256 * 1024, now - base
