"""``AsyncRuntimeClient``: the asyncio driver of the client core.

Many requests are multiplexed on one connection. The receive path goes straight from
the event loop into the core (``ClientConnection.get_buffer`` / ``received``, compiled
when the twins are built), which hands every event to its :class:`Waiter` and wakes the
coroutine awaiting it. What stays here is I/O scheduling: writing frames, waiting out
backpressure, and the runtime's credits: when it announces them (vastar-fast runtimes
do, on an extended connection), requests beyond them wait for a free slot instead of
being refused.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator, Deque, List, Optional, Set, Type

from .._log import logger
from ..errors import ConnectorException
from ..protocol import client_core
from ..protocol import client_policy as policy
from ..protocol.events import CreditsUpdated, Event, ResponseReceived
from ..types import ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig
from .endpoint import Endpoint, connect_error, resolve_endpoint
from .results import HealthStatus, StreamState, health_from_event

if TYPE_CHECKING:
    from ..protocol.client_core import ClientConnection, Waiter

__all__ = ["AsyncHTTPStream", "AsyncRuntimeClient"]

log = logger("vastar_fast.client")  # the real one, with the package's NullHandler


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Slots:
    """Requests in flight on one connection, held against the runtime's credits.

    A request holds its slot until the runtime has answered it: one that its caller
    abandoned keeps the slot until its terminal answer arrives, because until then the
    runtime still counts it.
    """

    __slots__ = ("abandoned", "in_flight", "waiters")

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiters: Deque[asyncio.Future[None]] = deque()
        self.abandoned: Set[int] = set()


class _Protocol(asyncio.BufferedProtocol):
    """Transport callbacks. Received bytes go straight into the core: ``get_buffer`` and
    ``buffer_updated`` are the connection's own methods, bound per instance."""

    def __init__(self, client: AsyncRuntimeClient, conn: ClientConnection) -> None:
        self._client = client
        self.transport: Optional[asyncio.Transport] = None
        self.paused = False
        self._drain_waiters: List[asyncio.Future[None]] = []
        self.get_buffer = conn.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = conn.received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._client._lost(self, exc)
        self._wake_drainers()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:  # every sender, not only the newest
            _expire(fut)

    async def drain(self, deadline: float) -> bool:
        """Wait until the transport accepts writes again; False if the deadline passed."""
        while self.paused and self.transport is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._drain_waiters.append(fut)
            handle = loop.call_later(remaining, _expire, fut)
            try:
                await fut
            finally:
                handle.cancel()
                if fut in self._drain_waiters:
                    self._drain_waiters.remove(fut)
        return True


