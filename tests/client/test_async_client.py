"""AsyncRuntimeClient specifics (the shared behaviour is in test_behaviour.py):
multiplexing, credits, the probe, cancellation of tasks and consumers."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, List

import pytest

from vastar_fast import (
    AsyncRuntimeClient,
    ConnectorException,
    ErrorClass,
    HTTPRequest,
    RuntimeConfig,
)
from vastar_fast.protocol.connection import ServerConnection

from .fake_runtime import FakeRuntime, Peer, ok, path_of, request_id, wait_for


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def config(rt: FakeRuntime) -> RuntimeConfig:
    return RuntimeConfig(socket_path=rt.socket_path)


def test_500_concurrent_requests_on_one_connection_answered_out_of_order() -> None:
    batch: list = []
    lock = threading.Lock()

    def answer(peer: Peer, event: object) -> None:
        with lock:
            batch.append(event)
            if len(batch) == 50:  # answer each batch of 50 in reverse order
                peer.send(b"".join(ok(e, body=str(request_id(e))) for e in reversed(batch)))
                batch.clear()

    async def main(rt: FakeRuntime) -> list:
        async with AsyncRuntimeClient(config(rt)) as client:
            assert client.credits == 1024
            reqs = [client.execute_http(HTTPRequest("GET", f"http://x/{i}")) for i in range(500)]
            return await asyncio.gather(*reqs)

    with FakeRuntime(answer, health="extended", credits=1024) as rt:
        responses = run(main(rt))
    assert rt.connections == 1
    assert len(responses) == 500
    assert all(r.body == str(r.request_id).encode() for r in responses)
    assert len({r.request_id for r in responses}) == 500


def test_credits_bound_requests_in_flight() -> None:
    """The runtime holds every request it gets and answers all it holds every 50 ms: a
    client that ignored its 4 credits would have all 40 held at once."""
    held: List[Any] = []
    peak = {"held": 0}
    lock = threading.Lock()
    done = threading.Event()
    peers: List[Peer] = []

    def answer(peer: Peer, event: object) -> None:
        with lock:
            held.append(event)
            peak["held"] = max(peak["held"], len(held))
            if not peers:
                peers.append(peer)

    def flusher() -> None:
        while not done.is_set():
            time.sleep(0.05)
            with lock:
                out = b"".join(ok(e) for e in held)
                held.clear()
            if out and peers:
                peers[0].send(out)

    async def main(rt: FakeRuntime) -> int:
        async with AsyncRuntimeClient(config(rt)) as client:
            assert client.credits == 4
            rs = await asyncio.gather(
                *(client.execute_http(HTTPRequest("GET", "http://x/")) for _ in range(40))
            )
            return len(rs)

    t = threading.Thread(target=flusher, daemon=True)
    t.start()
    try:
        with FakeRuntime(answer, health="extended", credits=4) as rt:
            assert run(main(rt)) == 40
    finally:
        done.set()
        t.join(5)
    assert 1 <= peak["held"] <= 4


def test_released_runtime_without_health_support() -> None:
    async def main(rt: FakeRuntime) -> tuple:
        async with AsyncRuntimeClient(config(rt)) as client:
            status = await client.health_check()
            r = await client.execute_http(HTTPRequest("GET", "http://x/"))
            return status, r, client.credits

    with FakeRuntime(lambda peer, event: peer.send(ok(event, body="plain"))) as rt:
        status, resp, credits = run(main(rt))
    assert status.supported is False
    assert resp.body == b"plain"
    assert credits is None


def _held_stream_handler(release: threading.Event) -> Any:
    """Streams one chunk, then holds the rest until released; a cancelled request gets
    the runtime's terminal "cancelled by client" answer."""

    def handler(peer: Peer, event: object) -> None:
        rid = request_id(event)
        if path_of(event) == "plain":
            peer.send(ok(event, body="plain"))
            return
        peer.send(ServerConnection.send_stream_start(rid, 200, {}, True))
        peer.send(
            ServerConnection.send_stream_chunk(
                rid, b'data: {"choices":[{"delta":{"content":"A"}}]}\n\n'
            )
        )

        def rest() -> None:
            release.wait(20)
            peer.send(ServerConnection.send_http_response(rid, 200, {}, "", True, 1))

        threading.Thread(target=rest, daemon=True).start()

    return handler


class _CancelAnswers(FakeRuntime):
    """Answers a CancelRequest like vastar-fast's runtime: the terminal answer follows."""

    def _dispatch(self, peer: Peer, event: Any) -> None:
        from vastar_fast.protocol.connection import CancelReceived

        super()._dispatch(peer, event)
        if isinstance(event, CancelReceived):
            peer.send(
                ServerConnection.send_error(
                    event.request_id, ErrorClass.PERMANENT, "cancelled by client"
                )
            )


