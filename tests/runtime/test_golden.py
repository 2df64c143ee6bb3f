"""The released SDKs' captured request frames, answered in the released runtime's shape.

Each golden request is decoded, its URL pointed at the local upstream (same path and
query) and its deadline refreshed, then re-encoded with the codec and sent as raw bytes;
the answer is compared with the released runtime's captured response.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from yarl import URL

from support import GOLDEN_DIR
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import ResponseReceived
from vastar_fast.types import ErrorClass

from .helpers import Daemon, Raw
from .upstream import GOLDEN_SSE_BODY, Upstream

GOLDEN = GOLDEN_DIR


def _frame(name: str) -> tuple:
    buf = codec.FrameBuffer()
    with open(os.path.join(GOLDEN, name), "rb") as fh:
        buf.feed(fh.read())
    frames = buf.frames()
    assert len(frames) == 1
    return frames[0]


def _released_payload(name: str) -> Dict[str, Any]:
    mtype, body = _frame(name)
    assert mtype == 1
    return dict(json.loads(codec.decode_execute_response(body).payload))


def _retarget(name: str, upstream: Upstream) -> tuple:
    mtype, body = _frame(name)
    assert mtype == 0
    req = codec.decode_execute_request(body)
    obj = json.loads(req.payload)
    url = URL(obj["url"])
    obj["url"] = str(URL(upstream.base).with_path(url.path).with_query(url.query))
    frame = codec.encode_execute_request(
        req.request_id, req.tenant_id, req.workspace_id, req.trace_id, req.connector_name,
        req.operation, int(time.time() * 1000) + 20000, json.dumps(obj).encode(), req.headers,
    )  # fmt: skip
    return req.request_id, frame


def _answer(daemon: Daemon, rid: int, frame: bytes) -> ResponseReceived:
    with Raw(daemon.socket_path) as raw:
        raw.send(frame)
        resp = raw.response(rid)
        assert all(isinstance(e, ResponseReceived) for e in raw.events)  # nothing extended
        return resp


def test_golden_get(daemon: Daemon, upstream: Upstream) -> None:
    rid, frame = _retarget("py_sdk_get_request.bin", upstream)
    resp = _answer(daemon, rid, frame)
    assert resp.error_class == 0 and resp.error_message is None
    ours = json.loads(resp.payload)
    released = _released_payload("runtime_get_200_response.bin")
    assert list(ours) == list(released)  # same keys, same order
    assert ours["body"] == released["body"] == "hello, world!"
    assert ours["status_code"] == 200 and ours["is_streaming"] is False
    assert ours["headers"]["content-length"] == released["headers"]["content-length"]
    assert all(k == k.lower() for k in ours["headers"])


def test_golden_sse_post(daemon: Daemon, upstream: Upstream) -> None:
    rid, frame = _retarget("py_sdk_post_sse_request.bin", upstream)
    resp = _answer(daemon, rid, frame)
    ours = json.loads(resp.payload)
    released = _released_payload("runtime_sse_200_response.bin")
    assert list(ours) == list(released)
    assert ours["body"] == released["body"] == GOLDEN_SSE_BODY
    assert ours["is_streaming"] is True and ours["status_code"] == 200
    assert ours["headers"]["content-type"] == "text/event-stream"
    assert ours["headers"]["transfer-encoding"] == released["headers"]["transfer-encoding"]


def test_golden_ts_post(daemon: Daemon, upstream: Upstream) -> None:
    rid, frame = _retarget("ts_sdk_post_request.bin", upstream)
    resp = _answer(daemon, rid, frame)
    ours = json.loads(resp.payload)
    # /small is GET-only upstream: the HTTP status passes through as error_class 0
    assert resp.error_class == 0 and ours["status_code"] == 405
    assert list(ours) == ["body", "headers", "is_streaming", "status_code"]


def test_golden_404_shape(daemon: Daemon, upstream: Upstream) -> None:
    rid, frame = _retarget("py_sdk_get_request.bin", upstream)
    frame = frame.replace(b"/small", b"/nope!")  # same length: the frame stays valid
    resp = _answer(daemon, rid, frame)
    ours = json.loads(resp.payload)
    released = _released_payload("runtime_404_response.bin")
    assert resp.error_class == 0
    assert ours["status_code"] == released["status_code"] == 404
    assert ours["body"] == released["body"] == "404: Not Found"  # both from aiohttp upstreams
    assert list(ours) == list(released)


def test_invalid_flatbuffers_matches_released_wording(daemon: Daemon) -> None:
    _mtype, body = _frame("runtime_invalid_flatbuffer_response.bin")
    released = codec.decode_execute_response(body)
    with Raw(daemon.socket_path) as raw:
        raw.send(codec.encode_frame(0, b"\xff" * 16))
        assert raw.wait(lambda ev: bool(ev), timeout=5)
        ours = raw.responses()[0]
    assert ours.request_id == released.request_id == 0
    assert ours.error_class == released.error_class == ErrorClass.INVALID_REQUEST
    assert (ours.error_message or "").startswith(released.error_message or "?")


def test_released_sdk_reader_decodes_our_answer(daemon: Daemon, upstream: Upstream) -> None:
    """Read our ExecuteResponse the way the released SDK does: length prefix, type byte,
    flatc-generated accessors (independent of our codec)."""
    import socket
    import struct

    from Vastar.Connector.Ipc.ExecuteResponse import ExecuteResponse  # flatc output

    rid, frame = _retarget("py_sdk_get_request.bin", upstream)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(daemon.socket_path)
        sock.sendall(frame)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buf += chunk
    (length,) = struct.unpack(">I", buf[:4])
    assert len(buf) == 4 + length and buf[4] == 1  # exactly one ExecuteResponse frame
    resp = ExecuteResponse.GetRootAs(bytearray(buf[5:]), 0)
    assert resp.RequestId() == rid and resp.ErrorClass() == 0 and resp.ErrorMessage() is None
    data = bytes(resp.Payload(i) for i in range(resp.PayloadLength()))
    obj = json.loads(data)
    assert obj["status_code"] == 200 and obj["body"] == "hello, world!"
