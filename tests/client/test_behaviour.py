"""One behaviour suite for both clients (RuntimeClient and AsyncRuntimeClient).

Every test runs against each client through the adapters in ``adapters.py``, on each
twin (the ``implementation`` fixture), against the fake runtime in ``fake_runtime.py``.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

from vastar_fast import ConnectorException, ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import InvalidMessage, ServerConnection

from .adapters import ADAPTERS, Outcome
from .fake_runtime import RELEASED_INVALID, FakeRuntime, Peer, ok, path_of, request_id, wait_for

SSE_A = b'data: {"choices":[{"delta":{"content":"He"}}]}\n\n'
SSE_B = b'data: {"choices":[{"delta":{"content":"llo"}}]}\n\ndata: [DONE]\n\n'


@pytest.fixture(params=sorted(ADAPTERS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(client_kind: str) -> Iterator[Callable[..., Any]]:
    made: List[Any] = []

    def make(rt: FakeRuntime, **config: Any) -> Any:
        adapter = ADAPTERS[client_kind](RuntimeConfig(socket_path=rt.socket_path, **config))
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.shutdown()


def failure(outcome: Outcome) -> ConnectorException:
    assert isinstance(outcome, ConnectorException), outcome
    return outcome


# ------------------------------------------------------------------ round trips
def test_success_round_trip_carries_every_field(make_client: Callable[..., Any]) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.send(ok(event, body="héllo ✓", headers={"content-type": "text/plain", "x-a": "1"}))

    with FakeRuntime(handler) as rt:
        client = make_client(rt, tenant_id="t1", workspace_id="w1")
        before = int(time.time() * 1000)
        resp = client.execute(
            HTTPRequest(
                method="post",
                url="http://example.test/x",
                headers={"Content-Type": "application/json"},
                body=b'{"a": 1}',
                timeout_ms=5000,
                trace_id="tr-1",
            )
        )
        after = int(time.time() * 1000)
    assert isinstance(resp, HTTPResponse)
    assert (resp.status_code, resp.body, resp.duration_us) == (200, "héllo ✓".encode(), 42)
    assert resp.headers == {"content-type": "text/plain", "x-a": "1"}
    assert resp.error_class == ErrorClass.SUCCESS and resp.error_message is None
    same = HTTPResponse(resp.request_id, 200, resp.headers, resp.body, 42, ErrorClass.SUCCESS)
    assert vars(resp) == vars(same) and list(vars(resp)) == list(vars(same))
    (event,) = rt.requests()
    frame = event.frame
    assert resp.request_id == frame.request_id
    assert (frame.tenant_id, frame.workspace_id, frame.trace_id) == ("t1", "w1", "tr-1")
    assert (frame.connector_name, frame.operation) == ("http", "request")
    assert before + 5000 <= frame.deadline_at_ms <= after + 5000
    assert json.loads(frame.payload) == {
        "method": "POST",
        "url": "http://example.test/x",
        "headers": {"Content-Type": "application/json"},
        "body": '{"a": 1}',
    }
    assert frame.headers == []  # no opt-in for a plain execute_http


def test_request_fields_fall_back_to_the_config_like_the_released_sdk(
    make_client: Callable[..., Any],
) -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        client = make_client(rt, tenant_id="cfg-t", workspace_id="cfg-w", timeout_ms=7000)
        before = int(time.time() * 1000)
        client.execute(HTTPRequest("GET", "http://x/", tenant_id="", workspace_id="", timeout_ms=0))
        client.execute(HTTPRequest("GET", "http://x/", tenant_id="t", workspace_id="w"))
    first, second = (e.frame for e in rt.requests())
    assert (first.tenant_id, first.workspace_id) == ("cfg-t", "cfg-w")
    assert before + 7000 <= first.deadline_at_ms <= before + 7000 + 5000
    assert (second.tenant_id, second.workspace_id) == ("t", "w")


def test_request_ids_count_up_from_the_clock_and_stay_unique_under_concurrency(
    make_client: Callable[..., Any],
) -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event, body=str(request_id(event))))) as rt:
        client = make_client(rt)
        now = int(time.time() * 1000)
        sequential = [client.execute(HTTPRequest("GET", "http://x/")).request_id for _ in range(3)]
        parallel = client.concurrently([HTTPRequest("GET", "http://x/") for _ in range(64)])
    assert sequential == [sequential[0], sequential[0] + 1, sequential[0] + 2]
    assert now - 1000 <= sequential[0] <= now + 60_000
    ids = [r.request_id for r in parallel]  # type: ignore[union-attr]
    assert all(r.body == str(r.request_id).encode() for r in parallel)  # type: ignore[union-attr]
    assert len(set(ids + sequential)) == 67
    assert rt.connections == 1


@pytest.mark.parametrize("error_class", [c for c in ErrorClass if c != ErrorClass.SUCCESS])
def test_each_error_class_raises_with_the_runtime_message(
    make_client: Callable[..., Any], error_class: ErrorClass
) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.send(
            ServerConnection.send_error(request_id(event), error_class, f"boom {error_class.name}")
        )

    with FakeRuntime(handler) as rt:
        exc = failure(make_client(rt).outcome(HTTPRequest("GET", "http://x/")))
    assert exc.error_class == error_class
    assert exc.message == f"boom {error_class.name}"
    assert exc.request_id == rt.requests()[0].frame.request_id
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
def test_unusable_success_payload_is_permanent(
    make_client: Callable[..., Any], payload: bytes, fragment: str
) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.send(ServerConnection.send_response(request_id(event), 0, None, payload, 1))

    with FakeRuntime(handler) as rt:
        exc = failure(make_client(rt).outcome(HTTPRequest("GET", "http://x/")))
    assert exc.error_class == ErrorClass.PERMANENT
    assert fragment in exc.message


def test_out_of_order_answers_reach_their_callers(make_client: Callable[..., Any]) -> None:
    held: list = []
    lock = threading.Lock()

    def handler(peer: Peer, event: Any) -> None:
        with lock:
            held.append(event)
            if len(held) == 8:  # all in flight: answer them in reverse order
                peer.send(b"".join(ok(e, body=path_of(e)) for e in reversed(held)))

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        outcomes = client.concurrently(
            [HTTPRequest("GET", f"http://x/{i}", timeout_ms=10_000) for i in range(8)]
        )
    assert [r.body for r in outcomes] == [str(i).encode() for i in range(8)]  # type: ignore[union-attr]


# ------------------------------------------------------------------ failures
def test_runtime_that_closes_mid_response_fails_every_waiter_then_reconnects(
    make_client: Callable[..., Any],
) -> None:
    calls: list = []

    def handler(peer: Peer, event: Any) -> None:
        calls.append(event)
        if path_of(event) == "drop":
            frame = ok(event)
            peer.send(frame[: len(frame) // 2])
            peer.close()
        elif path_of(event) != "hang":
            peer.send(ok(event, body="second"))

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        hanging = client.in_background(HTTPRequest("GET", "http://x/hang", timeout_ms=30_000))
        assert wait_for(lambda: len(calls) == 1)
        exc = failure(client.outcome(HTTPRequest("GET", "http://x/drop", timeout_ms=10_000)))
        assert exc.error_class == ErrorClass.TRANSIENT
        assert "closed the connection" in exc.message
        other = failure(hanging(10))  # every waiter learns the connection is gone, no hang
        assert other.error_class == ErrorClass.TRANSIENT
        assert other.request_id == rt.requests()[0].frame.request_id
        assert not client.connected
        resp = client.execute(HTTPRequest("GET", "http://x/again"))  # reconnects by itself
        assert resp.body == b"second"
        assert rt.connections == 2


def test_runtime_that_never_answers_times_out_on_the_client(
    make_client: Callable[..., Any],
) -> None:
    with FakeRuntime(lambda peer, event: None) as rt:
        client = make_client(rt)
        start = time.monotonic()
        exc = failure(client.outcome(HTTPRequest("GET", "http://x/", timeout_ms=200)))
        waited = time.monotonic() - start
    assert exc.error_class == ErrorClass.TIMEOUT
    assert "client-side timeout" in exc.message and str(exc.request_id) in exc.message
    assert 0.2 <= waited < 10


def test_late_answer_after_a_client_timeout_is_dropped(make_client: Callable[..., Any]) -> None:
    pending: list = []

    def handler(peer: Peer, event: Any) -> None:
        pending.append(event)
        if len(pending) == 2:  # answer the stale request first, then the live one
            peer.send(ok(pending[0], body="stale") + ok(pending[1], body="fresh"))

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        assert failure(client.outcome(HTTPRequest("GET", "http://x/", timeout_ms=100)))
        resp = client.execute(HTTPRequest("GET", "http://x/", timeout_ms=5000))
    assert resp.body == b"fresh"


def test_oversized_frame_from_the_runtime_is_permanent_and_closes(
    make_client: Callable[..., Any],
) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.send(struct.pack(">IB", 10 * 1024 * 1024 + 1, 1) + b"\0" * 64)

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        exc = failure(client.outcome(HTTPRequest("GET", "http://x/", timeout_ms=5000)))
        assert exc.error_class == ErrorClass.PERMANENT
        assert "oversized" in exc.message
        assert wait_for(lambda: not client.connected)


def test_invalid_frame_from_the_runtime_is_permanent(make_client: Callable[..., Any]) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.send(codec.encode_frame(1, b"\x01\x02\x03"))

    with FakeRuntime(handler) as rt:
        exc = failure(make_client(rt).outcome(HTTPRequest("GET", "http://x/", timeout_ms=5000)))
    assert exc.error_class == ErrorClass.PERMANENT
    assert "invalid frame" in exc.message


def test_runtime_not_running_says_where_and_how(make_client: Callable[..., Any]) -> None:
    class Nowhere:
        socket_path = f"/tmp/vastar-test-nothing-here-{time.time_ns()}.sock"

    client = make_client(Nowhere)
    exc = failure(client.outcome(HTTPRequest("GET", "http://x/")))
    assert exc.error_class == ErrorClass.TRANSIENT
    assert Nowhere.socket_path in exc.message and "vastar runtime --socket" in exc.message


# ------------------------------------------------------------------ request_id 0
def test_released_runtimes_request_id_zero_answer_reaches_the_only_caller(
    make_client: Callable[..., Any],
) -> None:
    with FakeRuntime(lambda peer, event: peer.send(RELEASED_INVALID)) as rt:
        exc = failure(make_client(rt).outcome(HTTPRequest("GET", "http://x/", timeout_ms=5000)))
    assert exc.error_class == ErrorClass.INVALID_REQUEST
    assert exc.message == "Invalid FlatBuffers message"


def test_request_id_zero_answer_with_two_requests_in_flight_reaches_neither(
    make_client: Callable[..., Any],
) -> None:
    held: list = []

    def handler(peer: Peer, event: Any) -> None:
        held.append(event)
        if len(held) == 2:  # a request_id-0 error, then the healthy request's answer
            healthy = next(e for e in held if path_of(e) == "healthy")
            peer.send(RELEASED_INVALID + ok(healthy, body="mine"))

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        lost = client.in_background(HTTPRequest("GET", "http://x/lost", timeout_ms=800))
        assert wait_for(lambda: len(held) == 1)
        healthy = client.execute(HTTPRequest("GET", "http://x/healthy", timeout_ms=5000))
        assert healthy.body == b"mine"
        exc = failure(lost(10))
    assert exc.error_class == ErrorClass.TIMEOUT  # never the other request's answer


# ------------------------------------------------------------------ the request itself
def test_invalid_requests_fail_before_sending(make_client: Callable[..., Any]) -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        client = make_client(rt)
        exc = failure(client.outcome(HTTPRequest("POST", "http://x/", body=b"\xff\xfe")))
        assert exc.error_class == ErrorClass.INVALID_REQUEST and "UTF-8" in exc.message
        with pytest.raises(TypeError):
            client.execute(HTTPRequest("GET", "http://x/", headers={"X": 1}))  # type: ignore[dict-item]
        assert (
            client.execute(HTTPRequest("POST", "http://x/", body="ünïcode str")).status_code == 200
        )
    assert [json.loads(e.frame.payload).get("body") for e in rt.requests()] == ["ünïcode str"]


def test_oversized_request_fails_at_once_and_never_disturbs_another(
    make_client: Callable[..., Any],
) -> None:
    """11 MiB: INVALID_REQUEST (not retryable) before a byte is sent, while a healthy
    request on the same connection is in flight and gets its own answer."""
    gate = threading.Event()

    def handler(peer: Peer, event: Any) -> None:
        def later() -> None:
            gate.wait(10)
            peer.send(ok(event, body="healthy"))

        threading.Thread(target=later, daemon=True).start()

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        healthy = client.in_background(HTTPRequest("GET", "http://x/ok", timeout_ms=20_000))
        assert wait_for(lambda: len(rt.requests()) == 1)
        received = rt.bytes_received
        start = time.monotonic()
        for body in (b"x" * (11 * 1024 * 1024), "é" * (6 * 1024 * 1024)):
            exc = failure(client.outcome(HTTPRequest("POST", "http://x/big", body=body)))
            assert exc.error_class == ErrorClass.INVALID_REQUEST and not exc.is_retryable()
            assert "too large" in exc.message and "nothing was sent" in exc.message
        assert time.monotonic() - start < 10
        gate.set()
        resp = healthy(20)
        assert isinstance(resp, HTTPResponse) and resp.body == b"healthy"
        assert client.connected
        assert rt.bytes_received == received  # not one byte of the big ones
        assert client.execute(HTTPRequest("GET", "http://x/after")).status_code == 200
    assert rt.connections == 1


# ------------------------------------------------------------------ health
def test_health_check_against_extended_and_released_runtimes(
    make_client: Callable[..., Any],
) -> None:
    with FakeRuntime(lambda peer, event: None, health="extended", credits=1000) as rt:
        status = make_client(rt).health()
    assert (status.healthy, status.message, status.available_credits, status.supported) == (
        True,
        "ok",
        1000,
        True,
    )
    with FakeRuntime(lambda peer, event: None, health="released") as rt:
        status = make_client(rt).health()
    assert status.supported is False and status.healthy is True


# ------------------------------------------------------------------ streaming
def _streaming_handler(gate: threading.Event, gate_seen: list, cancels: list) -> Any:
    def handler(peer: Peer, event: Any) -> None:
        rid = request_id(event)
        assert event.extensions == frozenset({"stream"})

        def run() -> None:
            peer.send(
                ServerConnection.send_stream_start(
                    rid, 200, {"content-type": "text/event-stream"}, True
                )
            )
            peer.send(ServerConnection.send_stream_chunk(rid, SSE_A))
            # The rest exists only once the client has shown the first delta: a client
            # that buffers the stream never sets the gate before the wait gives up.
            gate_seen.append(gate.wait(10))
            peer.send(ServerConnection.send_stream_chunk(rid, SSE_B))
            peer.send(
                ServerConnection.send_http_response(
                    rid, 200, {"content-type": "text/event-stream"}, "", True, 7
                )
            )

        threading.Thread(target=run, daemon=True).start()

    return handler


def test_stream_delivers_each_delta_before_the_rest_exists(
    make_client: Callable[..., Any],
) -> None:
    gate = threading.Event()
    gate_seen: list = []
    with FakeRuntime(_streaming_handler(gate, gate_seen, []), health="extended") as rt:
        client = make_client(rt)
        stream = client.stream(HTTPRequest("POST", "http://x/v1/chat/completions", body="{}"))
        assert stream.status_code == 200 and stream.streamed
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.next_delta() == "He"
        gate.set()
        assert stream.next_delta() == "llo"
        assert stream.next_delta() is None
        assert stream.duration_us == 7
        stream.close()
    assert gate_seen == [True]


def test_leaving_a_stream_early_cancels_it_at_the_runtime(make_client: Callable[..., Any]) -> None:
    gate = threading.Event()
    with FakeRuntime(_streaming_handler(gate, [], []), health="extended") as rt:
        client = make_client(rt)
        stream = client.stream(HTTPRequest("POST", "http://x/", body="{}"))
        assert stream.next_chunk() == SSE_A
        stream.close()
        assert wait_for(lambda: rt.cancels() == [stream.request_id])
        gate.set()
        # the connection still serves; the cancelled request's late frames are dropped
        stream2 = client.stream(HTTPRequest("POST", "http://x/", body="{}"))
        assert stream2.rest() == SSE_A + SSE_B
        stream2.close()
    assert rt.connections == 1


def test_stream_against_a_buffering_runtime_delivers_one_piece(
    make_client: Callable[..., Any],
) -> None:
    sse = (
        'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        'data: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n'
    )

    def handler(peer: Peer, event: Any) -> None:  # ignores the opt-in, like the released runtime
        peer.send(
            ServerConnection.send_http_response(
                request_id(event), 200, {"content-type": "text/event-stream"}, sse, True, 9
            )
        )

    with FakeRuntime(handler) as rt:
        client = make_client(rt)
        stream = client.stream(HTTPRequest("POST", "http://x/", body="{}"))
        assert not stream.streamed and stream.status_code == 200
        assert [stream.next_delta(), stream.next_delta(), stream.next_delta()] == ["a", "b", None]
        stream.close()
        stream = client.stream(HTTPRequest("POST", "http://x/", body="{}"))
        assert stream.next_chunk() == sse.encode() and stream.next_chunk() is None
        stream.close()


def test_stream_errors_before_and_during_the_stream(make_client: Callable[..., Any]) -> None:
    def handler(peer: Peer, event: Any) -> None:
        rid = request_id(event)
        if path_of(event) == "refused":
            peer.send(ServerConnection.send_error(rid, ErrorClass.TRANSIENT, "connect refused"))
            return
        peer.send(ServerConnection.send_stream_start(rid, 200, {}, True))
        peer.send(ServerConnection.send_stream_chunk(rid, b"data: partial"))
        peer.send(ServerConnection.send_error(rid, ErrorClass.TRANSIENT, "upstream closed"))

    with FakeRuntime(handler, health="extended") as rt:
        client = make_client(rt)
        with pytest.raises(ConnectorException) as info:
            client.stream(HTTPRequest("GET", "http://x/refused"))
        assert info.value.error_class == ErrorClass.TRANSIENT
        stream = client.stream(HTTPRequest("GET", "http://x/midway"))
        assert stream.next_chunk() == b"data: partial"
        with pytest.raises(ConnectorException) as info:
            stream.next_chunk()
        assert "upstream closed" in info.value.message
        stream.close()


# ------------------------------------------------------------------ concurrency
def test_one_socket_however_many_callers_connect_at_once(make_client: Callable[..., Any]) -> None:
    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        client = make_client(rt)
        client.connect_concurrently(16)
        assert client.execute(HTTPRequest("GET", "http://x/")).status_code == 200
        assert wait_for(lambda: rt.connections >= 1)
        time.sleep(0.2)
    assert rt.connections == 1


def test_many_callers_while_others_time_out_and_cancel(make_client: Callable[..., Any]) -> None:
    """Callers hammer one client; a third of the requests hang and time out (and are
    cancelled at the runtime); every other caller gets its own answer."""

    def handler(peer: Peer, event: Any) -> None:
        if not path_of(event).startswith("hang"):
            peer.send(ok(event, body=path_of(event)))

    with FakeRuntime(handler, health="extended") as rt:
        client = make_client(rt)
        assert client.health().supported  # the client learns the runtime takes cancels
        requests = [
            HTTPRequest("GET", f"http://x/hang{i}", timeout_ms=150)
            if i % 3 == 0
            else HTTPRequest("GET", f"http://x/ok{i}", timeout_ms=20_000)
            for i in range(60)
        ]
        start = time.monotonic()
        outcomes = client.concurrently(requests)
        # the 150 ms timeouts are honoured: nobody waits for the others' 20 s ones
        assert time.monotonic() - start < 5
        for i, outcome in enumerate(outcomes):
            if i % 3 == 0:
                assert failure(outcome).error_class == ErrorClass.TIMEOUT
            else:
                assert isinstance(outcome, HTTPResponse) and outcome.body == f"ok{i}".encode()
        hung = {e.frame.request_id for e in rt.requests() if path_of(e).startswith("hang")}
        assert wait_for(lambda: set(rt.cancels()) == hung)
        assert client.execute(HTTPRequest("GET", "http://x/after")).body == b"after"
    assert rt.connections == 1
    assert not any(isinstance(e, InvalidMessage) for e in rt.events)


def test_cancels_never_interleave_with_a_frame_being_sent_nor_block_receiving(
    make_client: Callable[..., Any],
) -> None:
    """A 4 MiB POST is going out to a runtime that has stopped reading; meanwhile a
    request times out (its CancelRequest must wait for the frame on the wire) and
    another request's answer arrives (and must reach its caller at once)."""
    state: dict = {}

    def handler(peer: Peer, event: Any) -> None:
        name = path_of(event)
        state[name] = event
        if name == "slow":  # both small requests are in: stop reading for a while
            peer.stall(1.5)

            def answer_quick() -> None:
                time.sleep(0.4)
                peer.send(ok(state["quick"], body="quick"))

            threading.Thread(target=answer_quick, daemon=True).start()
        elif name == "big":
            peer.send(ok(event, body="big"))

    with FakeRuntime(handler, health="extended", recv_size=4096) as rt:
        client = make_client(rt)
        assert client.health().supported
        quick = client.in_background(HTTPRequest("GET", "http://x/quick", timeout_ms=20_000))
        assert wait_for(lambda: "quick" in state)
        slow = client.in_background(HTTPRequest("GET", "http://x/slow", timeout_ms=300))
        assert wait_for(lambda: "slow" in state)
        big = client.in_background(
            HTTPRequest("POST", "http://x/big", body=b"y" * (4 * 1024 * 1024), timeout_ms=20_000)
        )
        started = time.monotonic()
        got_quick = quick(10)
        quick_at = time.monotonic() - started
        assert isinstance(got_quick, HTTPResponse) and got_quick.body == b"quick"
        assert failure(slow(10)).error_class == ErrorClass.TIMEOUT
        got_big = big(20)
        assert isinstance(got_big, HTTPResponse) and got_big.body == b"big"
        assert quick_at < 1.2  # while the big frame was still stuck
        slow_rid = state["slow"].frame.request_id
        assert wait_for(lambda: rt.cancels() == [slow_rid])  # after the big frame, intact
    assert not any(isinstance(e, InvalidMessage) for e in rt.events)
    assert [path_of(e) for e in rt.requests()][:3] == ["quick", "slow", "big"]


