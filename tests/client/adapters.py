"""One small interface over both clients, so one behaviour suite runs against each.

``SyncAdapter`` drives ``RuntimeClient`` directly (concurrency: threads);
``AsyncAdapter`` runs ``AsyncRuntimeClient`` on a private event loop in a thread and
waits for each call (concurrency: tasks on that loop). Both expose the same blocking
methods; a test never knows which client it has.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, ClassVar, Iterator, List, Optional, Tuple, Union

from vastar_fast import (
    AsyncRuntimeClient,
    ConnectorException,
    HTTPRequest,
    HTTPResponse,
    RuntimeClient,
    RuntimeConfig,
)

Outcome = Union[HTTPResponse, BaseException]


class StreamHandle:
    """A stream being read: status/headers, then chunks or deltas one at a time."""

    status_code: int
    headers: dict
    streamed: bool
    request_id: int
    duration_us: int

    def next_chunk(self) -> Optional[bytes]: ...
    def next_delta(self) -> Optional[str]: ...
    def rest(self) -> bytes: ...
    def close(self) -> None: ...


class SyncAdapter:
    kind = "sync"

    def __init__(self, config: RuntimeConfig) -> None:
        self.client = RuntimeClient(config)

    def connect(self) -> None:
        self.client.connect()

    def close(self) -> None:
        self.client.close()

    def shutdown(self) -> None:
        self.client.close()

    @property
    def connected(self) -> bool:
        return self.client.connected

    def execute(self, request: HTTPRequest) -> HTTPResponse:
        return self.client.execute_http(request)

    def outcome(self, request: HTTPRequest) -> Outcome:
        try:
            return self.execute(request)
        except ConnectorException as exc:
            return exc

    def concurrently(self, requests: List[HTTPRequest], timeout: float = 60.0) -> List[Outcome]:
        """Every request at once (one thread each), outcomes in order."""
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            return list(pool.map(self.outcome, requests, timeout=timeout))

    def in_background(self, request: HTTPRequest) -> Callable[[float], Outcome]:
        """Start a request; returns a function that waits for its outcome."""
        result: List[Outcome] = []
        t = threading.Thread(target=lambda: result.append(self.outcome(request)), daemon=True)
        t.start()

        def wait(timeout: float = 30.0) -> Outcome:
            t.join(timeout)
            assert result, "the request did not finish in time"
            return result[0]

        return wait

    def health(self, timeout_ms: int = 5000) -> Any:
        return self.client.health_check(timeout_ms)

    def stream(self, request: HTTPRequest) -> StreamHandle:
        return _SyncStream(self.client.stream_http(request))

    def connect_concurrently(self, n: int) -> None:
        barrier = threading.Barrier(n)

        def go() -> None:
            barrier.wait()
            self.client.connect()

        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda _: go(), range(n)))

    def next_request_ids(self) -> int:
        channel = self.client._channel
        assert channel is not None
        return int(channel.conn.next_request_id())


class _SyncStream(StreamHandle):
    def __init__(self, stream: Any) -> None:
        self._s = stream
        self._chunks: Optional[Iterator[bytes]] = None
        self._deltas: Optional[Iterator[str]] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def next_chunk(self) -> Optional[bytes]:
        if self._chunks is None:
            self._chunks = iter(self._s)
        return next(self._chunks, None)

    def next_delta(self) -> Optional[str]:
        if self._deltas is None:
            self._deltas = self._s.iter_deltas()
        return next(self._deltas, None)

    def rest(self) -> bytes:
        return bytes(self._s.read())

    def close(self) -> None:
        self._s.close()


class AsyncAdapter:
    kind = "async"

    def __init__(self, config: RuntimeConfig, probe: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.client = self.run(self._make(config, probe))

    @staticmethod
    async def _make(config: RuntimeConfig, probe: bool) -> AsyncRuntimeClient:
        return AsyncRuntimeClient(config, probe=probe)

    def run(self, coro: Awaitable[Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def connect(self) -> None:
        self.run(self.client.connect())

    def close(self) -> None:
        self.run(self.client.close())

    def shutdown(self) -> None:
        try:
            self.close()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    @property
    def connected(self) -> bool:
        return self.client.connected

    def execute(self, request: HTTPRequest) -> HTTPResponse:
        return self.run(self.client.execute_http(request))  # type: ignore[no-any-return]

    def outcome(self, request: HTTPRequest) -> Outcome:
        try:
            return self.execute(request)
        except ConnectorException as exc:
            return exc

    def concurrently(self, requests: List[HTTPRequest], timeout: float = 60.0) -> List[Outcome]:
        async def all_of() -> List[Outcome]:
            return list(
                await asyncio.gather(
                    *(self.client.execute_http(r) for r in requests), return_exceptions=True
                )
            )

        return self.run(all_of(), timeout)  # type: ignore[no-any-return]

    def in_background(self, request: HTTPRequest) -> Callable[[float], Outcome]:
        fut = asyncio.run_coroutine_threadsafe(self.client.execute_http(request), self.loop)

        def wait(timeout: float = 30.0) -> Outcome:
            try:
                return fut.result(timeout)  # type: ignore[no-any-return]
            except ConnectorException as exc:
                return exc

        return wait

    def health(self, timeout_ms: int = 5000) -> Any:
        return self.run(self.client.health_check(timeout_ms))

    def stream(self, request: HTTPRequest) -> StreamHandle:
        return _AsyncStream(self, self.run(self._enter(request)))

    async def _enter(self, request: HTTPRequest) -> Any:
        return await self.client.stream_http(request).__aenter__()

    def connect_concurrently(self, n: int) -> None:
        async def all_of() -> None:
            await asyncio.gather(*(self.client.connect() for _ in range(n)))

        self.run(all_of())

    def next_request_ids(self) -> int:
        conn = self.client._conn
        assert conn is not None
        return int(conn.next_request_id())


class _AsyncStream(StreamHandle):
    def __init__(self, adapter: AsyncAdapter, stream: Any) -> None:
        self._a = adapter
        self._s = stream
        self._chunks: Any = None
        self._deltas: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    async def _next(self, it: Any) -> Any:
        try:
            return await it.__anext__()
        except StopAsyncIteration:
            return None

    def next_chunk(self) -> Optional[bytes]:
        if self._chunks is None:
            self._chunks = self._s.__aiter__()
        return self._a.run(self._next(self._chunks))  # type: ignore[no-any-return]

    def next_delta(self) -> Optional[str]:
        if self._deltas is None:
            self._deltas = self._s.iter_deltas()
        return self._a.run(self._next(self._deltas))  # type: ignore[no-any-return]

    def rest(self) -> bytes:
        return bytes(self._a.run(self._s.read()))

    def close(self) -> None:
        self._a.run(self._s.__aexit__(None, None, None))


def io_switches() -> List[Callable[[Optional[bool]], bool]]:
    """Each twin's private ``_client_io``: which path channels made from now on take
    (True: descriptors with SO_RCVTIMEO/SO_SNDTIMEO; False: the socket methods)."""
    from vastar_fast.protocol import _client_py

    switches: List[Callable[[Optional[bool]], bool]] = [_client_py._client_io]
    try:
        from vastar_fast.protocol._codec_c import _client_io
    except ImportError:  # compiled twin not built
        pass
    else:
        switches.append(_client_io)
    return switches


class SyncSocketMethodsAdapter(SyncAdapter):
    """RuntimeClient whose channel calls the socket object's methods on a non-blocking
    socket (protocol/_sockio.py) instead of recv/send on the descriptor bounded by
    SO_RCVTIMEO/SO_SNDTIMEO: the path both twins take on Windows."""

    kind = "sync-socket-methods"
    _alive = 0
    _before: ClassVar[List[Tuple[Callable[[Optional[bool]], bool], bool]]] = []

    def __init__(self, config: RuntimeConfig) -> None:
        switches = io_switches()
        if SyncSocketMethodsAdapter._alive == 0:
            SyncSocketMethodsAdapter._before = [(s, s(None)) for s in switches]
        SyncSocketMethodsAdapter._alive += 1
        for switch in switches:
            switch(False)
        super().__init__(config)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            SyncSocketMethodsAdapter._alive -= 1
            if SyncSocketMethodsAdapter._alive == 0:  # the last one restores the paths
                for switch, before in SyncSocketMethodsAdapter._before:
                    switch(before)


ADAPTERS = {
    "sync": SyncAdapter,
    "async": AsyncAdapter,
    "sync-socket-methods": SyncSocketMethodsAdapter,
}
