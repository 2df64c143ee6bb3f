"""``AsyncRuntimeClient``: the asyncio driver of the same sans-I/O core.

Many requests are multiplexed on one connection: each waits on its own future (or
queue, when streaming) and the protocol object files every received event there. When
the runtime announces credits (vastar-fast runtimes do, on an extended connection),
requests beyond them wait for a free slot instead of being refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, Optional, Type, Union

from ..errors import ConnectorException, FrameTooLargeError, ProtocolError
from ..protocol.connection import (
    ClientConnection,
    CreditsUpdated,
    Event,
    HealthReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from ..types import ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig
from .endpoint import Endpoint, resolve_endpoint
from .results import (
    HealthStatus,
    StreamState,
    health_from_event,
    invalid_request,
    response_from_event,
    response_timeout_s,
)

__all__ = ["AsyncHTTPStream", "AsyncRuntimeClient"]

log = logging.getLogger("vastar_fast.client")

_HEALTH_KEY = -1
_Waiter = Union["asyncio.Future[Event]", "asyncio.Queue[Any]"]


class _Protocol(asyncio.BufferedProtocol):
    """Receives straight into the frame buffer and files each event with its waiter."""

    def __init__(self, client: AsyncRuntimeClient) -> None:
        self._client = client
        self._conn = client._conn
        self.transport: Optional[asyncio.Transport] = None
        self._paused = False
        self._drained: Optional[asyncio.Future[None]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            events = self._conn.buffer_updated(nbytes)
        except FrameTooLargeError as exc:
            self._client._fail(f"the runtime sent an oversized frame: {exc}", ErrorClass.PERMANENT)
            return
        except ProtocolError as exc:
            self._client._fail(f"the runtime sent an invalid frame: {exc}", ErrorClass.PERMANENT)
            return
        file = self._client._file
        for event in events:
            file(event)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._client._fail(
            "the runtime closed the connection before answering; it may have stopped or "
            "restarted (the request may or may not have been executed)"
            if exc is None
            else f"lost the connection to the runtime: {exc}"
        )
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained


class AsyncRuntimeClient:
    """asyncio client of the Vastar connector runtime.

    ``async with AsyncRuntimeClient(config) as client:``; ``await
    client.execute_http(req)``; ``async with client.stream_http(req) as resp:``.
    Coroutines of one client may run concurrently; they share one connection.
    """

    def __init__(self, config: Optional[RuntimeConfig] = None, *, probe: bool = True) -> None:
        self.config = config if config is not None else RuntimeConfig()
        self._probe = probe
        self._conn = ClientConnection()
        self._protocol: Optional[_Protocol] = None
        self._endpoint: Optional[Endpoint] = None
        self._waiters: Dict[int, _Waiter] = {}
        self._broken: Optional[ConnectorException] = None
        self._runtime_extended = False
        self._credits: Optional[int] = None
        self._in_flight = 0
        self._slot_waiters: Deque[asyncio.Future[None]] = deque()
        self._connect_lock: Optional[asyncio.Lock] = None
        self._health_lock: Optional[asyncio.Lock] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        return self._protocol is not None

    @property
    def credits(self) -> Optional[int]:
        """Requests the runtime allows in flight on this connection (None: unannounced)."""
        return self._credits

    async def connect(self) -> None:
        """Connect (idempotent). Probes the runtime with a HealthCheck to learn whether
        it speaks vastar-fast's extensions and how many requests it allows in flight."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._protocol is not None:
                return
            endpoint = resolve_endpoint(self.config)
            loop = asyncio.get_running_loop()
            self._conn = ClientConnection(request_id_seed=self._conn.next_request_id())
            self._broken = None
            self._runtime_extended = False
            self._credits = None
            self._in_flight = 0
            timeout = self.config.timeout_ms / 1000.0
            try:
                if endpoint.path is None:
                    coro = loop.create_connection(
                        lambda: _Protocol(self), endpoint.host, endpoint.port
                    )
                else:
                    coro = loop.create_unix_connection(lambda: _Protocol(self), endpoint.path)
                _transport, protocol = await asyncio.wait_for(coro, timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise ConnectorException(
                    f"cannot connect to the Vastar runtime at {endpoint.describe()}: "
                    f"{getattr(exc, 'strerror', None) or exc or 'timed out'}; is it running? "
                    f"{endpoint.how_to_start()}",
                    ErrorClass.TRANSIENT,
                    0,
                ) from exc
            self._protocol = protocol
            self._endpoint = endpoint
            log.info("connected to the Vastar runtime at %s", endpoint.describe())
        if self._probe:
            status = await self.health_check()
            if status.supported and self._credits is None:
                self._credits = status.available_credits or None

    async def close(self) -> None:
        """Close the connection; requests still waiting fail with TRANSIENT."""
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return
        self._fail("the client was closed while the request was in flight")
        if protocol.transport is not None:
            protocol.transport.close()
        log.info("closed the connection to the Vastar runtime")

    async def __aenter__(self) -> AsyncRuntimeClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: object, tb: object
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests
    async def execute_http(self, request: HTTPRequest) -> HTTPResponse:
        """Send one HTTP request through the runtime and wait for its answer."""
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        rid, wait_s = await self._send_http(request, False, fut)
        try:
            event = await asyncio.wait_for(fut, wait_s)
        except asyncio.TimeoutError:
            raise self._timed_out(rid) from None
        except asyncio.CancelledError:
            self._give_up(rid)
            raise
        finally:
            self._release_slot()
        assert isinstance(event, ResponseReceived)
        return response_from_event(event)

    def stream_http(self, request: HTTPRequest) -> AsyncHTTPStream:
        """``async with client.stream_http(req) as resp:`` — see :class:`AsyncHTTPStream`."""
        return AsyncHTTPStream(self, request)

    async def health_check(self, timeout_ms: int = 5000) -> HealthStatus:
        """Ask the runtime how it is (``supported=False`` from a released runtime)."""
        await self._ensure_connected()
        if self._health_lock is None:
            self._health_lock = asyncio.Lock()
        async with self._health_lock:
            fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            self._waiters[_HEALTH_KEY] = fut
            try:
                self._write(self._conn.send_health_check())
                event = await asyncio.wait_for(fut, timeout_ms / 1000.0)
            except asyncio.TimeoutError:
                raise ConnectorException(
                    f"the runtime at {self._where()} did not answer a health check within "
                    f"{timeout_ms} ms",
                    ErrorClass.TIMEOUT,
                    0,
                ) from None
            finally:
                self._waiters.pop(_HEALTH_KEY, None)
        return health_from_event(event)

    # ------------------------------------------------------------------ internals
    async def _ensure_connected(self) -> None:
        if self._protocol is None:
            await self.connect()

    async def _send_http(self, request: HTTPRequest, stream: bool, waiter: _Waiter) -> tuple:
        await self._ensure_connected()
        await self._acquire_slot()
        try:
            config = self.config
            timeout_ms = request.timeout_ms if request.timeout_ms is not None else config.timeout_ms
            conn = self._conn
            rid = conn.next_request_id()
            try:
                frame = conn.send_http(
                    rid,
                    request.tenant_id or config.tenant_id,
                    request.workspace_id
                    if request.workspace_id is not None
                    else config.workspace_id,
                    request.trace_id,
                    int(time.time() * 1000) + timeout_ms,
                    request.method,
                    request.url,
                    request.headers,
                    request.body,
                    stream,
                )
            except ProtocolError as exc:
                raise invalid_request(exc, rid) from None
            self._waiters[rid] = waiter
            self._write(frame)
            protocol = self._protocol
            if protocol is not None and protocol._paused:
                await protocol.drain()
        except BaseException:
            self._release_slot()
            raise
        return rid, response_timeout_s(timeout_ms)

    async def _acquire_slot(self) -> None:
        credits = self._credits
        if credits is not None and self._in_flight >= credits:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(fut)
            try:
                await fut
            except BaseException:
                if not fut.cancelled() and fut.done():
                    self._release_slot()  # pass the slot we were given on
                raise
        else:
            self._in_flight += 1

    def _release_slot(self) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand our slot straight to the next waiter
                return
        if self._in_flight > 0:
            self._in_flight -= 1

    def _write(self, frame: bytes) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            broken = self._broken
            raise ConnectorException(
                broken.message if broken else "not connected to the runtime",
                ErrorClass.TRANSIENT,
                0,
            )
        protocol.transport.write(frame)

    def _file(self, event: Event) -> None:
        waiters = self._waiters
        if isinstance(event, ResponseReceived):
            rid = event.request_id
            if rid not in waiters and rid == 0 and waiters:
                rid = next(iter(waiters))  # released runtime: request_id 0, answers in order
            waiter = waiters.get(rid)
            if waiter is None:
                log.debug("dropping a response for request %d: nobody waits", event.request_id)
                return
            if isinstance(waiter, asyncio.Queue):
                waiters.pop(rid, None)
                waiter.put_nowait(event)
            else:
                waiters.pop(rid, None)
                if not waiter.done():
                    waiter.set_result(event)
        elif isinstance(event, (StreamStarted, StreamDataReceived)):
            self._runtime_extended = True
            waiter = waiters.get(event.request_id)
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(event)
        elif isinstance(event, HealthReceived):
            self._runtime_extended = True
            waiter = waiters.get(_HEALTH_KEY)
            if waiter is not None and isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_result(event)
        elif isinstance(event, CreditsUpdated):
            self._runtime_extended = True
            self._credits = event.total_credits or None
            self._wake_slot_waiters()

    def _wake_slot_waiters(self) -> None:
        credits = self._credits
        while self._slot_waiters and (credits is None or self._in_flight < credits):
            fut = self._slot_waiters.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(None)

    def _timed_out(self, rid: int) -> ConnectorException:
        self._give_up(rid)
        return ConnectorException(
            f"no answer from the runtime at {self._where()} before the client-side timeout "
            f"(request_id={rid}); the runtime may be overloaded or stuck",
            ErrorClass.TIMEOUT,
            rid,
        )

    def _give_up(self, rid: int) -> None:
        self._waiters.pop(rid, None)
        self._conn.forget(rid)
        if self._runtime_extended and self._protocol is not None:
            try:
                self._write(self._conn.send_cancel(rid))
            except ConnectorException:
                pass

    def _fail(self, message: str, error_class: ErrorClass = ErrorClass.TRANSIENT) -> None:
        """The connection is gone: fail every waiter; the next call reconnects."""
        self._broken = ConnectorException(message, error_class, 0)
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            log.warning("%s", message)
        waiters, self._waiters = self._waiters, {}
        for rid, waiter in waiters.items():
            exc = ConnectorException(message, error_class, max(rid, 0))
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(_Failure(exc))
            elif not waiter.done():
                waiter.set_exception(exc)
        slot_waiters, self._slot_waiters = self._slot_waiters, deque()
        for fut in slot_waiters:
            if not fut.done():
                fut.set_exception(ConnectorException(message, error_class, 0))
        self._in_flight = 0

    def _where(self) -> str:
        return self._endpoint.describe() if self._endpoint else "(not connected)"


class _Failure:
    """Queued to a stream when its connection fails."""

    __slots__ = ("exc",)

    def __init__(self, exc: ConnectorException) -> None:
        self.exc = exc


class AsyncHTTPStream(StreamState):
    """An answer still arriving, for ``async with client.stream_http(req) as resp``.

    ``resp.status_code``/``resp.headers`` are set on entry; ``async for chunk in resp``
    yields body bytes as they arrive; ``resp.iter_deltas()`` yields OpenAI delta texts;
    ``await resp.read()`` returns the rest of the body. Leaving the block early cancels
    the upstream request.
    """

    def __init__(self, client: AsyncRuntimeClient, request: HTTPRequest) -> None:
        super().__init__()
        self._client = client
        self._request = request
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # events, or a _Failure
        self._started = False
        self.request_id = 0
        self.status_code = 0
        self.headers: Dict[str, str] = {}
        self._deadline = 0.0

    def _on_finished(self) -> None:
        self._client._release_slot()

    async def start(self) -> AsyncHTTPStream:
        """Send the request and wait for its status and headers."""
        if self._started:
            return self
        self._started = True
        rid, wait_s = await self._client._send_http(self._request, True, self._queue)
        self.request_id = rid
        self._deadline = time.monotonic() + wait_s
        try:
            event = await self._next()
        except BaseException:
            self._end()
            raise
        self._head(event)
        return self

    async def _next(self) -> Event:
        remaining = self._deadline - time.monotonic()
        try:
            event = await asyncio.wait_for(self._queue.get(), max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise self._client._timed_out(self.request_id) from None
        if isinstance(event, _Failure):
            raise event.exc
        return event

    async def __aenter__(self) -> AsyncHTTPStream:
        return await self.start()

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: object, tb: object
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if not self._started:
            await self.start()
        pending = self._pending
        while True:
            while pending:
                yield pending.popleft()
            if self._finished:
                return
            try:
                event = await self._next()
            except BaseException:
                self._end()
                raise
            data = self._body(event)
            if data is not None:
                yield data

    async def iter_deltas(self) -> AsyncIterator[str]:
        """OpenAI ``choices[0].delta.content`` texts, each as soon as its event is complete."""
        from ..sse import SSEDecoder

        decoder = SSEDecoder()
        async for chunk in self._chunks():
            for delta in decoder.feed_deltas(chunk):
                yield delta
        for delta in decoder.flush_deltas():
            yield delta

    async def read(self) -> bytes:
        """The rest of the body."""
        return b"".join([chunk async for chunk in self._chunks()])

    async def aclose(self) -> None:
        """Stop reading; an unfinished request is cancelled at the runtime."""
        if self._started and self._end():
            self._client._give_up(self.request_id)
        self._pending.clear()
