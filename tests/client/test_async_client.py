"""AsyncRuntimeClient against the fake runtime: multiplexing, credits, streaming, failures."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from support import GOLDEN_DIR
from vastar_fast import (
    AsyncRuntimeClient,
    ConnectorException,
    ErrorClass,
    HTTPRequest,
    RuntimeConfig,
)
from vastar_fast.protocol.connection import (
    CancelReceived,
    HealthCheckReceived,
    RequestReceived,
    ServerConnection,
)

from .fake_runtime import FakeRuntime, Peer, ok, request_id


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def extended_handler(credits: int, answer) -> object:  # type: ignore[no-untyped-def]
    """A vastar-fast-like runtime: health + credits, then `answer` for requests."""

    def handler(peer: Peer, event: object) -> None:
        if isinstance(event, HealthCheckReceived):
            peer.send(ServerConnection.send_health(True, "ok", 0, credits))
            peer.send(peer.server.send_credit_update(credits, credits))
        elif isinstance(event, CancelReceived):
            pass
        else:
            answer(peer, event)

    return handler


def test_500_concurrent_requests_on_one_connection_answered_out_of_order() -> None:
    batch: list = []
    lock = threading.Lock()

    def answer(peer: Peer, event: object) -> None:
        with lock:
            batch.append(event)
            if len(batch) == 50:  # answer each batch of 50 in reverse order
                peer.send(b"".join(ok(e, body=str(request_id(e))) for e in reversed(batch)))
                batch.clear()

    async def main(path: str) -> list:
        async with AsyncRuntimeClient(RuntimeConfig(socket_path=path)) as client:
            assert client.credits == 1024
            reqs = [client.execute_http(HTTPRequest("GET", f"http://x/{i}")) for i in range(500)]
            return await asyncio.gather(*reqs)

    with FakeRuntime(extended_handler(1024, answer)) as rt:
        responses = run(main(rt.socket_path))
    assert rt.connections == 1
    assert len(responses) == 500
    assert all(r.body == str(r.request_id).encode() for r in responses)
    assert len({r.request_id for r in responses}) == 500


def test_credits_bound_requests_in_flight() -> None:
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    held: list = []

    def answer(peer: Peer, event: object) -> None:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            held.append(event)
            if len(held) == 4:  # answer only once the client has used all its credits
                out = b"".join(ok(e) for e in held)
                in_flight["now"] -= len(held)
                held.clear()
                peer.send(out)

    async def main(path: str) -> int:
        async with AsyncRuntimeClient(RuntimeConfig(socket_path=path)) as client:
            rs = await asyncio.gather(
                *(client.execute_http(HTTPRequest("GET", "http://x/")) for _ in range(40))
            )
            return len(rs)

    with FakeRuntime(extended_handler(4, answer)) as rt:
        assert run(main(rt.socket_path)) == 40
    assert in_flight["max"] == 4


def test_released_runtime_without_health_support() -> None:
    golden = open(os.path.join(GOLDEN_DIR, "runtime_invalid_flatbuffer_response.bin"), "rb").read()

    def handler(peer: Peer, event: object) -> None:
        peer.send(golden if isinstance(event, HealthCheckReceived) else ok(event, body="plain"))

    async def main(path: str) -> tuple:
        async with AsyncRuntimeClient(RuntimeConfig(socket_path=path)) as client:
            status = await client.health_check()
            r = await client.execute_http(HTTPRequest("GET", "http://x/"))
            return status, r, client.credits

    with FakeRuntime(handler) as rt:
        status, resp, credits = run(main(rt.socket_path))
    assert status.supported is False
    assert resp.body == b"plain"
    assert credits is None


def test_errors_timeouts_and_connection_loss() -> None:
    def answer(peer: Peer, event: object) -> None:
        url = event.frame.payload  # type: ignore[attr-defined]
        if b"/err" in url:
            peer.send(
                ServerConnection.send_error(request_id(event), ErrorClass.RATE_LIMITED, "slow down")
            )
        elif b"/drop" in url:
            peer.close()
        # /hang: never answered

    async def main(path: str) -> None:
        client = AsyncRuntimeClient(RuntimeConfig(socket_path=path))
        await client.connect()
        with pytest.raises(ConnectorException) as info:
            await client.execute_http(HTTPRequest("GET", "http://x/err"))
        assert (
            info.value.error_class == ErrorClass.RATE_LIMITED and info.value.message == "slow down"
        )
        start = time.monotonic()
        with pytest.raises(ConnectorException) as info:
            await client.execute_http(HTTPRequest("GET", "http://x/hang", timeout_ms=150))
        assert info.value.error_class == ErrorClass.TIMEOUT
        assert time.monotonic() - start >= 0.15
        hanging = asyncio.ensure_future(
            client.execute_http(HTTPRequest("GET", "http://x/hang", timeout_ms=30_000))
        )
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectorException) as info:
            await client.execute_http(HTTPRequest("GET", "http://x/drop"))
        assert info.value.error_class == ErrorClass.TRANSIENT
        with pytest.raises(ConnectorException) as info2:
            await hanging  # every waiter learns the connection is gone, no hang
        assert info2.value.error_class == ErrorClass.TRANSIENT
        assert not client.connected
        await client.close()

    with FakeRuntime(extended_handler(64, answer)) as rt:
        run(main(rt.socket_path))


def test_runtime_not_running() -> None:
    async def main() -> None:
        client = AsyncRuntimeClient(
            RuntimeConfig(socket_path=f"/tmp/vastar-none-{os.getpid()}.sock")
        )
        with pytest.raises(ConnectorException) as info:
            await client.execute_http(HTTPRequest("GET", "http://x/"))
        assert info.value.error_class == ErrorClass.TRANSIENT
        assert "vastar runtime --socket" in info.value.message

    run(main())


def test_async_streaming_incremental_buffered_and_cancel() -> None:
    cancels: list = []
    release = threading.Event()

    def handler(peer: Peer, event: object) -> None:
        if isinstance(event, HealthCheckReceived):
            peer.send(ServerConnection.send_health(True, "ok", 0, 16))
            return
        if isinstance(event, CancelReceived):
            cancels.append(event.request_id)
            return
        assert isinstance(event, RequestReceived)
        rid = request_id(event)
        if b"buffered" in event.frame.payload:
            body = 'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
            peer.send(
                ServerConnection.send_http_response(
                    rid, 200, {"content-type": "text/event-stream"}, body, True, 3
                )
            )
            return

        def run_stream() -> None:
            peer.send(
                ServerConnection.send_stream_start(
                    rid, 200, {"content-type": "text/event-stream"}, True
                )
            )
            peer.send(
                ServerConnection.send_stream_chunk(
                    rid, b'data: {"choices":[{"delta":{"content":"A"}}]}\n\n'
                )
            )
            release.wait(5)
            peer.send(
                ServerConnection.send_stream_chunk(
                    rid, b'data: {"choices":[{"delta":{"content":"B"}}]}\n\ndata: [DONE]\n\n'
                )
            )
            peer.send(ServerConnection.send_http_response(rid, 200, {}, "", True, 11))

        threading.Thread(target=run_stream, daemon=True).start()

    async def main(path: str) -> None:
        async with AsyncRuntimeClient(RuntimeConfig(socket_path=path)) as client:
            async with client.stream_http(HTTPRequest("POST", "http://x/s", body="{}")) as resp:
                assert resp.status_code == 200 and resp.streamed
                deltas = resp.iter_deltas()
                assert await deltas.__anext__() == "A"  # before the rest exists
                release.set()
                assert [d async for d in deltas] == ["B"]
            assert resp.duration_us == 11
            async with client.stream_http(
                HTTPRequest("POST", "http://x/buffered", body="{}")
            ) as resp2:
                assert not resp2.streamed
                assert [d async for d in resp2.iter_deltas()] == ["x"]
            release.clear()
            async with client.stream_http(HTTPRequest("POST", "http://x/s", body="{}")) as resp3:
                async for _chunk in resp3:
                    break
            deadline = time.monotonic() + 5
            while resp3.request_id not in cancels and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert cancels == [resp3.request_id]
            release.set()
            r = await client.execute_http(HTTPRequest("POST", "http://x/buffered", body="{}"))
            assert r.status_code == 200

    with FakeRuntime(handler) as rt:
        run(main(rt.socket_path))
