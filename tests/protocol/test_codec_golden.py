"""Every captured frame in /work/shared/golden decodes to what index.json says, in both twins."""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import Any, Dict

import pytest

from support import GOLDEN_DIR

with open(os.path.join(GOLDEN_DIR, "index.json"), encoding="utf-8") as _f:
    INDEX: Dict[str, Dict[str, Any]] = json.load(_f)


def _frame(name: str) -> bytes:
    with open(os.path.join(GOLDEN_DIR, name), "rb") as f:
        return f.read()


def test_index_covers_every_golden_file() -> None:
    names = {n for n in os.listdir(GOLDEN_DIR) if n.endswith(".bin")}
    assert names == set(INDEX)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_golden_frame(codec: ModuleType, name: str) -> None:
    expected = INDEX[name]
    data = _frame(name)
    fb = codec.FrameBuffer()
    fb.feed(data)
    frames = fb.frames()
    assert len(frames) == 1 and fb.pending == 0
    message_type, body = frames[0]
    assert message_type == expected["message_type"]
    assert len(body) + 1 == expected["frame_length_field"]
    if message_type == 0:
        want = expected["execute_request"]
        got = codec.decode_execute_request(body)
        assert isinstance(got, codec.ExecuteRequestFrame)
        for field in (
            "request_id",
            "tenant_id",
            "workspace_id",
            "trace_id",
            "connector_name",
            "operation",
            "deadline_at_ms",
        ):
            assert getattr(got, field) == want[field], field
        assert len(got.headers) == want["headers_count"]
        assert json.loads(got.payload) == want["payload_json"]
        req = codec.decode_http_request_payload(got.payload)
        assert req.method == want["payload_json"]["method"]
        assert req.url == want["payload_json"]["url"]
        assert req.headers == want["payload_json"].get("headers", {})
        assert req.body == want["payload_json"].get("body", "")
    else:
        want = expected["execute_response"]
        got = codec.decode_execute_response(body)
        assert isinstance(got, codec.ExecuteResponseFrame)
        for field in ("request_id", "error_class", "error_message", "duration_us"):
            assert getattr(got, field) == want[field], field
        if want["payload_json"] is None:
            assert got.payload == b""
        else:
            assert json.loads(got.payload) == want["payload_json"]
            resp = codec.decode_http_response_payload(got.payload)
            assert isinstance(resp, codec.HTTPResponsePayload)
            pj = want["payload_json"]
            assert resp.status_code == pj["status_code"]
            assert resp.headers == pj["headers"]
            assert resp.body == pj["body"].encode("utf-8")
            assert resp.is_streaming is pj["is_streaming"]


def test_golden_request_reencodes_identically_readable(codec: ModuleType) -> None:
    """Re-encoding a captured SDK request with our encoder gives the same decoded values."""
    body = _frame("py_sdk_post_sse_request.bin")[5:]
    r = codec.decode_execute_request(body)
    p = codec.decode_http_request_payload(r.payload)
    frame = codec.encode_http_request_frame(
        r.request_id,
        r.tenant_id,
        r.workspace_id,
        r.trace_id,
        r.deadline_at_ms,
        p.method,
        p.url,
        p.headers,
        p.body,
    )
    again = codec.decode_execute_request(frame[5:])
    assert again == r._replace(payload=again.payload)
    assert json.loads(again.payload) == json.loads(r.payload)
