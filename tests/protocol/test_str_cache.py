"""The compiled decoder's cache of short ASCII strings never changes what is decoded."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Tuple


def _payload(headers: dict) -> bytes:
    doc = {"status_code": 200, "headers": headers, "body": "b", "is_streaming": False}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_many_distinct_and_repeated_short_strings(twins: Tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = twins
    # 3,000 distinct names and values (far more than the cache's 256 slots, so entries
    # collide and get replaced), of every length up to past the cache's limit, each
    # decoded twice in a row and again later.
    names = [f"x-{i}-" + "k" * (i % 60) for i in range(3000)]
    payloads = [_payload({n: n[::-1], "content-type": "text/plain"}) for n in names]
    for round_ in range(2):
        for p in payloads + payloads[::7]:
            got = compiled.decode_http_response_payload(p)
            assert got == pure.decode_http_response_payload(p), (round_, p)


def test_same_length_different_text(twins: Tuple[ModuleType, ModuleType]) -> None:
    pure, compiled = twins
    for a, b in [("ab", "ba"), ("date", "etag"), ("x" * 48, "y" * 48), ("Aa", "BB")]:
        for name in (a, b, a, b):
            p = _payload({name: name})
            assert compiled.decode_http_response_payload(p).headers == {name: name}
            assert pure.decode_http_response_payload(p).headers == {name: name}
