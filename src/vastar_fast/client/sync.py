"""The synchronous ``RuntimeClient``: a thin blocking driver of the sans-I/O core.

One connection carries many requests, correlated by request id. Any thread that needs
bytes reads them for everybody and files each event in the mailbox of the request it
belongs to, so a response for another request is kept for its caller, never dropped.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Deque, Dict, Iterator, List, Optional, Tuple, Type

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
from .endpoint import Endpoint, open_socket, resolve_endpoint
from .results import (
    CLIENT_GRACE_MS,
    HealthStatus,
    StreamState,
    health_from_event,
    invalid_request,
    response_from_event,
)

__all__ = ["HTTPStream", "RuntimeClient"]

log = logging.getLogger("vastar_fast.client")

_HEALTH_KEY = -1
# struct timeval for SO_RCVTIMEO; Windows takes a DWORD of milliseconds instead, and
# there the socket's own timeout is used.
_TIMEVAL = (
    None if sys.platform == "win32" or not hasattr(socket, "SO_RCVTIMEO") else struct.Struct("@ll")
)
_SUCCESS = ErrorClass.SUCCESS


class RuntimeClient:
    """Blocking client of the Vastar connector runtime (drop-in for the released one).

    ``with RuntimeClient(config) as client:`` connects on enter and closes on exit;
    ``execute_http`` connects first when needed. Thread-safe: several threads may share
    one client and its connection.
    """

    def __init__(self, config: Optional[RuntimeConfig] = None) -> None:
        self.config = config if config is not None else RuntimeConfig()
        self._sock: Optional[socket.socket] = None
        self._endpoint: Optional[Endpoint] = None
        self._conn = ClientConnection()
        self._mail: Dict[int, Deque[Event]] = {}
        self._cond = threading.Condition(threading.Lock())
        self._send_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._reading = False
        self._waiting = 0
        self._rcvtimeo: Optional[float] = None
        self._broken: Optional[ConnectorException] = None
        self._runtime_extended = False

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect to the runtime (idempotent)."""
        if self._sock is not None:
            return
        endpoint = resolve_endpoint(self.config)
        sock = open_socket(endpoint, timeout=self.config.timeout_ms / 1000.0)
        with self._cond:
            self._sock = sock
            self._endpoint = endpoint
            self._conn = ClientConnection(request_id_seed=self._conn.next_request_id())
            self._broken = None
            self._runtime_extended = False
            self._rcvtimeo = None
        log.info("connected to the Vastar runtime at %s", endpoint.describe())

    def close(self) -> None:
        """Close the connection; requests still waiting fail with TRANSIENT."""
        with self._cond:
            sock, self._sock = self._sock, None
            if sock is None:
                return
            self._broken = ConnectorException(
                "the client was closed while the request was in flight", ErrorClass.TRANSIENT, 0
            )
            self._cond.notify_all()
        try:
            sock.close()
        finally:
            log.info("closed the connection to the Vastar runtime")

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def __enter__(self) -> RuntimeClient:
        self.connect()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: object, tb: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def execute_http(self, request: HTTPRequest) -> HTTPResponse:
        """Send one HTTP request through the runtime and wait for its answer.

        HTTP error statuses come back as responses; a request that got no HTTP answer
        raises ConnectorException with the runtime's error class.
        """
        rid, wait_s = self._send_http(request, stream=False)
        deadline = time.monotonic() + wait_s
        event = self._next_event(rid, deadline)
        while not isinstance(event, ResponseReceived):  # a runtime streaming unasked
            event = self._next_event(rid, deadline)
        self._mail.pop(rid, None)
        return response_from_event(event)

    def stream_http(self, request: HTTPRequest) -> HTTPStream:
        """Send a request and return its answer as it arrives.

        ``with client.stream_http(req) as resp:`` gives ``resp.status_code`` and
        ``resp.headers`` at once, body chunks as they arrive when iterated,
        ``resp.iter_deltas()`` for OpenAI delta texts and ``resp.read()`` for the rest
        of the body. Against a runtime without the streaming extension the body arrives
        buffered, in one piece. Closing early cancels the upstream request.
        """
        rid, wait_s = self._send_http(request, stream=True)
        return HTTPStream(self, rid, time.monotonic() + wait_s)

    def health_check(self, timeout_ms: int = 5000) -> HealthStatus:
        """Ask the runtime how it is. A released runtime (no health support) answers
        with an invalid-message error, reported as ``supported=False``."""
        self._ensure_connected()
        with self._health_lock:
            with self._cond:
                self._mail[_HEALTH_KEY] = deque()
            try:
                self._send(self._conn.send_health_check())
                event = self._next_event(_HEALTH_KEY, time.monotonic() + timeout_ms / 1000.0)
            finally:
                with self._cond:
                    self._mail.pop(_HEALTH_KEY, None)
        return health_from_event(event)

    # ------------------------------------------------------------------ internals
    def _ensure_connected(self) -> None:
        if self._sock is None:
            self.connect()

    def _send_http(self, request: HTTPRequest, stream: bool) -> Tuple[int, float]:
        if self._sock is None:
            self.connect()
        config = self.config
        timeout_ms = request.timeout_ms
        if timeout_ms is None:
            timeout_ms = config.timeout_ms
        workspace = request.workspace_id
        conn = self._conn
        rid = conn.next_request_id()
        try:
            frame = conn.send_http(
                rid,
                request.tenant_id or config.tenant_id,
                config.workspace_id if workspace is None else workspace,
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
        mail = self._mail
        mail[rid] = deque()  # a single dict store: atomic under the GIL, no lock needed
        try:
            self._send(frame)
        except ConnectorException:
            mail.pop(rid, None)
            raise
        return rid, (timeout_ms + CLIENT_GRACE_MS) / 1000.0

    def _send(self, frame: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectorException("not connected to the runtime", ErrorClass.TRANSIENT, 0)
        lock = self._send_lock
        lock.acquire()
        try:
            sock.sendall(frame)
        except OSError as exc:
            lock.release()
            self._fail(f"lost the connection to the runtime while sending: {exc}")
            raise self._broken or ConnectorException(str(exc), ErrorClass.TRANSIENT, 0) from exc
        lock.release()

    def _next_event(self, rid: int, deadline: float) -> Event:
        """The next event filed for ``rid``, reading the socket for everyone as needed."""
        cond = self._cond
        cond.acquire()
        try:
            while True:
                box = self._mail.get(rid)
                if box:
                    return box.popleft()
                if self._broken is not None:
                    self._mail.pop(rid, None)
                    raise ConnectorException(self._broken.message, self._broken.error_class, rid)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._give_up(rid)
                    raise ConnectorException(
                        f"no answer from the runtime at {self._where()} before the client-side "
                        f"timeout (request_id={rid}); the runtime may be overloaded or stuck",
                        ErrorClass.TIMEOUT,
                        rid,
                    )
                if self._reading:  # another thread reads for us; it files and wakes us
                    self._waiting += 1
                    cond.wait(remaining)
                    self._waiting -= 1
                    continue
                self._reading = True
                sock = self._sock
                cond.release()
                events: List[Event] = []
                try:
                    events = self._recv(sock, remaining)
                finally:
                    cond.acquire()
                    self._reading = False
                    mine = None
                    for event in events:
                        # The usual case, our own answer with nothing queued before it,
                        # goes straight back instead of through the mailbox.
                        if (
                            mine is None
                            and type(event) is ResponseReceived
                            and (event[0] == rid and not self._mail.get(rid))
                        ):
                            mine = event
                        else:
                            self._file(event)
                    if self._waiting:
                        cond.notify_all()
                if mine is not None:
                    return mine
        finally:
            cond.release()

    def _set_recv_timeout(self, sock: socket.socket, seconds: float) -> None:
        """Bound the next recv. SO_RCVTIMEO keeps the socket in blocking mode, so a recv
        is one syscall (Python's own timeouts add a poll() before every recv); the
        caller re-sets it only when the wait shrinks noticeably or grows."""
        seconds = max(seconds, 0.001)  # a zero timeval would mean "wait forever"
        if _TIMEVAL is None:
            sock.settimeout(seconds)
        else:
            whole = int(seconds)
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)),
            )
        self._rcvtimeo = seconds

    def _recv(self, sock: Optional[socket.socket], timeout: float) -> List[Event]:
        if sock is None:
            return []
        conn = self._conn
        current = self._rcvtimeo
        try:
            if current is None or not 0.9 * current <= timeout <= current:
                self._set_recv_timeout(sock, timeout)
            n = sock.recv_into(conn.get_buffer())
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO / settimeout expired
            return []
        except OSError as exc:
            self._fail(f"lost the connection to the runtime: {exc}")
            return []
        if n == 0:
            self._fail(
                "the runtime closed the connection before answering; it may have stopped or "
                "restarted (the request may or may not have been executed)"
            )
            return []
        try:
            return conn.buffer_updated(n)
        except FrameTooLargeError as exc:
            self._fail(f"the runtime sent an oversized frame: {exc}", ErrorClass.PERMANENT)
        except ProtocolError as exc:
            self._fail(f"the runtime sent an invalid frame: {exc}", ErrorClass.PERMANENT)
        return []

    def _file(self, event: Event) -> None:
        """Put an event in its request's mailbox (called with the condition held)."""
        mail = self._mail
        if isinstance(event, ResponseReceived):
            box = mail.get(event.request_id)
            if box is None and event.request_id == 0 and mail:
                # The released runtime answers frames it cannot parse (and HealthCheck)
                # with request_id 0; it handles requests in order, so it is the oldest's.
                box = mail[next(iter(mail))]
            if box is not None:
                box.append(event)
            else:
                log.debug("dropping a response for request %d: nobody waits", event.request_id)
        elif isinstance(event, (StreamStarted, StreamDataReceived)):
            self._runtime_extended = True
            box = mail.get(event.request_id)
            if box is not None:
                box.append(event)
        elif isinstance(event, HealthReceived):
            self._runtime_extended = True
            box = mail.get(_HEALTH_KEY)
            if box is not None:
                box.append(event)
        elif isinstance(event, CreditsUpdated):
            self._runtime_extended = True

    def _give_up(self, rid: int) -> None:
        """Forget a request we stopped waiting for; cancel it where the runtime can."""
        self._mail.pop(rid, None)
        self._conn.forget(rid)
        if rid > 0 and self._runtime_extended and self._sock is not None:
            try:
                self._sock.sendall(self._conn.send_cancel(rid))
            except OSError:
                pass

    def _fail(self, message: str, error_class: ErrorClass = ErrorClass.TRANSIENT) -> None:
        """Mark the connection dead: every waiter gets the error, the next call reconnects."""
        with self._cond:
            sock, self._sock = self._sock, None
            self._broken = ConnectorException(message, error_class, 0)
            self._cond.notify_all()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        log.warning("%s", message)

    def _where(self) -> str:
        return self._endpoint.describe() if self._endpoint else "(not connected)"


class HTTPStream(StreamState):
    """An answer that is still arriving; made by :meth:`RuntimeClient.stream_http`."""

    def __init__(self, client: RuntimeClient, request_id: int, deadline: float) -> None:
        super().__init__()
        self._client = client
        self.request_id = request_id
        self._deadline = deadline
        try:
            event = client._next_event(request_id, deadline)
        except ConnectorException:
            self._end()
            raise
        self._head(event)  # a buffered answer (released runtime) or an error finishes here

    def _on_finished(self) -> None:
        self._client._mail.pop(self.request_id, None)

    def __enter__(self) -> HTTPStream:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: object, tb: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        """Body chunks, each as soon as the runtime forwards it."""
        pending = self._pending
        while True:
            while pending:
                yield pending.popleft()
            if self._finished:
                return
            data = self._body(self._client._next_event(self.request_id, self._deadline))
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
        client = self._client
        with client._cond:
            if self._end():
                client._give_up(self.request_id)
        self._pending.clear()