class AsyncRuntimeClient:
    """asyncio client of the Vastar connector runtime.

    ``async with AsyncRuntimeClient(config) as client:``; ``await
    client.execute_http(req)``; ``async with client.stream_http(req) as resp:``.
    Coroutines of one client may run concurrently; they share one connection.
    """

    def __init__(self, config: Optional[RuntimeConfig] = None, *, probe: bool = True) -> None:
        self.config = config if config is not None else RuntimeConfig()
        self._probe = probe
        self._conn: Optional[ClientConnection] = None
        self._protocol: Optional[_Protocol] = None
        self._endpoint: Optional[Endpoint] = None
        self._slots = _Slots()
        self._probed_credits: Optional[int] = None
        self._next_id: Optional[int] = None
        self._connect_lock: Optional[asyncio.Lock] = None
        self._health_lock: Optional[asyncio.Lock] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed

    @property
    def credits(self) -> Optional[int]:
        """Requests the runtime allows in flight on this connection (None: unannounced)."""
        conn = self._conn
        if conn is not None and conn.credits:
            return int(conn.credits)
        return self._probed_credits

    async def connect(self) -> None:
        """Connect (idempotent). Probes the runtime with a HealthCheck to learn whether
        it speaks vastar-fast's extensions and how many requests it allows in flight."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self.connected:
                return
            endpoint = resolve_endpoint(self.config)
            loop = asyncio.get_running_loop()
            seed = self._next_id
            if self._conn is not None:
                seed = self._conn.next_request_id()
            conn = client_core.ClientConnection(
                request_id_seed=seed, config=self.config, where=endpoint.describe()
            )
            timeout = self.config.timeout_ms / 1000.0
            try:
                if endpoint.path is None:
                    coro = loop.create_connection(
                        lambda: _Protocol(self, conn), endpoint.host, endpoint.port
                    )
                else:
                    coro = loop.create_unix_connection(lambda: _Protocol(self, conn), endpoint.path)
                _transport, protocol = await asyncio.wait_for(coro, timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise connect_error(endpoint, exc) from exc
            conn.leftover_hook = self._on_leftover
            conn.broken_hook = self._on_broken
            self._conn = conn
            self._protocol = protocol
            self._endpoint = endpoint
            self._slots = _Slots()
            self._probed_credits = None
            log.info("connected to the Vastar runtime at %s", endpoint.describe())
            if self._probe:
                # Still under the connect lock: nobody sends a request before the probe
                # is answered (a released runtime answers it with request_id 0, which
                # must not be ambiguous).
                status = await self._health(conn, 5000)
                if status.supported:
                    self._probed_credits = status.available_credits or None

    async def close(self) -> None:
        """Close the connection; requests still waiting fail with TRANSIENT.

        Awaits nothing, so a cancelled task still closes cleanly."""
        self._close_now()

    def _close_now(self) -> None:
        conn, protocol = self._conn, self._protocol
        self._protocol = None
        if conn is None:
            return
        self._next_id = conn.next_request_id()
        if conn.fail(policy.client_closed()):
            log.info("closed the connection to the Vastar runtime")
        self._fail_slots(self._slots, policy.client_closed())
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def __aenter__(self) -> AsyncRuntimeClient:
        try:
            await self.connect()
        except BaseException:  # cancelled during the probe: do not leak the connection
            self._close_now()
            raise
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: object, tb: object
    ) -> None:
        self._close_now()

    # ------------------------------------------------------------------ requests
    async def execute_http(self, request: HTTPRequest) -> HTTPResponse:
        """Send one HTTP request through the runtime and wait for its answer."""
        conn = await self._ready()
        slots = self._slots
        await self._acquire_slot(conn, slots)
        try:
            waiter, frame = conn.open_request(request, False)
        except BaseException:
            self._release_slot(slots)
            raise
        try:
            await self._send(conn, frame, waiter)
            event = await self._next(conn, waiter)
        except BaseException:
            self._abandon(conn, waiter, slots)
            raise
        self._release_slot(slots)
        assert isinstance(event, ResponseReceived)
        return conn.response(event)

    def stream_http(self, request: HTTPRequest) -> AsyncHTTPStream:
        """``async with client.stream_http(req) as resp:`` — see :class:`AsyncHTTPStream`."""
        return AsyncHTTPStream(self, request)

    async def health_check(self, timeout_ms: int = 5000) -> HealthStatus:
        """Ask the runtime how it is (``supported=False`` from a released runtime)."""
        conn = await self._ready()
        if self._health_lock is None:
            self._health_lock = asyncio.Lock()
        async with self._health_lock:
            return await self._health(conn, timeout_ms)

    async def _health(self, conn: ClientConnection, timeout_ms: int) -> HealthStatus:
        waiter, frame = conn.open_health(timeout_ms)
        try:
            self._write(conn, frame)
            event = await self._next(conn, waiter)
        except ConnectorException as exc:
            if exc.error_class == ErrorClass.TIMEOUT:
                raise policy.health_timed_out(conn.where, timeout_ms) from None
            raise
        finally:
            if not waiter.finished:
                conn.give_up(waiter)
        return health_from_event(event)

    # ------------------------------------------------------------------ internals
    async def _ready(self) -> ClientConnection:
        conn = self._conn
        if conn is None or conn.closed:
            await self.connect()
            conn = self._conn
            assert conn is not None
        return conn

    def _write(self, conn: ClientConnection, frame: bytes) -> None:
        protocol = self._protocol
        if conn.closed or protocol is None or protocol.transport is None:
            raise policy.for_request(conn._closed_error(), 0)
        protocol.transport.write(frame)

    async def _send(self, conn: ClientConnection, frame: bytes, waiter: Waiter) -> None:
        self._write(conn, frame)
        protocol = self._protocol
        if protocol is not None and protocol.paused:
            if not await protocol.drain(waiter.deadline):
                raise policy.timed_out(conn.where, waiter.request_id)

    async def _next(self, conn: ClientConnection, waiter: Waiter) -> Event:
        """The waiter's next event; TIMEOUT once its deadline has passed."""
        while not waiter.ready:
            remaining = waiter.deadline - time.monotonic()
            if remaining <= 0:
                raise policy.timed_out(conn.where, waiter.request_id)
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            waiter.future = fut
            handle = loop.call_later(remaining, _expire, fut)
            try:
                await fut
            finally:
                waiter.future = None
                handle.cancel()
        return waiter.take()

    def _abandon(self, conn: ClientConnection, waiter: Waiter, slots: _Slots) -> None:
        """The caller left (cancelled, timed out, stopped reading): cancel the request at
        the runtime; its slot is freed once the runtime has answered it."""
        answered = waiter.finished
        cancel = conn.give_up(waiter)
        if cancel is not None:
            try:
                self._write(conn, cancel)
            except ConnectorException:
                pass
        if not answered and waiter.request_id in conn.outstanding and not conn.closed:
            slots.abandoned.add(waiter.request_id)
        else:
            self._release_slot(slots)

    def _on_leftover(self, events: List[Event]) -> None:
        slots = self._slots
        for event in events:
            if type(event) is CreditsUpdated:
                self._wake_slot_waiters(slots)
            elif type(event) is ResponseReceived:
                rid = event.request_id
                if rid in slots.abandoned:
                    slots.abandoned.discard(rid)
                    self._release_slot(slots)
                else:
                    log.debug("dropping a response for request %d: nobody waits", rid)

    def _on_broken(self, exc: ConnectorException) -> None:
        log.warning("%s", exc.message)
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    def _lost(self, protocol: _Protocol, exc: Optional[Exception]) -> None:
        """The transport is gone: fail every waiter; the next call reconnects."""
        conn = self._conn
        if protocol is not self._protocol or conn is None:
            return
        self._protocol = None
        error = policy.closed_by_runtime() if exc is None else policy.connection_lost(exc)
        if conn.fail(error):
            log.warning("%s", error.message)
        self._fail_slots(self._slots, conn._closed_error())

    # ------------------------------------------------------------------ credits
    def _limit(self) -> Optional[int]:
        return self.credits

    async def _acquire_slot(self, conn: ClientConnection, slots: _Slots) -> None:
        limit = self._limit()
        if limit is None or slots.in_flight < limit:
            slots.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release_slot(slots)  # we were handed a slot: pass it on
            raise

    def _release_slot(self, slots: _Slots) -> None:
        while slots.waiters:
            fut = slots.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand our slot straight to the next waiter
                return
        if slots.in_flight > 0:
            slots.in_flight -= 1

    def _wake_slot_waiters(self, slots: _Slots) -> None:
        limit = self._limit()
        while slots.waiters and (limit is None or slots.in_flight < limit):
            fut = slots.waiters.popleft()
            if not fut.done():
                slots.in_flight += 1
                fut.set_result(None)

    @staticmethod
    def _fail_slots(slots: _Slots, exc: ConnectorException) -> None:
        waiters, slots.waiters = slots.waiters, deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(policy.for_request(exc, 0))
        slots.in_flight = 0
        slots.abandoned.clear()


