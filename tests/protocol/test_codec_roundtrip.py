"""Encode -> decode round trips, read back with our decoders, the flatc-generated reader
and the official flatbuffers runtime; plus the FlatBuffers alignment rules."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

import pytest

from .codec_helpers import (
    assert_aligned,
    generated_request,
    generated_response,
    generated_stream_start,
    runtime_request,
    runtime_response,
    split_frame,
)

U64_MAX = 2**64 - 1
MIB = 1024 * 1024

REQUEST_CASES: List[Dict[str, Any]] = [
    dict(
        request_id=0,
        tenant_id="",
        workspace_id=None,
        trace_id=None,
        connector_name="http",
        operation="request",
        deadline_at_ms=0,
        payload=b"",
        headers=None,
    ),
    dict(
        request_id=U64_MAX,
        tenant_id="租户-😀",
        workspace_id="",
        trace_id="трасса",
        connector_name="http",
        operation="request",
        deadline_at_ms=U64_MAX,
        payload=b"\x00\xff" * 7,
        headers=[("k", "v")],
    ),
    dict(
        request_id=1,
        tenant_id="t",
        workspace_id="ws",
        trace_id="",
        connector_name="c",
        operation="o",
        deadline_at_ms=1795280130374,
        payload=b"x" * MIB,
        headers=[(f"key-{i}", "välue-" * (i % 7)) for i in range(300)],
    ),
    dict(
        request_id=2**63,
        tenant_id="a" * 1000,
        workspace_id="é",
        trace_id=None,
        connector_name="",
        operation="",
        deadline_at_ms=1,
        payload=b"{}",
        headers=[("", ""), ("😀", "中文")],
    ),
]


def _expected_request(case: Dict[str, Any]) -> Dict[str, Any]:
    want = dict(case)
    want["headers"] = list(case["headers"] or [])
    return want


@pytest.mark.parametrize("case", REQUEST_CASES, ids=range(len(REQUEST_CASES)))
def test_execute_request_roundtrip(codec: ModuleType, case: Dict[str, Any]) -> None:
    frame = codec.encode_execute_request(**case)
    _, message_type, buf = split_frame(frame)
    assert message_type == 0
    want = _expected_request(case)
    assert codec.decode_execute_request(buf)._asdict() == want
    assert generated_request(buf) == want
    assert runtime_request(buf) == want
    assert_aligned(buf, u64_slots=(0, 6), ref_slots=(1, 2, 3, 4, 5, 7, 8))


BODIES: List[Any] = [
    None,
    b"",
    "",
    b'{"model": "gpt-3.5-turbo", "stream": true}',
    "unicode: 😀 中文 é \u2028 \x7f",
    'controls: \x00\x01\x08\t\n\x0b\x0c\r\x1f " \\ /',
    b"\xe4\xb8\xad\xf0\x9f\x98\x80 bytes",
    "x" * MIB,
    b'"' * 5000,
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
@pytest.mark.parametrize(
    "headers", [None, {}, {"Content-Type": "application/json", "X-Ünïcode": 'välue "q" \\ \n'}]
)
def test_http_request_frame_roundtrip(
    codec: ModuleType, body: Any, headers: Optional[Dict[str, str]]
) -> None:
    ext = [("vastar-stream", "1")]
    frame = codec.encode_http_request_frame(
        U64_MAX,
        "openai-connector",
        "default",
        None,
        0,
        "post",
        'https://api.openai.com/v1/chat/completions?q="x"',
        headers,
        body,
        ext,
    )
    _, _, buf = split_frame(frame)
    got = codec.decode_execute_request(buf)
    assert got.connector_name == "http" and got.operation == "request"
    assert got.request_id == U64_MAX and got.deadline_at_ms == 0 and got.trace_id is None
    assert got.headers == ext
    assert generated_request(buf) == got._asdict()
    assert runtime_request(buf) == got._asdict()
    assert_aligned(buf, u64_slots=(0, 6), ref_slots=(1, 2, 3, 4, 5, 7, 8))
    # the payload is exactly the JSON the payload encoder makes
    assert got.payload == codec.encode_http_request_payload("post", got_url(got), headers, body)
    obj = json.loads(got.payload)
    assert obj["method"] == "POST"
    assert list(obj) == ["method", "url"] + (["headers"] if headers else []) + (
        ["body"] if body else []
    )
    if body:
        text = body if isinstance(body, str) else body.decode("utf-8")
        assert obj["body"] == text
        req = codec.decode_http_request_payload(got.payload)
        assert req.body == text


def got_url(frame: Any) -> str:
    return str(json.loads(frame.payload)["url"])


def test_payload_json_matches_json_module(codec: ModuleType) -> None:
    headers = {"A": '\x00\x1f"\\\u2028😀'}
    body = "".join(chr(c) for c in range(0, 0x250)) + "😀\U0010ffff"
    out = codec.encode_http_request_payload("get", "u", headers, body)
    want = (
        json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
        .encode({"method": "GET", "url": "u", "headers": headers, "body": body})
        .encode("utf-8")
    )
    assert out == want


@pytest.mark.parametrize("method", ["get", "Post", "ß", "ﬀ", "méthod", "dÉlete", 'x"y'])
def test_method_upper_uses_str_upper(codec: ModuleType, method: str) -> None:
    obj = json.loads(codec.encode_http_request_payload(method, "u", None, None))
    assert obj == {"method": method.upper(), "url": "u"}


RESPONSE_CASES: List[Tuple[Any, ...]] = [
    (0, 0, None, None, 0),
    (U64_MAX, -128, "", b"", U64_MAX),
    (7, 5, "Invalid FlatBuffers message ✗", b"\x00" * 3, 1),
    (2**40, 127, "m" * 3000, b"p" * MIB, 2**33),
]


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=range(len(RESPONSE_CASES)))
def test_execute_response_roundtrip(codec: ModuleType, case: Tuple[Any, ...]) -> None:
    request_id, error_class, message, payload, duration = case
    frame = codec.encode_execute_response(*case)
    _, message_type, buf = split_frame(frame)
    assert message_type == 1
    want = {
        "request_id": request_id,
        "error_class": error_class,
        "error_message": message,
        "payload": payload or b"",
        "duration_us": duration,
    }
    assert codec.decode_execute_response(buf)._asdict() == want
    assert generated_response(buf) == want
    assert runtime_response(buf) == want
    assert_aligned(buf, u64_slots=(0, 4), ref_slots=(2, 3))


def test_small_frames_roundtrip(codec: ModuleType) -> None:
    _, t, buf = split_frame(codec.encode_health_check())
    assert t == 2 and len(buf) >= 8
    for healthy, msg, active, credits in [(True, "ok ✓", 0, 2**32 - 1), (False, None, 3, 0)]:
        _, t, buf = split_frame(codec.encode_health_response(healthy, msg, active, credits))
        assert t == 3
        assert tuple(codec.decode_health_response(buf)) == (healthy, msg, active, credits)
    for delta, total in [(-(2**31), 0), (2**31 - 1, 2**32 - 1), (0, 5)]:
        _, t, buf = split_frame(codec.encode_credit_update(delta, total))
        assert t == 4 and tuple(codec.decode_credit_update(buf)) == (delta, total)
    for rid, status, headers, streaming in [
        (U64_MAX, 65535, [("content-type", "text/event-stream")], True),
        (0, 0, [], False),
    ]:
        _, t, buf = split_frame(codec.encode_stream_start(rid, status, headers, streaming))
        assert t == 5
        assert tuple(codec.decode_stream_start(buf)) == (rid, status, headers, streaming)
        assert generated_stream_start(buf) == {
            "request_id": rid,
            "status_code": status,
            "headers": headers,
            "is_streaming": streaming,
        }
        assert_aligned(buf, u64_slots=(0,), ref_slots=(2,))
    for rid, data in [(U64_MAX, b"data: x\n\n"), (0, b"")]:
        _, t, buf = split_frame(codec.encode_stream_chunk(rid, data))
        assert t == 6 and tuple(codec.decode_stream_chunk(buf)) == (rid, data)
    for rid in (0, 1, U64_MAX):
        _, t, buf = split_frame(codec.encode_cancel_request(rid))
        assert t == 7 and codec.decode_cancel_request(buf).request_id == rid
    assert codec.encode_frame(9, b"abc") == b"\x00\x00\x00\x04\x09abc"


def test_results_are_the_pure_twins_classes(codec: ModuleType) -> None:
    from vastar_fast.protocol import _codec_py

    _, _, buf = split_frame(codec.encode_execute_response(1, 0, None, b"{}", 2))
    r = codec.decode_execute_response(buf)
    assert type(r) is _codec_py.ExecuteResponseFrame
    assert r == _codec_py.ExecuteResponseFrame(1, 0, None, b"{}", 2)
    assert r.payload == b"{}" and r._fields == _codec_py.ExecuteResponseFrame._fields
    payload = codec.encode_http_response_payload(200, {"a": "b"}, b"hi", False)
    resp = codec.decode_http_response_payload(payload)
    assert type(resp) is _codec_py.HTTPResponsePayload
    assert resp == (200, {"a": "b"}, b"hi", False)
    assert hash(resp[::2]) == hash((200, b"hi"))


def test_public_names_match(codec: ModuleType) -> None:
    from vastar_fast.protocol import _codec_py

    assert list(codec.__all__) == list(_codec_py.__all__)
    for name in _codec_py.__all__:
        assert hasattr(codec, name), name


RESPONSE_JSON = [
    (200, {"content-type": "text/plain"}, "hello, world!", False),
    (404, {}, "", False),
    (
        200,
        {"content-type": "text/event-stream", "x": 'é😀"\\\n'},
        'data: {"a": "\\u00e9"}\n\n' * 50 + "中文 \x00\x1f \ud800 \udfff \ud83d\ude00",
        True,
    ),
    (599, {"h": ""}, "x" * MIB, True),
]


@pytest.mark.parametrize("case", RESPONSE_JSON, ids=range(len(RESPONSE_JSON)))
def test_http_response_payload_roundtrip(codec: ModuleType, case: Tuple[Any, ...]) -> None:
    status, headers, body, streaming = case
    payload = codec.encode_http_response_payload(status, headers, body, streaming)
    got = codec.decode_http_response_payload(payload)
    assert got == (status, headers, body.encode("utf-8", "surrogatepass"), streaming)
    assert type(got.body) is bytes and type(got.is_streaming) is bool
