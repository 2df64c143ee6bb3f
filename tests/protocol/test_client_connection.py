"""The client half of the sans-I/O core, on both twins: frames in, events out, waiters.

``core`` is the pure twin (``_client_py``) or the compiled one (``_codec_c``); no
socket is involved anywhere here.
"""

from __future__ import annotations

import importlib
import logging
import random
import struct
import threading
import time
from types import ModuleType
from typing import Any, List

import pytest

from vastar_fast import ConnectorException, ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig
from vastar_fast.errors import FrameTooLargeError, ProtocolError
from vastar_fast.protocol import _client_py, _codec_py
from vastar_fast.protocol.connection import (
    CreditsUpdated,
    HealthReceived,
    ResponseReceived,
    ServerConnection,
    StreamDataReceived,
    StreamStarted,
)

try:
    _compiled: Any = importlib.import_module("vastar_fast.protocol._codec_c")
    _compiled.ClientConnection  # noqa: B018  (built before the client core: treat as absent)
except (ImportError, AttributeError):
    _compiled = None

RELEASED_INVALID = _codec_py.encode_execute_response(0, 5, "Invalid FlatBuffers message", None, 0)


@pytest.fixture(params=["pure", "compiled"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "pure":
        return _client_py
    if _compiled is None:
        pytest.skip("compiled twin not built (python setup.py build_ext --inplace)")
    return _compiled  # type: ignore[no-any-return]


def answer(rid: int, body: str = "ok", status: int = 200) -> bytes:
    return ServerConnection.send_http_response(rid, status, {"a": "b"}, body, False, 3)


def open_one(conn: Any, stream: bool = False, **kw: Any) -> Any:
    waiter, _frame = conn.open_request(HTTPRequest("GET", "http://x/", **kw), stream)
    return waiter


# ------------------------------------------------------------------ requests
def test_open_request_builds_the_frame_from_the_request_and_the_config(core: ModuleType) -> None:
    config = RuntimeConfig(tenant_id="t0", workspace_id="w0", timeout_ms=4000)
    conn = core.ClientConnection(request_id_seed=500, config=config)
    before = int(time.time() * 1000)
    waiter, frame = conn.open_request(
        HTTPRequest("post", "http://x/p", headers={"H": "v"}, body=b"{}", trace_id="tr"), False
    )
    req = _codec_py.decode_execute_request(frame[5:])
    assert (req.request_id, req.tenant_id, req.workspace_id, req.trace_id) == (
        500,
        "t0",
        "w0",
        "tr",
    )
    assert before + 4000 <= req.deadline_at_ms <= int(time.time() * 1000) + 4000
    assert req.headers == []
    assert waiter.request_id == 500 and not waiter.stream and not waiter.finished
    assert 4.2 < waiter.deadline - time.monotonic() <= 4.25  # timeout + the client's grace
    assert conn.outstanding == {500: False}
    _, frame2 = conn.open_request(
        HTTPRequest("GET", "http://x/", tenant_id="t1", workspace_id="w1", timeout_ms=100), True
    )
    req2 = _codec_py.decode_execute_request(frame2[5:])
    assert (req2.request_id, req2.tenant_id, req2.workspace_id) == (501, "t1", "w1")
    assert req2.headers == [("vastar-ext", "stream")]  # the opt-in
    assert conn.outstanding == {500: False, 501: True}


def test_both_twins_build_the_same_bytes(core: ModuleType) -> None:
    config = RuntimeConfig(tenant_id="t", workspace_id="w")
    request = HTTPRequest("PUT", "http://x/ü", headers={"K": "v"}, body="bödy", timeout_ms=1000)
    frames = []
    for twin in (_client_py, core):
        conn = twin.ClientConnection(request_id_seed=9, config=config)
        _, frame = conn.open_request(request, True)
        frames.append(_codec_py.decode_execute_request(frame[5:])._replace(deadline_at_ms=0))
    assert frames[0] == frames[1]


def test_a_request_that_cannot_be_sent_registers_nothing(core: ModuleType) -> None:
    conn = core.ClientConnection(max_frame_size=1000, request_id_seed=1)
    for body in (b"x" * 2000, b"x" * 950, b"\xff\xfe"):
        with pytest.raises(ConnectorException) as info:
            conn.open_request(HTTPRequest("POST", "http://x/", body=body), False)
        assert info.value.error_class == ErrorClass.INVALID_REQUEST
    assert conn.outstanding == {}
    with pytest.raises(FrameTooLargeError):
        conn.send_http(7, "t", None, None, 0, "POST", "http://x/", None, b"x" * 2000)
    assert conn.outstanding == {}
    waiter = open_one(conn)  # still usable
    assert conn.outstanding == {waiter.request_id: False}


def test_request_ids_are_unique_under_threads(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=10)
    got: List[List[int]] = [[] for _ in range(8)]

    def take(out: List[int]) -> None:
        for i in range(3000):
            out.append(conn.next_request_id() if i % 2 else open_one(conn).request_id)

    threads = [threading.Thread(target=take, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for g in got for i in g]
    assert sorted(ids) == list(range(10, 10 + 8 * 3000))


# ------------------------------------------------------------------ receiving
def test_events_api_without_waiters_returns_what_arrives(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    frame = conn.send_http(1, "t", None, None, 0, "GET", "http://x/", None, None)
    assert frame[4] == 0 and conn.outstanding == {1: False}
    (event,) = conn.receive_data(answer(1))
    assert isinstance(event, ResponseReceived) and event.request_id == 1
    assert conn.outstanding == {}
    assert conn.response(event).body == b"ok"


def test_bytes_split_anywhere_give_the_same_events(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    for rid in (1, 2, 3):
        conn.send_http(rid, "t", None, None, 0, "GET", "http://x/", None, None, stream=True)
    data = (
        ServerConnection.send_stream_start(1, 200, {"k": "v"}, True)
        + ServerConnection.send_stream_chunk(1, b"chunk" * 100)
        + answer(2, "two")
        + _codec_py.encode_credit_update(1, 1)
        + answer(1, "")
        + answer(3, "x" * 5000)
    )
    whole = core.ClientConnection(request_id_seed=1)
    for rid in (1, 2, 3):
        whole.send_http(rid, "t", None, None, 0, "GET", "http://x/", None, None, stream=True)
    expected = whole.receive_data(data)
    rng = random.Random(7)
    got: List[Any] = []
    i = 0
    while i < len(data):
        j = min(len(data), i + rng.randint(1, 700))
        buf = conn.get_buffer()
        buf[: j - i] = data[i:j]
        got.extend(conn.buffer_updated(j - i))
        i = j
    assert got == expected
    assert [type(e).__name__ for e in got] == [
        "StreamStarted",
        "StreamDataReceived",
        "ExecuteResponseFrame",
        "CreditsUpdated",
        "ExecuteResponseFrame",
        "ExecuteResponseFrame",
    ]


def test_waiters_get_their_events_in_order(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    a = open_one(conn, stream=True)
    b = open_one(conn)
    assert not a.ready
    with pytest.raises(LookupError):
        a.take()
    left = conn.receive_data(
        ServerConnection.send_stream_start(1, 201, {"x": "y"}, True)
        + ServerConnection.send_stream_chunk(1, b"part")
        + answer(2, "bee")
        + answer(1, "")
    )
    assert left == []
    assert a.ready and a.finished and b.ready and b.finished
    assert a.take() == StreamStarted(1, 201, {"x": "y"}, True)
    assert a.take() == StreamDataReceived(1, b"part")
    last = a.take()
    assert isinstance(last, ResponseReceived) and last.request_id == 1
    assert not a.ready
    assert conn.response(b.take()).body == b"bee"
    assert conn.outstanding == {}


@pytest.mark.parametrize(
    "frame, event_type",
    [
        (ServerConnection.send_stream_start(1, 200, {}, True), StreamStarted),
        (ServerConnection.send_stream_chunk(1, b"x"), StreamDataReceived),
        (ServerConnection.send_health(True, "ok", 0, 5), HealthReceived),
        (_codec_py.encode_credit_update(5, 5), CreditsUpdated),
    ],
)
def test_any_extension_message_marks_the_runtime_extended(
    core: ModuleType, frame: bytes, event_type: type
) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    conn.send_http(1, "t", None, None, 0, "GET", "http://x/", None, None, stream=True)
    conn.receive_data(answer(7))  # a plain answer says nothing about extensions
    assert conn.extended is False
    events = conn.receive_data(frame)
    assert conn.extended is True
    assert [type(e) for e in events] == [event_type]
    if event_type is CreditsUpdated:
        assert conn.credits == 5


def test_stray_stream_frames_are_dropped(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    plain = open_one(conn)  # did not opt in
    streamed = open_one(conn, stream=True)
    events = conn.receive_data(
        ServerConnection.send_stream_chunk(999, b"unknown")
        + ServerConnection.send_stream_start(plain.request_id, 200, {}, True)
        + ServerConnection.send_stream_chunk(plain.request_id, b"not asked for")
        + answer(streamed.request_id, "")
        + ServerConnection.send_stream_chunk(streamed.request_id, b"after the end")
    )
    assert events == []
    assert not plain.ready
    (terminal,) = [streamed.take()]
    assert isinstance(terminal, ResponseReceived) and not streamed.ready


@pytest.mark.parametrize("mtype", [0, 2, 7, 9, 200])
def test_unknown_message_types_are_ignored(core: ModuleType, mtype: int) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    w = open_one(conn)
    assert conn.receive_data(_codec_py.encode_frame(mtype, b"\x00" * 12)) == []
    assert not conn.closed
    conn.receive_data(answer(w.request_id))
    assert w.finished


@pytest.mark.parametrize(
    "data, oversized",
    [
        (_codec_py.encode_frame(1, b"\x01\x02\x03"), False),
        (_codec_py.encode_frame(5, b"\xff" * 16), False),
        (struct.pack(">IB", 0, 1), False),
        (struct.pack(">IB", 10 * 1024 * 1024 + 1, 1) + b"\0" * 16, True),
    ],
)
def test_invalid_messages_close_the_connection_and_fail_every_waiter(
    core: ModuleType, data: bytes, oversized: bool
) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    waiters = [open_one(conn), open_one(conn, stream=True)]
    health, _ = conn.open_health(1000)
    with pytest.raises(ProtocolError) as info:
        conn.receive_data(data)
    assert isinstance(info.value, FrameTooLargeError) == oversized
    assert conn.closed and conn.error.error_class == ErrorClass.PERMANENT
    assert ("oversized" if oversized else "invalid frame") in conn.error.message
    for w in [*waiters, health]:
        assert w.finished and w.ready
        with pytest.raises(ConnectorException) as failed:
            w.take()
        assert failed.value.error_class == ErrorClass.PERMANENT
        assert failed.value.request_id == w.request_id
    assert conn.receive_data(answer(1)) == []  # nothing more is read


def test_closed_state(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    w = open_one(conn)
    conn.close()
    assert conn.closed and w.finished
    with pytest.raises(ConnectorException) as info:
        w.take()
    assert info.value.error_class == ErrorClass.TRANSIENT and info.value.request_id == 1
    with pytest.raises(ConnectorException) as info:
        open_one(conn)
    assert info.value.error_class == ErrorClass.TRANSIENT and "closed" in info.value.message
    with pytest.raises(ProtocolError):
        conn.send_http(9, "t", None, None, 0, "GET", "http://x/", None, None)
    with pytest.raises(ConnectorException):
        conn.open_health(100)
    assert conn.receive_data(answer(1)) == []
    assert conn.fail(ConnectorException("again", 1, 0)) is False  # the first reason stays
    assert "client was closed" in conn.error.message


# ------------------------------------------------------------------ request_id 0
def test_request_id_zero_goes_to_the_only_request(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    w = open_one(conn)
    assert conn.receive_data(RELEASED_INVALID) == []
    event = w.take()
    with pytest.raises(ConnectorException) as info:
        conn.response(event)
    assert info.value.error_class == ErrorClass.INVALID_REQUEST
    assert conn.outstanding == {}


def test_request_id_zero_with_two_candidates_reaches_neither(
    core: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    a, b = open_one(conn), open_one(conn)
    caplog.set_level(logging.WARNING, logger="vastar_fast")
    (left,) = conn.receive_data(RELEASED_INVALID)
    assert left.request_id == 0
    assert not a.ready and not b.ready
    assert any("request_id-0" in r.getMessage() for r in caplog.records)
    conn.receive_data(answer(b.request_id))
    assert b.ready and not a.ready


def test_an_abandoned_request_still_counts_as_a_candidate(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    a, b = open_one(conn), open_one(conn)
    assert conn.give_up(a) is None  # unextended runtime: nothing to cancel with
    assert conn.receive_data(RELEASED_INVALID)[0].request_id == 0
    assert not b.ready  # it may have been a's answer
    conn.receive_data(answer(a.request_id) + answer(b.request_id))
    assert b.ready
    c = open_one(conn)
    conn.give_up(c)
    conn.receive_data(RELEASED_INVALID)  # only c could own it: nobody waits, dropped
    assert conn.outstanding == {}


def test_health_check_and_request_id_zero(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    health, frame = conn.open_health(1000)
    assert frame[4] == 2 and health.health
    with pytest.raises(RuntimeError):
        conn.open_health(1000)
    conn.receive_data(RELEASED_INVALID)  # released runtime: its answer to a HealthCheck
    assert isinstance(health.take(), ResponseReceived)
    # one request and a health check: a request_id-0 answer could be either's
    health2, _ = conn.open_health(1000)
    w = open_one(conn)
    conn.receive_data(RELEASED_INVALID)
    assert not health2.ready and not w.ready
    conn.give_up(health2)
    conn.give_up(w)
    # a runtime known to speak the extensions answers health checks itself (type 3),
    # so a pending health check is no candidate for request_id 0
    conn.receive_data(ServerConnection.send_health(True, "up", 1, 2))
    assert conn.extended
    health3, _ = conn.open_health(1000)
    w2 = open_one(conn)
    conn.receive_data(answer(w.request_id))  # the abandoned one is answered at last
    conn.receive_data(RELEASED_INVALID)
    assert w2.ready and not health3.ready
    conn.receive_data(ServerConnection.send_health(True, "up", 0, 2))
    assert health3.take() == HealthReceived(True, "up", 0, 2)


# ------------------------------------------------------------------ giving up
def test_give_up_cancels_only_an_unanswered_request_on_an_extended_runtime(
    core: ModuleType,
) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    a = open_one(conn)
    assert conn.give_up(a) is None and a.finished  # unextended: nothing to send
    conn.receive_data(_codec_py.encode_credit_update(4, 4))
    assert conn.extended and conn.credits == 4
    b = open_one(conn)
    cancel = conn.give_up(b)
    assert cancel == _codec_py.encode_cancel_request(b.request_id)
    assert conn.give_up(b) == cancel  # still unanswered: asking again is harmless
    (late,) = conn.receive_data(answer(b.request_id))  # nobody waits: left over
    assert late.request_id == b.request_id
    assert conn.give_up(b) is None  # answered now
    c = open_one(conn)
    conn.receive_data(answer(c.request_id))
    assert conn.give_up(c) is None


def test_response_turns_an_answer_into_the_released_result(core: ModuleType) -> None:
    conn = core.ClientConnection(request_id_seed=1)
    ok = ResponseReceived(
        5, 0, None, _codec_py.encode_http_response_payload(201, {"h": "v"}, "b", False), 9
    )
    resp = conn.response(ok)
    assert resp == HTTPResponse(5, 201, {"h": "v"}, b"b", 9, ErrorClass.SUCCESS)
    assert list(vars(resp)) == list(vars(HTTPResponse(5, 201, {}, b"", 9, ErrorClass.SUCCESS)))
    for event, error_class, text in (
        (ResponseReceived(5, 3, "slow down", b"", 1), ErrorClass.RATE_LIMITED, "slow down"),
        (ResponseReceived(5, 1, None, b"", 1), ErrorClass.TRANSIENT, "error class 1"),
        (ResponseReceived(5, 0, None, b"", 1), ErrorClass.PERMANENT, "empty payload"),
        (ResponseReceived(5, 0, None, b"{", 1), ErrorClass.PERMANENT, "could not be read"),
    ):
        with pytest.raises(ConnectorException) as info:
            conn.response(event)
        assert (info.value.error_class, info.value.request_id) == (error_class, 5)
        assert text in info.value.message


def test_the_opt_in_reaches_the_server_half(core: ModuleType) -> None:
    """Both halves of connection.py: the client's opt-in is what ServerConnection reads,
    and only then is the peer extended (allowed CreditUpdate and message types 5+)."""
    from vastar_fast.protocol.connection import RequestReceived, extensions_of

    conn = core.ClientConnection(request_id_seed=1)
    server = ServerConnection()
    (plain,) = server.receive_data(conn.open_request(HTTPRequest("GET", "http://x/"), False)[1])
    assert isinstance(plain, RequestReceived) and plain.extensions == frozenset()
    assert not server.extended and server.send_credit_update(1, 1) == b""
    (opted,) = server.receive_data(conn.open_request(HTTPRequest("GET", "http://x/"), True)[1])
    assert opted.extensions == frozenset({"stream"}) and server.extended
    assert extensions_of([("k", "v"), ("vastar-ext", " stream , other,")]) == {"stream", "other"}
