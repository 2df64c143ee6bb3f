"""The synchronous ``RuntimeClient``: a thin blocking driver of the client core.

Everything that is not I/O (building requests, deadlines, routing answers to their
callers, the released runtime's request_id-0 answers, cancelling, error texts) is the
core's (``protocol.client_core``: ``ClientConnection``); the socket round trip itself
(send under a lock, the receive loop that reads for every thread sharing the client) is
its ``BlockingChannel``, compiled when the twins are built. This module only opens and
closes sockets and shapes the public API.
"""

from __future__ import annotations

from _thread import allocate_lock  # what threading.Lock is: threading itself is not needed
from _weakref import ref as weak_ref  # what weakref.ref is: weakref itself is not needed

from .._log import lazy_logger
from ..protocol import client_core
from ..protocol import client_policy as policy
from ..types import HTTPRequest, HTTPResponse, RuntimeConfig
from .endpoint import Endpoint, open_socket, resolve_endpoint
from .results import HealthStatus, StreamState, health_from_event

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Callable, Iterator, Optional, Type

    from ..protocol.client_core import BlockingChannel, Waiter

__all__ = ["HTTPStream", "RuntimeClient"]

log = lazy_logger("vastar_fast.client")


class RuntimeClient:
    """Blocking client of the Vastar connector runtime (drop-in for the released one).

    ``with RuntimeClient(config) as client:`` connects on enter and closes on exit;
    ``execute_http`` connects first when needed, and again after the connection was
    lost. Thread-safe: any number of threads may share one client and its connection.
    """

    def __init__(self, config: Optional[RuntimeConfig] = None) -> None:
        self.config = config if config is not None else RuntimeConfig()
        self._channel: Optional[BlockingChannel] = None
        self._endpoint: Optional[Endpoint] = None
        self._connect_lock = allocate_lock()
        self._health_lock = allocate_lock()
        self._next_id: Optional[int] = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect to the runtime (idempotent; one socket however many threads call it)."""
        self._connected()

    def _connected(self) -> BlockingChannel:
        with self._connect_lock:
            channel = self._channel
            if channel is not None and not channel.closed:
                return channel
            endpoint = resolve_endpoint(self.config)
            sock = open_socket(endpoint, timeout=self.config.timeout_ms / 1000.0)
            channel = self._attach(sock, endpoint)
        log.info("connected to the Vastar runtime at %s", endpoint.describe())
        return channel

    def _attach(self, sock: socket.socket, endpoint: Endpoint) -> BlockingChannel:
        """Drive a connected socket (connect lock held, or before any use)."""
        seed = self._next_id
        old = self._channel
        if old is not None:  # request ids keep counting up across reconnects
            seed = old.conn.next_request_id()
        conn = client_core.ClientConnection(
            request_id_seed=seed, config=self.config, where=endpoint.describe()
        )
        channel = client_core.BlockingChannel(conn, sock)
        channel.reconnect = _reconnector(self)
        self._channel = channel
        self._endpoint = endpoint
        if type(self).execute_http is RuntimeClient.execute_http:
            # Calls go straight to the channel's (compiled) round trip, without a Python
            # frame of ours; a closed channel reconnects through channel.reconnect.
            # close() removes it again (docs/decisions.md, "Client").
            self.__dict__["execute_http"] = channel.execute
        return channel

    def close(self) -> None:
        """Close the connection; requests still waiting fail with TRANSIENT."""
        with self._connect_lock:
            channel, self._channel = self._channel, None
            self.__dict__.pop("execute_http", None)
            if channel is None:
                return
            self._next_id = channel.conn.next_request_id()
        channel.close()
        log.info("closed the connection to the Vastar runtime")

    @property
    def connected(self) -> bool:
        channel = self._channel
        return channel is not None and not channel.closed

    def __enter__(self) -> RuntimeClient:
        self.connect()
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc_val: object, exc_tb: object
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def execute_http(self, request: HTTPRequest) -> HTTPResponse:
        """Send one HTTP request through the runtime and wait for its answer.

        HTTP error statuses come back as responses; a request that got no HTTP answer
        raises ConnectorException with the runtime's error class.
        """
        channel = self._channel
        if channel is None or channel.closed:
            channel = self._connected()
        return channel.execute(request)

    def stream_http(self, request: HTTPRequest) -> HTTPStream:
        """Send a request and return its answer as it arrives.

        ``with client.stream_http(req) as resp:`` gives ``resp.status_code`` and
        ``resp.headers`` at once, body chunks as they arrive when iterated,
        ``resp.iter_deltas()`` for OpenAI delta texts and ``resp.read()`` for the rest
        of the body. Against a runtime without the streaming extension the body arrives
        buffered, in one piece. Closing early cancels the upstream request.
        """
        channel = self._channel
        if channel is None or channel.closed:
            channel = self._connected()
        return HTTPStream(channel, channel.start(request))

    def health_check(self, timeout_ms: int = 5000) -> HealthStatus:
        """Ask the runtime how it is. A released runtime (no health support) answers
        with an invalid-message error, reported as ``supported=False``."""
        channel = self._channel
        if channel is None or channel.closed:
            channel = self._connected()
        with self._health_lock:
            return health_from_event(channel.health(timeout_ms))


def _reconnector(client: RuntimeClient) -> Callable[[], BlockingChannel]:
    """channel.reconnect: the client's current channel, held through a weak reference so
    that client and channel form no cycle (a dropped client closes its socket at once)."""
    ref = weak_ref(client)

    def reconnect() -> BlockingChannel:
        owner = ref()
        if owner is None:
            raise policy.client_closed()
        return owner._connected()

    return reconnect


class HTTPStream(StreamState):
    """An answer that is still arriving; made by :meth:`RuntimeClient.stream_http`."""

    def __init__(self, channel: BlockingChannel, waiter: Waiter) -> None:
        super().__init__(channel.conn, waiter)
        self._channel = channel
        try:
            event = channel.next_event(waiter)
        except BaseException:
            self._abandon()
            raise
        self._head(event)  # a buffered answer (released runtime) or an error finishes here

    def _abandon(self) -> None:
        if self._end():
            self._channel.give_up(self._waiter)

    def __enter__(self) -> HTTPStream:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: object, tb: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        """Body chunks, each as soon as the runtime forwards it."""
        pending = self._pending
        next_event = self._channel.next_event
        waiter = self._waiter
        while True:
            while pending:
                yield pending.popleft()
            if self._finished:
                return
            try:
                data = self._body(next_event(waiter))
            except BaseException:
                self._abandon()
                raise
            if data is not None:
                yield data

    def iter_deltas(self) -> Iterator[str]:
        """OpenAI ``choices[0].delta.content`` texts, each as soon as its event is complete."""
        from ..sse import SSEDecoder

        decoder = SSEDecoder()
        for chunk in self:
            yield from decoder.feed_deltas(chunk)
        yield from decoder.flush_deltas()

    def read(self) -> bytes:
        """The rest of the body."""
        return b"".join(self)

    def close(self) -> None:
        """Stop reading; an unfinished request is cancelled at the runtime."""
        self._abandon()
        self._pending.clear()
