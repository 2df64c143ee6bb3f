"""RuntimeClient against a fake runtime speaking real frames over a real Unix socket."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time

import pytest

from support import GOLDEN_DIR
from vastar_fast import (
    ConnectorException,
    ErrorClass,
    HTTPRequest,
    HTTPResponseHelper,
    RuntimeClient,
    RuntimeConfig,
)
from vastar_fast.client.endpoint import Endpoint, resolve_endpoint
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import (
    CancelReceived,
    HealthCheckReceived,
    RequestReceived,
    ServerConnection,
)

from .fake_runtime import FakeRuntime, Peer, ok, request_id


def client_for(rt: FakeRuntime, **kw: object) -> RuntimeClient:
    return RuntimeClient(RuntimeConfig(socket_path=rt.socket_path, **kw))  # type: ignore[arg-type]


def test_success_round_trip_carries_every_field() -> None:
    seen = []

    def handler(peer: Peer, event: object) -> None:
        seen.append(event)
        peer.send(ok(event, body="héllo ✓", headers={"content-type": "text/plain", "x-a": "1"}))

    with FakeRuntime(handler) as rt, client_for(rt, tenant_id="t1", workspace_id="w1") as client:
        before = int(time.time() * 1000)
        resp = client.execute_http(
            HTTPRequest(
                method="post",
                url="http://example.test/x",
                headers={"Content-Type": "application/json"},
                body=b'{"a": 1}',
                timeout_ms=5000,
                trace_id="tr-1",
            )
        )
    assert resp.status_code == 200
    assert resp.body == "héllo ✓".encode()
    assert resp.headers == {"content-type": "text/plain", "x-a": "1"}
    assert resp.duration_us == 42
    assert resp.error_class == ErrorClass.SUCCESS and resp.error_message is None
    assert HTTPResponseHelper.get_header(resp, "X-A") == "1"
    (event,) = seen
    frame = event.frame
    assert resp.request_id == frame.request_id
    assert (frame.tenant_id, frame.workspace_id, frame.trace_id) == ("t1", "w1", "tr-1")
    assert (frame.connector_name, frame.operation) == ("http", "request")
    assert before + 5000 <= frame.deadline_at_ms <= int(time.time() * 1000) + 5000
    assert json.loads(frame.payload) == {
        "method": "POST",
        "url": "http://example.test/x",
        "headers": {"Content-Type": "application/json"},
        "body": '{"a": 1}',
    }
    assert frame.headers == []  # no opt-in for a plain execute_http


def test_request_ids_count_up_from_the_clock() -> None:
    ids = []

    def handler(peer: Peer, event: object) -> None:
        ids.append(request_id(event))
        peer.send(ok(event))

    now = int(time.time() * 1000)
    with FakeRuntime(handler) as rt, client_for(rt) as client:
        for _ in range(3):
            client.execute_http(HTTPRequest("GET", "http://x/"))
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    assert now - 1000 <= ids[0] <= now + 60_000


@pytest.mark.parametrize("error_class", [c for c in ErrorClass if c != ErrorClass.SUCCESS])
def test_each_error_class_raises_with_the_runtime_message(error_class: ErrorClass) -> None:
    def handler(peer: Peer, event: object) -> None:
        peer.send(
            ServerConnection.send_error(request_id(event), error_class, f"boom {error_class.name}")
        )

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/"))
    exc = info.value
    assert exc.error_class == error_class
    assert exc.message == f"boom {error_class.name}"
    assert exc.request_id > 0
    assert exc.is_retryable() == (
        error_class in (ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED, ErrorClass.TIMEOUT)
    )


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"", "empty payload"),
        (b"not json", "could not be read"),
        (b'{"headers": {}}', "status_code"),
    ],
)
def test_unusable_success_payload_is_permanent(payload: bytes, fragment: str) -> None:
    def handler(peer: Peer, event: object) -> None:
        peer.send(ServerConnection.send_response(request_id(event), 0, None, payload, 1))

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/"))
    assert info.value.error_class == ErrorClass.PERMANENT
    assert fragment in info.value.message


def test_out_of_order_responses_reach_their_callers() -> None:
    """Two threads share one client; the runtime answers the second request first."""
    held: list = []
    lock = threading.Lock()

    def handler(peer: Peer, event: object) -> None:
        with lock:
            held.append(event)
            if len(held) == 2:
                first, second = held
                peer.send(
                    ok(second, body=f"for {request_id(second)}")
                    + ok(first, body=f"for {request_id(first)}")
                )

    results: dict = {}
    with FakeRuntime(handler) as rt, client_for(rt) as client:

        def call(name: str) -> None:
            resp = client.execute_http(HTTPRequest("GET", f"http://x/{name}", timeout_ms=10_000))
            results[name] = resp

        threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert set(results) == {"a", "b"}
    for resp in results.values():
        assert resp.body == f"for {resp.request_id}".encode()
    assert results["a"].request_id != results["b"].request_id


def test_response_for_another_request_is_kept_not_dropped() -> None:
    """A single thread: an answer for request 2 arriving while 1 is awaited is filed."""
    frames: list = []

    def handler(peer: Peer, event: object) -> None:
        frames.append(event)

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        rid1, _ = client._send_http(HTTPRequest("GET", "http://x/1"), stream=False)
        rid2, _ = client._send_http(HTTPRequest("GET", "http://x/2"), stream=False)
        deadline = time.monotonic() + 5
        while len(frames) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        peer_sock = None
        # answer 2 then 1 through a fresh ServerConnection encoding
        data = ServerConnection.send_http_response(
            rid2, 200, {}, "two", False, 1
        ) + ServerConnection.send_http_response(rid1, 200, {}, "one", False, 1)
        # the fake's peer socket is the only accepted connection
        assert rt.connections == 1
        peer_sock = _only_peer(rt)
        peer_sock.sendall(data)
        first = client._next_event(rid1, time.monotonic() + 5)
        second = client._next_event(rid2, time.monotonic() + 5)
    assert (first.request_id, first.payload) == (
        rid1,
        codec.encode_http_response_payload(200, {}, "one", False),
    )
    assert second.request_id == rid2


def _only_peer(rt: FakeRuntime) -> socket.socket:
    return rt._peers[0].sock  # type: ignore[attr-defined]


def test_runtime_that_closes_mid_response_gives_transient_then_reconnects() -> None:
    calls = []

    def handler(peer: Peer, event: object) -> None:
        calls.append(event)
        if len(calls) == 1:
            frame = ok(event)
            peer.send(frame[: len(frame) // 2])
            peer.close()
        else:
            peer.send(ok(event, body="second"))

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=10_000))
        assert info.value.error_class == ErrorClass.TRANSIENT
        assert "closed the connection" in info.value.message
        assert not client.connected
        resp = client.execute_http(HTTPRequest("GET", "http://x/"))  # reconnects by itself
        assert resp.body == b"second"
        assert rt.connections == 2


def test_runtime_that_never_answers_times_out_on_the_client() -> None:
    with FakeRuntime(lambda peer, event: None) as rt, client_for(rt) as client:
        start = time.monotonic()
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=200))
        waited = time.monotonic() - start
    assert info.value.error_class == ErrorClass.TIMEOUT
    assert "client-side timeout" in info.value.message
    assert 0.2 <= waited < 10


def test_late_answer_after_a_client_timeout_is_dropped() -> None:
    pending: list = []

    def handler(peer: Peer, event: object) -> None:
        pending.append((peer, event))
        if len(pending) == 2:  # answer the stale request first, then the live one
            (p1, e1), (_p2, e2) = pending
            p1.send(ok(e1, body="stale") + ok(e2, body="fresh"))

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException):
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=100))
        resp = client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=5000))
    assert resp.body == b"fresh"


def test_oversized_frame_is_permanent_and_closes_the_connection() -> None:
    def handler(peer: Peer, event: object) -> None:
        peer.send(struct.pack(">IB", 10 * 1024 * 1024 + 1, 1) + b"\0" * 64)

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=5000))
        assert info.value.error_class == ErrorClass.PERMANENT
        assert "oversized" in info.value.message
        assert not client.connected


def test_invalid_frame_from_runtime_is_permanent() -> None:
    def handler(peer: Peer, event: object) -> None:
        peer.send(codec.encode_frame(1, b"\x01\x02\x03"))

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=5000))
    assert info.value.error_class == ErrorClass.PERMANENT


def test_released_runtime_invalid_message_with_request_id_zero_reaches_the_caller() -> None:
    golden = open(os.path.join(GOLDEN_DIR, "runtime_invalid_flatbuffer_response.bin"), "rb").read()

    with FakeRuntime(lambda peer, event: peer.send(golden)) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=5000))
    assert info.value.error_class == ErrorClass.INVALID_REQUEST
    assert info.value.message == "Invalid FlatBuffers message"


def test_golden_runtime_answer_decodes_to_the_released_shape() -> None:
    golden = open(os.path.join(GOLDEN_DIR, "runtime_get_200_response.bin"), "rb").read()
    from vastar_fast.protocol.connection import ClientConnection

    with FakeRuntime(lambda peer, event: peer.send(golden)) as rt:
        client = client_for(rt)
        client._conn = ClientConnection(request_id_seed=1795280070375)
        with client:
            resp = client.execute_http(HTTPRequest("GET", "http://127.0.0.1:8088/small"))
    assert resp.request_id == 1795280070375
    assert (resp.status_code, resp.body, resp.duration_us) == (200, b"hello, world!", 457)
    assert resp.headers["server"] == "nginx/1.22.1"
    assert HTTPResponseHelper.get_header(resp, "ETag") == '"6b01cc32-d"'


def test_runtime_not_running_says_where_and_how() -> None:
    path = f"/tmp/vastar-test-nothing-here-{os.getpid()}.sock"
    client = RuntimeClient(RuntimeConfig(socket_path=path))
    with pytest.raises(ConnectorException) as info:
        client.connect()
    assert info.value.error_class == ErrorClass.TRANSIENT
    assert path in info.value.message and "vastar runtime" in info.value.message
    with pytest.raises(ConnectorException) as info2:  # execute_http connects first
        client.execute_http(HTTPRequest("GET", "http://x/"))
    assert info2.value.error_class == ErrorClass.TRANSIENT


def test_tcp_runtime_not_running_names_the_port() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    client = RuntimeClient(RuntimeConfig(use_tcp=True, tcp_port=port))
    with pytest.raises(ConnectorException) as info:
        client.connect()
    assert f"127.0.0.1:{port}" in info.value.message
    assert info.value.error_class == ErrorClass.TRANSIENT


def test_environment_overrides_the_config() -> None:
    cfg = RuntimeConfig(socket_path="/cfg.sock", tcp_host="10.0.0.1", tcp_port=1)
    assert resolve_endpoint(cfg, {}) == Endpoint("/cfg.sock")
    assert resolve_endpoint(cfg, {"VASTAR_SOCKET_PATH": "/env.sock"}) == Endpoint("/env.sock")
    assert resolve_endpoint(cfg, {"VASTAR_USE_TCP": "true"}) == Endpoint(None, "10.0.0.1", 1)
    env = {"VASTAR_USE_TCP": "TRUE", "VASTAR_TCP_HOST": "127.0.0.2", "VASTAR_TCP_PORT": "7000"}
    assert resolve_endpoint(cfg, env) == Endpoint(None, "127.0.0.2", 7000)
    tcp_cfg = RuntimeConfig(use_tcp=True, tcp_port=6000)
    assert resolve_endpoint(tcp_cfg, {}) == Endpoint(None, "127.0.0.1", 6000)
    with pytest.raises(ConnectorException):
        resolve_endpoint(cfg, {"VASTAR_USE_TCP": "1", "VASTAR_TCP_PORT": "http"})


def test_env_socket_path_is_used_by_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        monkeypatch.setenv("VASTAR_SOCKET_PATH", rt.socket_path)
        with RuntimeClient(RuntimeConfig(socket_path="/nonexistent/x.sock")) as client:
            assert client.execute_http(HTTPRequest("GET", "http://x/")).status_code == 200


def test_tcp_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        server = ServerConnection()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            for event in server.receive_data(data):
                conn.sendall(ok(event, body="via tcp"))
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("VASTAR_USE_TCP", "true")
    monkeypatch.setenv("VASTAR_TCP_PORT", str(port))
    with RuntimeClient() as client:
        assert client.execute_http(HTTPRequest("GET", "http://x/")).body == b"via tcp"
    t.join(5)
    listener.close()


def test_connect_is_idempotent_and_close_is_safe_twice() -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        client = client_for(rt)
        client.connect()
        client.connect()
        assert rt_wait(lambda: rt.connections == 1)
        client.close()
        client.close()
        assert not client.connected


def rt_wait(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_invalid_requests_fail_before_sending() -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.execute_http(HTTPRequest("POST", "http://x/", body=b"\xff\xfe"))
        assert info.value.error_class == ErrorClass.INVALID_REQUEST
        assert "UTF-8" in info.value.message
        with pytest.raises(TypeError):
            client.execute_http(HTTPRequest("GET", "http://x/", headers={"X": 1}))  # type: ignore[dict-item]
        assert (
            client.execute_http(HTTPRequest("POST", "http://x/", body="ünïcode str")).status_code
            == 200
        )
    bodies = [
        json.loads(e.frame.payload).get("body") for e in rt.events if isinstance(e, RequestReceived)
    ]
    assert bodies == ["ünïcode str"]


def test_no_stdout_and_logging_only(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vastar_fast")
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt, client_for(rt) as client:
        client.execute_http(
            HTTPRequest("GET", "http://x/", headers={"Authorization": "Bearer sk-secret"})
        )
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert any("connected" in r.getMessage() for r in caplog.records)
    assert not any("sk-secret" in r.getMessage() for r in caplog.records)


def test_health_check_extended_and_released_runtimes() -> None:
    def extended(peer: Peer, event: object) -> None:
        if isinstance(event, HealthCheckReceived):
            peer.send(ServerConnection.send_health(True, "ok", 3, 1000))

    with FakeRuntime(extended) as rt, client_for(rt) as client:
        status = client.health_check()
    assert (
        status.healthy,
        status.message,
        status.active_requests,
        status.available_credits,
        status.supported,
    ) == (
        True,
        "ok",
        3,
        1000,
        True,
    )

    golden = open(os.path.join(GOLDEN_DIR, "runtime_invalid_flatbuffer_response.bin"), "rb").read()
    with FakeRuntime(lambda peer, event: peer.send(golden)) as rt, client_for(rt) as client:
        status = client.health_check()
    assert status.supported is False and status.healthy is True


def test_stream_http_incremental_and_cancel() -> None:
    cancels: list = []
    gate = threading.Event()

    def handler(peer: Peer, event: object) -> None:
        if isinstance(event, CancelReceived):
            cancels.append(event.request_id)
            return
        rid = request_id(event)
        assert event.extensions == frozenset({"stream"})

        def run() -> None:
            peer.send(
                ServerConnection.send_stream_start(
                    rid, 200, {"content-type": "text/event-stream"}, True
                )
            )
            peer.send(
                ServerConnection.send_stream_chunk(
                    rid, b'data: {"choices":[{"delta":{"content":"He"}}]}\n'
                )
            )
            gate.wait(5)  # the client must see the first delta before the rest exists
            peer.send(
                ServerConnection.send_stream_chunk(
                    rid, b'\ndata: {"choices":[{"delta":{"content":"llo"}}]}\n\ndata: [DONE]\n\n'
                )
            )
            peer.send(
                ServerConnection.send_http_response(
                    rid, 200, {"content-type": "text/event-stream"}, "", True, 7
                )
            )

        threading.Thread(target=run, daemon=True).start()

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with client.stream_http(
            HTTPRequest("POST", "http://x/v1/chat/completions", body="{}")
        ) as stream:
            assert stream.status_code == 200 and stream.streamed
            assert stream.headers["content-type"] == "text/event-stream"
            deltas = stream.iter_deltas()
            assert next(deltas) == "He"
            gate.set()
            assert list(deltas) == ["llo"]
        assert stream.duration_us == 7
        # early close cancels at the runtime
        gate.clear()
        with client.stream_http(HTTPRequest("POST", "http://x/", body="{}")) as stream2:
            first = next(iter(stream2))
            assert first.startswith(b"data:")
        assert rt_wait(lambda: cancels == [stream2.request_id])
        gate.set()
        # the connection is still usable afterwards; the cancelled request's frames are dropped
        with client.stream_http(HTTPRequest("POST", "http://x/", body="{}")) as stream3:
            gate.set()
            body = stream3.read()
    assert body.endswith(b"data: [DONE]\n\n")


def test_stream_http_against_a_buffering_runtime_delivers_one_piece() -> None:
    sse = 'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n'

    def handler(peer: Peer, event: object) -> None:  # ignores the opt-in, like the released runtime
        peer.send(
            ServerConnection.send_http_response(
                request_id(event), 200, {"content-type": "text/event-stream"}, sse, True, 9
            )
        )

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with client.stream_http(HTTPRequest("POST", "http://x/", body="{}")) as stream:
            assert not stream.streamed
            assert stream.status_code == 200
            assert list(stream.iter_deltas()) == ["a", "b"]
        with client.stream_http(HTTPRequest("POST", "http://x/", body="{}")) as stream:
            assert list(stream) == [sse.encode()]


def test_stream_http_error_before_start_raises() -> None:
    def handler(peer: Peer, event: object) -> None:
        peer.send(
            ServerConnection.send_error(request_id(event), ErrorClass.TRANSIENT, "connect refused")
        )

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with pytest.raises(ConnectorException) as info:
            client.stream_http(HTTPRequest("GET", "http://x/"))
    assert info.value.error_class == ErrorClass.TRANSIENT


def test_stream_http_error_mid_stream_raises_while_iterating() -> None:
    def handler(peer: Peer, event: object) -> None:
        rid = request_id(event)
        peer.send(ServerConnection.send_stream_start(rid, 200, {}, True))
        peer.send(ServerConnection.send_stream_chunk(rid, b"data: partial"))
        peer.send(
            ServerConnection.send_error(rid, ErrorClass.TRANSIENT, "upstream closed the stream")
        )

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        with client.stream_http(HTTPRequest("GET", "http://x/")) as stream:
            chunks = iter(stream)
            assert next(chunks) == b"data: partial"
            with pytest.raises(ConnectorException) as info:
                next(chunks)
    assert "upstream closed" in info.value.message
