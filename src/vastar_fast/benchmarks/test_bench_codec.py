"""Codec benchmarks: compiled twin vs pure twin vs the released SDK's approach.

Run: ``PYTHONPATH=src python -m pytest bench/test_bench_codec.py --benchmark-only``
(or ``vastar bench -k codec`` for the ratio table).  Each group has one benchmark per
implementation, ``test_x[compiled]``, ``test_x[pure]`` and ``test_x[released]``, so
``bench_cli`` divides each median by the ``released`` one.  ``released`` is the
released SDK's documented algorithm re-implemented in ``released_codec.py``
(flatbuffers.Builder + json.dumps to encode; generated-code accessors, the numpy
payload view when numpy is installed, json.loads to decode).

Every variant's result is computed once outside the timed part and checked against
the others: same decoded frame fields and same JSON document for encode (the released
SDK's json.dumps spacing differs from ours, so bytes can differ; compiled and pure must
be byte-identical), equal (status, headers, body) for decode, equal frame lists for
splitting.
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import Any, Callable, List, Tuple

import pytest

from vastar_fast.protocol import _codec_py

from . import released_codec

try:
    from vastar_fast.protocol import _codec_c
except ImportError:  # not built: the compiled rows are skipped with that reason
    _codec_c = None

HERE = os.path.dirname(os.path.abspath(__file__))
# A GET 200 answer captured from the released runtime (the same bytes as tests/golden/).
GOLDEN = os.path.join(HERE, "data")
IMPLS = ["compiled", "pure", "released"]
# The 35 KB decode also runs the compiled twin on each JSON-unescaper path this CPU
# allows ("compiled-avx2", ...), forced with the private _simd() switch.
SIMD_IMPLS = [f"compiled-{p}" for p in (_codec_c._simd_paths() if _codec_c else ())]

# The reference chat request: a chat-completions POST as an SDK user sends it.
CHAT_BODY = json.dumps(
    {
        "model": "gpt-3.5-turbo",
        "messages": [
            {
                "role": "system",
                "content": "You are a helpful assistant. Answer briefly and "
                "precisely, and say so when you do not know.",
            },
            {
                "role": "user",
                "content": "Explain in two sentences what a FlatBuffers vtable "
                "is and why it makes reading fields cheap.",
            },
        ],
        "stream": True,
        "temperature": 0.7,
        "max_tokens": 256,
    }
).encode()
CHAT_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-" + "x" * 48}
CHAT_ARGS = (
    1795280070376,
    "openai-connector",
    "default",
    None,
    1795280130376,
    "POST",
    "https://api.openai.com/v1/chat/completions",
    CHAT_HEADERS,
    CHAT_BODY,
)


def _codec(impl: str) -> ModuleType:
    if impl == "compiled":
        if _codec_c is None:
            pytest.skip("compiled twin not built (python setup.py build_ext --inplace)")
        return _codec_c
    return _codec_py


def _sse_body() -> str:
    """~35 KB of OpenAI chat.completion.chunk events, as the runtime buffers them."""
    events: List[str] = []
    words = [
        "Hello",
        " there",
        "!",
        " A",
        " FlatBuffers",
        " vtable",
        " maps",
        " field",
        " slots",
        " to",
        " offsets",
        ",",
        " so",
        " reads",
        " are",
        " O(1)",
        ".",
    ]
    i = 0
    while sum(len(e) for e in events) < 35_000:
        chunk = {
            "id": "chatcmpl-8x1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-3.5-turbo-0613",
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": words[i % len(words)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        events.append("data: " + json.dumps(chunk) + "\n\n")
        i += 1
    events.append("data: [DONE]\n\n")
    return "".join(events)


def _sse_response_body() -> bytes:
    """ExecuteResponse FlatBuffers bytes carrying the released runtime's response JSON
    (compact, keys sorted as serde emits them) with the 35 KB SSE body string."""
    payload = _codec_py.encode_http_response_payload(
        200,
        {
            "content-type": "text/event-stream",
            "transfer-encoding": "chunked",
            "date": "Sat, 21 Nov 2026 16:54:30 GMT",
            "server": "uvicorn",
        },
        _sse_body(),
        True,
    )
    return _codec_py.encode_execute_response(1795280070376, 0, None, payload, 1843)[5:]


def _small_response_body() -> bytes:
    """A GET 200 answer captured from the released runtime (368 bytes)."""
    with open(os.path.join(GOLDEN, "runtime_get_200_response.bin"), "rb") as f:
        return f.read()[5:]


def _encoder(impl: str) -> Callable[..., bytes]:
    if impl == "released":
        return released_codec.encode_http_request
    return _codec(impl).encode_http_request_frame  # type: ignore[no-any-return]


def _frame_meaning(frame: bytes) -> Tuple[Any, ...]:
    """What a peer reads from a request frame: every field, the payload as JSON."""
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4 and frame[4] == 0
    r = _codec_py.decode_execute_request(frame[5:])
    return (*r._replace(payload=b""), json.loads(r.payload))


@pytest.mark.benchmark(group="encode_chat_request")
@pytest.mark.parametrize("impl", IMPLS)
def test_encode_chat_request(benchmark: Any, impl: str) -> None:
    fn = _encoder(impl)
    want = _frame_meaning(released_codec.encode_http_request(*CHAT_ARGS))
    assert want[-1]["body"] == CHAT_BODY.decode()
    assert _frame_meaning(fn(*CHAT_ARGS)) == want
    if impl == "compiled":  # the twins agree byte for byte
        assert fn(*CHAT_ARGS) == _codec_py.encode_http_request_frame(*CHAT_ARGS)
    frame = benchmark(fn, *CHAT_ARGS)
    benchmark.extra_info["bytes"] = len(frame)
    benchmark.extra_info["body_bytes"] = len(CHAT_BODY)


def _decoder(impl: str) -> Callable[[bytes], Any]:
    if impl == "released":
        return released_codec.decode_http_response
    codec = _codec(impl.split("-")[0])
    dec_frame = codec.decode_execute_response
    dec_payload = codec.decode_http_response_payload

    def decode(body: bytes) -> Any:
        r = dec_frame(body)
        if r.error_class != 0:  # what the client does; the released reader raises too
            raise RuntimeError(r.error_message)
        return dec_payload(r.payload)

    return decode


def _decode_bench(benchmark: Any, impl: str, body: bytes) -> None:
    decode = _decoder(impl)
    want = released_codec.decode_http_response(body)
    simd = impl.split("-", 1)[1] if impl.startswith("compiled-") else None
    before = _codec_c._simd() if simd and _codec_c else None
    try:
        if simd:
            assert _codec_c._simd(simd) == simd
            benchmark.extra_info["simd"] = simd
        got = decode(body)
        assert (got[0], got[1], got[2]) == want
        result = benchmark(decode, body)
        assert (result[0], result[1], result[2]) == want
    finally:
        if before:
            _codec_c._simd(before)
    benchmark.extra_info["bytes"] = len(body)
    benchmark.extra_info["body_bytes"] = len(want[2])
    if impl == "released":
        benchmark.extra_info["payload_path"] = released_codec.PAYLOAD_PATH


@pytest.mark.benchmark(group="decode_small_response")
@pytest.mark.parametrize("impl", IMPLS)
def test_decode_small_response(benchmark: Any, impl: str) -> None:
    _decode_bench(benchmark, impl, _small_response_body())


@pytest.mark.benchmark(group="decode_sse_35KB")
@pytest.mark.parametrize("impl", IMPLS + SIMD_IMPLS)
def test_decode_sse_35KB(benchmark: Any, impl: str) -> None:
    _decode_bench(benchmark, impl, _sse_response_body())


def _many_frames() -> bytes:
    """1000 small ExecuteResponse frames back to back (~260 KB)."""
    frames: List[bytes] = []
    for i in range(1000):
        payload = _codec_py.encode_http_response_payload(
            200, {"content-type": "application/json"}, f'{{"ok": true, "n": {i}}}', False
        )
        frames.append(_codec_py.encode_execute_response(i, 0, None, payload, 100 + i))
    return b"".join(frames)


@pytest.mark.benchmark(group="frame_split")
@pytest.mark.parametrize("impl", IMPLS)
def test_frame_split(benchmark: Any, impl: str) -> None:
    """Split a 1000-frame stream.  released: read 4 + read L from an in-memory stream
    (no syscalls, so generous to it); twins: FrameBuffer fed 64 KB pieces, as recv
    delivers them."""
    data = _many_frames()
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    split: Callable[[], List[Tuple[int, bytes]]]
    if impl == "released":

        def split() -> List[Tuple[int, bytes]]:
            return released_codec.split_frames(data)

    else:
        frame_buffer = _codec(impl).FrameBuffer

        def split() -> List[Tuple[int, bytes]]:
            fb = frame_buffer()
            out: List[Tuple[int, bytes]] = []
            for piece in pieces:
                fb.feed(piece)
                out += fb.frames()
            return out

    assert split() == released_codec.split_frames(data)
    frames = benchmark(split)
    assert len(frames) == 1000 and frames[7][0] == 1
    benchmark.extra_info["bytes"] = len(data)
    benchmark.extra_info["frames"] = len(frames)