def test_a_runtime_that_stops_reading_cannot_freeze_the_sender(
    make_client: Callable[..., Any],
) -> None:
    def handler(peer: Peer, event: Any) -> None:
        peer.stall(30)  # never reads again (within the test)

    with FakeRuntime(handler, recv_size=4096) as rt:
        client = make_client(rt)
        first = client.in_background(HTTPRequest("GET", "http://x/first", timeout_ms=30_000))
        assert wait_for(lambda: len(rt.requests()) == 1)
        start = time.monotonic()
        exc = failure(
            client.outcome(
                HTTPRequest("POST", "http://x/big", body=b"z" * (8 * 1024 * 1024), timeout_ms=500)
            )
        )
        assert exc.error_class in (ErrorClass.TIMEOUT, ErrorClass.TRANSIENT)
        assert time.monotonic() - start < 10
        client.close()
        assert failure(first(10)).error_class == ErrorClass.TRANSIENT


def test_concurrent_one_mib_posts_all_complete(make_client: Callable[..., Any]) -> None:
    """Several large POSTs at once against a runtime that reads slowly: every sender
    resumes after backpressure, long before its own (two-minute) timeout, instead of
    waiting for it while holding its credit."""

    def handler(peer: Peer, event: Any) -> None:
        peer.send(ok(event, body=str(len(json.loads(event.frame.payload)["body"]))))

    with FakeRuntime(handler, health="extended", credits=16, recv_size=8192) as rt:
        client = make_client(rt)
        client.health()
        requests = [
            HTTPRequest("POST", f"http://x/{i}", body=b"p" * (1024 * 1024), timeout_ms=120_000)
            for i in range(8)
        ]
        outcomes = client.concurrently(requests, timeout=40)
    assert [getattr(o, "body", o) for o in outcomes] == [str(1024 * 1024).encode()] * 8
