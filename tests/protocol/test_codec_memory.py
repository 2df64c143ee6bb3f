"""Memory: long encode/decode/frame-split loops must not grow the heap, and the
compiled twin must not leak or steal references.

Three checks, each able to fail:

* tracemalloc over the whole codec surface (encode, decode, FrameBuffer receive path,
  error and fallback paths).  It sees the compiled twin's buffers too: FrameBuffer
  blocks come from PyMem_Malloc and every result is a Python object.  The compiled twin
  runs 100k iterations, the pure twin (~50x slower under tracemalloc) 10k; the limit
  is crossed by a leak of one 26-byte object per pure iteration
  (``test_heap_check_detects_a_leak`` proves the harness catches one).
* RSS over 1M encode + 1M decode iterations of the compiled hot path, without
  tracemalloc, so allocations outside Python's allocators would show too.
* reference counts of inputs and results.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tracemalloc
from types import ModuleType
from typing import Any, Callable, List

import pytest

ITERATIONS = {"vastar_fast.protocol._codec_c": 100_000, "vastar_fast.protocol._codec_py": 10_000}
GROWTH_LIMIT = 256 * 1024  # bytes


def _workload(codec: ModuleType) -> Callable[[], None]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hé 😀"}]})
    resp_payload = codec.encode_http_response_payload(
        200, {"content-type": "text/event-stream"}, 'data: {"x": "\\u00e9"}\n\n' * 5, True
    )
    stream = b"".join(codec.encode_execute_response(i, 0, None, resp_payload, i) for i in range(3))
    bad = b"\x00\x00\x00\x01\x01\xff\xff"
    fb_holder: List[Any] = [codec.FrameBuffer()]

    def once() -> None:
        frame = codec.encode_http_request_frame(
            7,
            "tenant",
            "ws",
            None,
            99,
            "post",
            "https://x/y",
            {"A": "b"},
            body.encode(),
            [("k", "v")],
        )
        codec.decode_execute_request(frame[5:])
        fb = fb_holder[0]
        fb.feed(stream[:100])
        view = fb.get_buffer()
        rest = stream[100:]
        view[: len(rest)] = rest
        fb.buffer_updated(len(rest))
        for _, b in fb.frames():
            r = codec.decode_execute_response(b)
            codec.decode_http_response_payload(r.payload)
        try:
            codec.decode_execute_request(bad)
        except ValueError:
            pass
        codec.decode_http_response_payload(b'{"status_code": 1, "x": 2}')  # the fallback path

    return once


def _traced_growth(once: Callable[[], None], iterations: int) -> int:
    """Heap growth (bytes) over ``iterations`` calls, after a warm-up."""
    for _ in range(2000):  # warm caches (interned strings, free lists)
        once()
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(iterations):
            once()
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - start)
    finally:
        tracemalloc.stop()


def test_no_heap_growth(codec: ModuleType) -> None:
    growth = _traced_growth(_workload(codec), ITERATIONS[codec.__name__])
    assert growth < GROWTH_LIMIT, f"heap grew by {growth} bytes"


def test_heap_check_detects_a_leak() -> None:
    """The harness is not vacuous: one small object kept per iteration trips it."""
    kept: List[bytes] = []

    def leaky() -> None:
        kept.append(bytes(1))  # a 34-byte object

    assert _traced_growth(leaky, ITERATIONS["vastar_fast.protocol._codec_py"]) > GROWTH_LIMIT


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_compiled_rss_flat_over_a_million_round_trips(twins: Any) -> None:
    """1M encodes of the chat request frame and 1M decodes of a response (frame and
    HTTP JSON): resident memory must stay flat.  8 MB over 1M iterations is crossed by
    any leak of 8 bytes or more per iteration, i.e. any leaked object or buffer."""
    codec = twins[1]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hé"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-x"}
    payload = codec.encode_http_response_payload(
        200, {"content-type": "text/event-stream"}, 'data: {"x": "\\u00e9"}\n\n' * 5, True
    )
    response = codec.encode_execute_response(7, 0, None, payload, 9)[5:]
    encode = codec.encode_http_request_frame
    decode = codec.decode_execute_response
    decode_payload = codec.decode_http_response_payload

    def loop(n: int) -> None:
        for i in range(n):
            encode(i, "tenant", "ws", None, 99, "POST", "https://x/y", headers, body)
            decode_payload(decode(response).payload)

    loop(20_000)
    gc.collect()
    before = _rss()
    loop(1_000_000)
    gc.collect()
    growth = _rss() - before
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth} bytes over 1M round trips"


def test_reference_counts(codec: ModuleType) -> None:
    """Results are owned only by the caller; inputs' reference counts do not move."""
    tenant = "".join(["ten", "ant-", str(id(codec))])  # fresh, uninterned objects
    body = ("x" * 50 + str(id(codec))).encode()
    headers = {"".join(["Head", "er"]): "".join(["val", "ue"])}
    ext = [("".join(["k", "1"]), "".join(["v", "1"]))]
    payload = codec.encode_http_response_payload(200, {"a": "b"}, "body", False)
    frame = codec.encode_execute_response(1, 0, "msg", payload, 2)
    inputs = [tenant, body, headers, ext, payload, frame, *headers, *ext[0]]
    before = [sys.getrefcount(o) for o in inputs]
    for _ in range(10_000):
        codec.encode_http_request_frame(1, tenant, None, None, 2, "get", "u", headers, body, ext)
        codec.encode_execute_request(1, tenant, tenant, tenant, "c", "o", 2, body, ext)
        codec.decode_execute_response(frame[5:])
        codec.decode_http_response_payload(payload)
        fb = codec.FrameBuffer()
        fb.feed(frame)
        fb.next_frame()
    assert [sys.getrefcount(o) for o in inputs] == before


def test_compiled_results_hold_no_extra_references(twins: Any) -> None:
    """Objects the compiled twin builds by hand (NamedTuples filled in C, bytes resized
    in place, frames) are owned by the caller alone: getrefcount is 2 (the holder +
    getrefcount's argument). Counts are taken outside ``assert`` because pytest's
    assertion rewriting keeps its own references to sub-expressions."""
    codec = twins[1]
    payload = codec.encode_http_response_payload(200, {"a": "b"}, "body", False)
    frame = codec.encode_execute_response(1, 0, "msg", payload, 2)
    f = codec.encode_http_request_frame(1, "t", None, None, 2, "get", "u", {"h": "v"}, b"b")
    counts = {"request frame": sys.getrefcount(f)}
    r = codec.decode_execute_response(frame[5:])
    counts["response"] = sys.getrefcount(r)
    counts["response.payload"] = sys.getrefcount(r.payload)
    resp = codec.decode_http_response_payload(payload)
    counts["http"] = sys.getrefcount(resp)
    counts["http.body"] = sys.getrefcount(resp.body)
    counts["http.headers"] = sys.getrefcount(resp.headers)
    fb = codec.FrameBuffer()
    fb.feed(frame)
    got = fb.next_frame()
    assert got is not None
    counts["frame"] = sys.getrefcount(got)
    counts["frame body"] = sys.getrefcount(got[1])
    assert counts == dict.fromkeys(counts, 2)