class AsyncHTTPStream(StreamState):
    """An answer still arriving, for ``async with client.stream_http(req) as resp``.

    ``resp.status_code``/``resp.headers`` are set on entry; ``async for chunk in resp``
    yields body bytes as they arrive; ``resp.iter_deltas()`` yields OpenAI delta texts;
    ``await resp.read()`` returns the rest of the body. Leaving the block early, or
    being cancelled while waiting, cancels the upstream request.
    """

    def __init__(self, client: AsyncRuntimeClient, request: HTTPRequest) -> None:
        self._client = client
        self._request = request
        self._started = False
        self.request_id = 0
        self.status_code = 0
        self.headers = {}
        self._pending = deque()
        self._finished = False
        self.streamed = False
        self.duration_us = 0
        self.is_streaming = False

    async def start(self) -> AsyncHTTPStream:
        """Send the request and wait for its status and headers."""
        if self._started:
            return self
        self._started = True
        client = self._client
        conn = await client._ready()
        slots = client._slots
        await client._acquire_slot(conn, slots)
        try:
            waiter, frame = conn.open_request(self._request, True)
        except BaseException:
            client._release_slot(slots)
            raise
        StreamState.__init__(self, conn, waiter)
        self._slots = slots
        try:
            await client._send(conn, frame, waiter)
            event = await client._next(conn, waiter)
        except BaseException:
            self._abandon()
            raise
        self._head(event)
        return self

    def _finish(self, event: Event) -> None:
        released = not self._finished
        try:
            super()._finish(event)
        finally:
            if released:  # the runtime answered: its credit is free again
                self._client._release_slot(self._slots)

    def _abandon(self) -> None:
        if self._started and self._end():
            self._client._abandon(self._conn, self._waiter, self._slots)

    async def __aenter__(self) -> AsyncHTTPStream:
        return await self.start()

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: object, tb: object
    ) -> None:
        self._abandon()  # awaits nothing: exits cleanly under cancellation too
        self._pending.clear()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        if not self._started:
            await self.start()
        pending = self._pending
        client = self._client
        try:
            while True:
                while pending:
                    yield pending.popleft()
                if self._finished:
                    return
                data = self._body(await client._next(self._conn, self._waiter))
                if data is not None:
                    yield data
        finally:
            # cancelled, timed out, failed, or the consumer stopped iterating early
            self._abandon()

    async def iter_deltas(self) -> AsyncIterator[str]:
        """OpenAI ``choices[0].delta.content`` texts, each as soon as its event is complete."""
        from ..sse import SSEDecoder

        decoder = SSEDecoder()
        chunks = self._chunks()
        try:
            async for chunk in chunks:
                for delta in decoder.feed_deltas(chunk):
                    yield delta
            for delta in decoder.flush_deltas():
                yield delta
        finally:
            await chunks.aclose()

    async def read(self) -> bytes:
        """The rest of the body."""
        return b"".join([chunk async for chunk in self._chunks()])

    async def aclose(self) -> None:
        """Stop reading; an unfinished request is cancelled at the runtime."""
        self._abandon()
        self._pending.clear()
