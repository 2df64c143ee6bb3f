"""RuntimeClient specifics (the shared behaviour is in test_behaviour.py): endpoints,
transports, logging, the golden answer, interruption, and the channel's own API."""

from __future__ import annotations

import logging
import os
import signal
import socket
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
from vastar_fast.protocol.connection import RequestReceived, ServerConnection

from .fake_runtime import FakeRuntime, Peer, ok, path_of, request_id, wait_for


def client_for(rt: FakeRuntime, **kw: object) -> RuntimeClient:
    return RuntimeClient(RuntimeConfig(socket_path=rt.socket_path, **kw))  # type: ignore[arg-type]


def test_an_answer_for_another_request_is_kept_for_its_caller() -> None:
    """One thread, two requests: the answer to the second arrives first and is filed
    for it while the first is awaited."""
    with FakeRuntime(lambda peer, event: None) as rt, client_for(rt) as client:
        channel = client._channel
        assert channel is not None
        one = channel.start(HTTPRequest("GET", "http://x/1"))
        two = channel.start(HTTPRequest("GET", "http://x/2"))
        assert wait_for(lambda: len(rt.requests()) == 2)
        rt.peers[0].send(
            ServerConnection.send_http_response(two.request_id, 200, {}, "two", False, 1)
            + ServerConnection.send_http_response(one.request_id, 200, {}, "one", False, 1)
        )
        first = channel.conn.response(channel.next_event(one))
        second = channel.conn.response(channel.next_event(two))
    assert (first.request_id, first.body) == (one.request_id, b"one")
    assert (second.request_id, second.body) == (two.request_id, b"two")


def test_golden_runtime_answer_decodes_to_the_released_shape() -> None:
    golden = open(os.path.join(GOLDEN_DIR, "runtime_get_200_response.bin"), "rb").read()
    with FakeRuntime(lambda peer, event: peer.send(golden)) as rt:
        client = client_for(rt)
        client._next_id = 1795280070375  # the request id the golden answer carries
        with client:
            resp = client.execute_http(HTTPRequest("GET", "http://127.0.0.1:8088/small"))
    assert resp.request_id == 1795280070375
    assert (resp.status_code, resp.body, resp.duration_us) == (200, b"hello, world!", 457)
    assert resp.headers["server"] == "nginx/1.22.1"
    assert HTTPResponseHelper.get_header(resp, "ETag") == '"6b01cc32-d"'


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
        assert wait_for(lambda: rt.connections == 1)
        client.close()
        client.close()
        assert not client.connected
        # a closed client connects again when used, like the released one
        assert client.execute_http(HTTPRequest("GET", "http://x/")).status_code == 200
        assert rt.connections == 2
        client.close()


def test_a_subclass_that_overrides_execute_http_keeps_its_override() -> None:
    class Counting(RuntimeClient):
        calls = 0

        def execute_http(self, request):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().execute_http(request)

    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        with Counting(RuntimeConfig(socket_path=rt.socket_path)) as client:
            client.execute_http(HTTPRequest("GET", "http://x/"))
            client.execute_http(HTTPRequest("GET", "http://x/"))
    assert Counting.calls == 2


def test_request_ids_keep_counting_across_reconnects() -> None:
    def handler(peer: Peer, event: object) -> None:
        if path_of(event) == "drop":
            peer.close()
        else:
            peer.send(ok(event))

    with FakeRuntime(handler) as rt, client_for(rt) as client:
        first = client.execute_http(HTTPRequest("GET", "http://x/a")).request_id
        with pytest.raises(ConnectorException):
            client.execute_http(HTTPRequest("GET", "http://x/drop"))
        after = client.execute_http(HTTPRequest("GET", "http://x/b")).request_id
    assert after == first + 2


def test_no_stdout_and_logging_only(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vastar_fast")
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt, client_for(rt) as client:
        client.execute_http(
            HTTPRequest("GET", "http://x/", headers={"Authorization": "Bearer sk-secret"})
        )
        with pytest.raises(ConnectorException):
            client.execute_http(
                HTTPRequest(
                    "POST", "http://x/", headers={"Authorization": "sk-secret"}, body=b"\xff"
                )
            )
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert any("connected" in r.getMessage() for r in caplog.records)
    assert not any("sk-secret" in r.getMessage() for r in caplog.records)


def _interrupt_main_soon(after: float) -> None:
    """A real SIGINT to the main thread (Ctrl-C), which interrupts a blocking call."""
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    threading.Timer(after, signal.pthread_kill, args=(main, signal.SIGINT)).start()


def test_an_interrupted_call_cancels_its_request_and_leaves_the_client_usable() -> None:
    """KeyboardInterrupt while waiting (the sync analog of a cancelled task): the
    request is given up and cancelled at the runtime; the client keeps working."""

    def handler(peer: Peer, event: object) -> None:
        if path_of(event) != "hang":
            peer.send(ok(event, body=path_of(event)))

    with FakeRuntime(handler, health="extended") as rt, client_for(rt) as client:
        assert client.health_check().supported
        _interrupt_main_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            client.execute_http(HTTPRequest("GET", "http://x/hang", timeout_ms=20_000))
        (hung,) = [e for e in rt.requests() if path_of(e) == "hang"]
        assert wait_for(lambda: rt.cancels() == [hung.frame.request_id])
        assert client.execute_http(HTTPRequest("GET", "http://x/after")).body == b"after"


def test_an_interrupted_stream_cancels_its_request() -> None:
    def handler(peer: Peer, event: object) -> None:
        rid = request_id(event)
        peer.send(ServerConnection.send_stream_start(rid, 200, {}, True))
        peer.send(ServerConnection.send_stream_chunk(rid, b"data: one\n\n"))

    with FakeRuntime(handler, health="extended") as rt, client_for(rt) as client:
        stream = client.stream_http(HTTPRequest("GET", "http://x/s", timeout_ms=20_000))
        chunks = iter(stream)
        assert next(chunks) == b"data: one\n\n"
        _interrupt_main_soon(0.3)
        with pytest.raises(KeyboardInterrupt):
            next(chunks)
        assert wait_for(lambda: rt.cancels() == [stream.request_id])
        stream.close()
    assert len([e for e in rt.events if isinstance(e, RequestReceived)]) == 1


def test_close_from_another_thread_wakes_every_waiter() -> None:
    with FakeRuntime(lambda peer, event: None) as rt:
        client = client_for(rt)
        results: list = []

        def call() -> None:
            try:
                client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=30_000))
            except ConnectorException as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(rt.requests()) == 4)
        start = time.monotonic()
        client.close()
        for t in threads:
            t.join(10)
        assert time.monotonic() - start < 5
    assert [e.error_class for e in results] == [ErrorClass.TRANSIENT] * 4
    assert all("client was closed" in e.message for e in results)


def test_a_dropped_client_closes_its_socket_at_once() -> None:
    """No reference cycle between the client and its channel: without the garbage
    collector, dropping the last reference closes the connection."""
    import gc

    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        client = client_for(rt)
        client.execute_http(HTTPRequest("GET", "http://x/"))
        peer = rt.peers[0]
        gc.disable()
        try:
            del client
            assert wait_for(lambda: peer.sock.fileno() == -1)  # the fake saw EOF
        finally:
            gc.enable()