@pytest.mark.parametrize("how", ["task.cancel", "wait_for", "timeout"])
def test_a_cancelled_consumer_sends_cancel_request_and_frees_its_credit(how: str) -> None:
    """One credit: the next request can only run once the cancelled stream's credit is
    back, i.e. once the runtime has answered the CancelRequest."""
    if how == "timeout" and sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is new in Python 3.11")
    release = threading.Event()

    async def consume(client: AsyncRuntimeClient, got: list) -> None:
        async with client.stream_http(HTTPRequest("POST", "http://x/s", body="{}")) as s:
            async for delta in s.iter_deltas():
                got.append(delta)

    async def main(rt: FakeRuntime) -> None:
        async with AsyncRuntimeClient(config(rt)) as client:
            assert client.credits == 1
            got: list = []
            if how == "task.cancel":
                task = asyncio.ensure_future(consume(client, got))
                while not got:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            elif how == "wait_for":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(consume(client, got), 0.3)
            else:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):  # type: ignore[attr-defined]
                        await consume(client, got)
            assert got == ["A"]
            (streamed,) = rt.requests()
            assert await asyncio.to_thread(
                wait_for, lambda: rt.cancels() == [streamed.frame.request_id]
            )
            # the credit is free again: this would wait forever otherwise
            r = await asyncio.wait_for(
                client.execute_http(HTTPRequest("GET", "http://x/plain")), 10
            )
            assert r.body == b"plain"

    with _CancelAnswers(_held_stream_handler(release), health="extended", credits=1) as rt:
        try:
            run(main(rt))
        finally:
            release.set()


def test_a_cancelled_execute_http_sends_cancel_request() -> None:
    async def main(rt: FakeRuntime) -> None:
        async with AsyncRuntimeClient(config(rt)) as client:
            task = asyncio.ensure_future(
                client.execute_http(HTTPRequest("GET", "http://x/hang", timeout_ms=30_000))
            )
            await asyncio.to_thread(wait_for, lambda: len(rt.requests()) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            rid = rt.requests()[0].frame.request_id
            assert await asyncio.to_thread(wait_for, lambda: rt.cancels() == [rid])
            r = await client.execute_http(HTTPRequest("GET", "http://x/plain"))
            assert r.body == b"plain"

    def handler(peer: Peer, event: object) -> None:
        if path_of(event) == "plain":
            peer.send(ok(event, body="plain"))

    with _CancelAnswers(handler, health="extended", credits=1) as rt:
        run(main(rt))


def test_async_with_exits_cleanly_when_the_task_is_cancelled() -> None:
    release = threading.Event()
    state: dict = {}

    async def body(rt: FakeRuntime) -> None:
        async with AsyncRuntimeClient(config(rt)) as client:
            state["client"] = client
            async with client.stream_http(HTTPRequest("POST", "http://x/s", body="{}")) as s:
                state["stream"] = s
                async for _chunk in s:
                    state["chunk"] = True

    async def main(rt: FakeRuntime) -> None:
        task = asyncio.ensure_future(body(rt))
        while "chunk" not in state:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # nothing else escapes the exits
            await task
        assert not state["client"].connected
        rid = state["stream"].request_id
        assert await asyncio.to_thread(wait_for, lambda: rt.cancels() == [rid])

    with _CancelAnswers(_held_stream_handler(release), health="extended") as rt:
        try:
            run(main(rt))
        finally:
            release.set()


def test_cancelled_during_connect_leaves_no_connection_open() -> None:
    """``async with`` cancelled while the probe waits: the connection is closed again."""
    got_health = threading.Event()

    def handler(peer: Peer, event: object) -> None:
        got_health.set()  # never answers the probe

    async def main(rt: FakeRuntime) -> None:
        client = AsyncRuntimeClient(config(rt))

        async def enter() -> None:
            async with client:
                pass

        task = asyncio.ensure_future(enter())
        await asyncio.to_thread(got_health.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not client.connected
        assert client._protocol is None

    with FakeRuntime(handler, health=None) as rt:
        run(main(rt))
        peer = rt.peers[0]
        assert wait_for(lambda: peer.sock.fileno() == -1)  # the fake saw the connection end


def test_stream_and_execute_on_a_closed_client_reconnect() -> None:
    async def main(rt: FakeRuntime) -> None:
        client = AsyncRuntimeClient(config(rt), probe=False)
        assert (await client.execute_http(HTTPRequest("GET", "http://x/"))).status_code == 200
        await client.close()
        await client.close()
        assert not client.connected
        assert (await client.execute_http(HTTPRequest("GET", "http://x/"))).status_code == 200
        await client.close()

    with FakeRuntime(lambda peer, event: peer.send(ok(event))) as rt:
        run(main(rt))
    assert rt.connections == 2


def test_closing_fails_every_waiter_at_once() -> None:
    async def main(rt: FakeRuntime) -> None:
        client = AsyncRuntimeClient(config(rt), probe=False)
        await client.connect()
        calls = [
            asyncio.ensure_future(
                client.execute_http(HTTPRequest("GET", "http://x/", timeout_ms=30_000))
            )
            for _ in range(4)
        ]
        await asyncio.to_thread(wait_for, lambda: len(rt.requests()) == 4)
        await client.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(
            isinstance(r, ConnectorException) and r.error_class == ErrorClass.TRANSIENT
            for r in results
        )

    with FakeRuntime(lambda peer, event: None) as rt:
        run(main(rt))
