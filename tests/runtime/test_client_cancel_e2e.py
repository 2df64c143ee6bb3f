"""Both clients against the real daemon: a caller that leaves (a cancelled task or
consumer, an interrupted call, a stream closed early) cancels the upstream request."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid

import pytest

from vastar_fast import (
    AsyncRuntimeClient,
    ConnectorException,
    HTTPRequest,
    RuntimeClient,
    RuntimeConfig,
)

from .helpers import Daemon
from .upstream import Upstream, wait_until


def _config(daemon: Daemon) -> RuntimeConfig:
    return RuntimeConfig(socket_path=daemon.socket_path, tenant_id="tests")


def _names(upstream: Upstream, key: str) -> list:
    return [name for name, _ in upstream.events if name.startswith(key + ":")]


def test_cancelled_asyncio_consumer_cancels_the_upstream_stream(
    daemon: Daemon, upstream: Upstream
) -> None:
    key = f"aio-{uuid.uuid4().hex[:8]}"

    async def consume(client: AsyncRuntimeClient, got: list) -> None:
        request = HTTPRequest("GET", f"{upstream.base}/sse?gap=1.5&key={key}")
        async with client.stream_http(request) as stream:
            async for chunk in stream:
                got.append(chunk)

    async def main() -> None:
        async with AsyncRuntimeClient(_config(daemon)) as client:
            got: list = []
            task = asyncio.ensure_future(consume(client, got))
            while not got:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert got == [b"data: one\n\n"]
            await asyncio.sleep(2.5)  # past the moment the upstream would send the rest
            health = await client.health_check()
            assert health.active_requests == 0

    asyncio.run(asyncio.wait_for(main(), 60))
    assert _names(upstream, key) == [f"{key}:first"]  # the rest was never sent


def test_cancelled_asyncio_request_cancels_the_upstream_request(
    daemon: Daemon, upstream: Upstream
) -> None:
    key = f"aio-slow-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with AsyncRuntimeClient(_config(daemon)) as client:
            request = HTTPRequest("GET", f"{upstream.base}/slow?delay=5&key={key}")
            task = asyncio.ensure_future(client.execute_http(request))
            await asyncio.to_thread(wait_until, lambda: upstream.hits[key] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(wait_until, lambda: upstream.cancelled[key] == 1)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_sync_stream_closed_early_cancels_the_upstream_stream(
    daemon: Daemon, upstream: Upstream
) -> None:
    key = f"sync-{uuid.uuid4().hex[:8]}"
    with RuntimeClient(_config(daemon)) as client:
        with client.stream_http(HTTPRequest("GET", f"{upstream.base}/sse?gap=1.5&key={key}")) as s:
            assert next(iter(s)) == b"data: one\n\n"
        time.sleep(2.5)
        assert client.health_check().active_requests == 0
    assert _names(upstream, key) == [f"{key}:first"]


def test_interrupted_sync_call_cancels_the_upstream_request(
    daemon: Daemon, upstream: Upstream
) -> None:
    key = f"sync-slow-{uuid.uuid4().hex[:8]}"
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    with RuntimeClient(_config(daemon)) as client:
        assert client.health_check().supported  # the client learns the runtime takes cancels
        request = HTTPRequest("GET", f"{upstream.base}/slow?delay=5&key={key}")

        def interrupt_when_upstream_has_it() -> None:
            if wait_until(lambda: upstream.hits[key] == 1):
                signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=interrupt_when_upstream_has_it, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            client.execute_http(request)
        assert wait_until(lambda: upstream.cancelled[key] == 1)
        with pytest.raises(ConnectorException):  # and the client still works
            client.execute_http(HTTPRequest("GET", "http://127.0.0.1:1/", timeout_ms=2000))
