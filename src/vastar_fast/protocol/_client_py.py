"""Pure-Python twin of the client core (its compiled twin is a section of ``_codec_c``).

Three classes, shared by both drivers of the runtime protocol:

``ClientConnection``
    The sans-I/O client half (h11's approach): builds request frames from an
    ``HTTPRequest`` and the client's ``RuntimeConfig``, turns received bytes into events
    and hands each event to the :class:`Waiter` it belongs to. Everything the clients
    know about the protocol lives here: request ids, deadlines, the frame cap, whether
    the runtime speaks vastar-fast's extensions, stray and unowned frames, the released
    runtime's request_id-0 answers, giving up and cancelling, and what each failure says
    (``client_policy``).
``Waiter``
    One caller waiting on the connection: a request (its events, in order) or the
    pending health check. The asyncio driver wakes through ``waiter.future``; blocking
    threads sleep on a private semaphore.
``BlockingChannel``
    The synchronous driver's I/O engine for one socket: frames go out under a send lock
    with a send timeout; one thread at a time receives (the socket read loop) and
    delivers for everybody, the others sleep until an event of theirs arrives or the
    reading is handed to them.

The rule for a response with request_id 0 (the released runtime's answer to a frame it
cannot parse, and to a HealthCheck): it goes to a waiter only when exactly one thing on
the connection could be waiting for it, an unanswered request (abandoned ones count:
the runtime may still answer them) or a health check the runtime is not known to
answer itself. Otherwise it is dropped, so it can never reach the wrong caller.

Locking: one lock per connection guards its ids, waiters and flags, and the channel's
reader/sleeper bookkeeping. It is never held during a socket call, and frames are sent
under the channel's send lock, never while holding it.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .._log import lazy_logger
from ..errors import ConnectorException, FrameTooLargeError, ProtocolError
from ..types import MAX_PAYLOAD_SIZE, ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig
from . import _sockio
from . import client_policy as policy
from ._codec_py import (
    FrameBuffer,
    decode_credit_update,
    decode_execute_response,
    decode_health_response,
    decode_http_response_payload,
    decode_stream_chunk,
    decode_stream_start,
    encode_cancel_request,
    encode_health_check,
    encode_http_request_frame,
)
from .events import (
    CreditsUpdated,
    Event,
    HealthReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from .frames import TOKEN_ENV, extension_headers
from .tracecontext import context_getter, trace_pairs

__all__ = ["BlockingChannel", "ClientConnection", "Waiter"]

log = lazy_logger("vastar_fast.client")

_SUCCESS = ErrorClass.SUCCESS
_MAX_ABANDONED = 4096
"""Unanswered requests nobody waits for any more, remembered for the request_id-0 rule;
beyond this many the oldest are forgotten (a runtime that never answers them)."""

# struct timeval for SO_RCVTIMEO/SO_SNDTIMEO; Windows takes a DWORD of milliseconds,
# so there the socket's own timeout is used.
_TIMEVAL = (
    None if sys.platform == "win32" or not hasattr(socket, "SO_RCVTIMEO") else struct.Struct("@ll")
)
_use_timeval = _TIMEVAL is not None


def _client_io(posix: Optional[bool] = None) -> bool:
    """Private, for tests: bound socket calls with SO_RCVTIMEO/SO_SNDTIMEO (True, the
    POSIX default) or keep the socket non-blocking and wait in ``_sockio`` (False, the
    path Windows takes) in channels made from now on; as ``_codec_c._client_io``.
    Returns which is used."""
    global _use_timeval
    if posix is not None:
        _use_timeval = bool(posix) and _TIMEVAL is not None
    return _use_timeval


_trace_get: Any = None
"""opentelemetry's current-context getter (tracecontext.py): None until the first
request looks it up, False when opentelemetry is not installed."""


def _trace_getter() -> Any:
    global _trace_get
    getter = context_getter()
    _trace_get = getter if getter is not None else False
    return _trace_get


def _trace_reset() -> None:
    """Private, for tests: look opentelemetry up again on the next request."""
    global _trace_get
    _trace_get = None


class Waiter:
    """One caller waiting on a connection: a request, or the pending health check.

    ``events`` holds what arrived for it and was not taken yet; ``finished`` is set
    once its terminal event arrived or the connection failed (``error``). ``deadline``
    is on the ``time.monotonic`` clock.
    """

    __slots__ = (
        "_sem",
        "_sleeping",
        "_woken",
        "deadline",
        "error",
        "events",
        "finished",
        "future",
        "health",
        "request_id",
        "stream",
    )

    def __init__(self, request_id: int, stream: bool, deadline: float, health: bool = False):
        self.request_id = request_id
        self.stream = stream
        self.health = health
        self.deadline = deadline
        self.events: Deque[Event] = deque()
        self.finished = False
        self.error: Optional[ConnectorException] = None
        self.future: Any = None
        """The asyncio driver's wake-up future while it awaits (set_result(None) on news)."""
        self._sem: Optional[threading.Lock] = None
        self._sleeping = False
        self._woken = False

    @property
    def ready(self) -> bool:
        """True when :meth:`take` would not wait: an event arrived, or a failure."""
        return bool(self.events) or self.error is not None

    def take(self) -> Event:
        """The oldest event not taken yet; the connection's failure once none is left."""
        if self.events:
            return self.events.popleft()
        if self.error is not None:
            raise policy.for_request(self.error, self.request_id)
        raise LookupError("no event has arrived for this waiter yet")

    def _wake(self) -> None:
        fut = self.future
        if fut is not None:
            if not fut.done():
                fut.set_result(None)
        elif self._sleeping and not self._woken:
            self._woken = True
            assert self._sem is not None
            self._sem.release()


class ClientConnection:
    """The client half of the protocol: requests in, frames out; bytes in, events out.

    ``request_id_seed`` starts the request-id counter (default: the current time in ms,
    as the released SDK does). ``config`` supplies the defaults of every request;
    ``where`` names the runtime in error messages.

    Events nobody waits for (the events API: no :class:`Waiter` registered) come back
    from :meth:`receive_data` / :meth:`buffer_updated`; the drivers register waiters and
    read what is left over only for credits and late answers.
    """

    def __init__(
        self,
        max_frame_size: int = MAX_PAYLOAD_SIZE,
        request_id_seed: Optional[int] = None,
        config: Optional[RuntimeConfig] = None,
        where: str = "(not connected)",
    ) -> None:
        self._frames = FrameBuffer(max_frame_size)
        self.max_frame_size = max_frame_size
        self._next_id = int(time.time() * 1000) if request_id_seed is None else request_id_seed
        self._lock = threading.Lock()
        self.outstanding: Dict[int, bool] = {}
        """Requests without a terminal answer yet -> whether they opted in to streaming."""
        self._waiters: Dict[int, Waiter] = {}
        self._health: Optional[Waiter] = None
        self.credits: Optional[int] = None
        """Requests the runtime allows in flight on this connection (None: not announced)."""
        self.extended = False
        """True once the runtime sent one of vastar-fast's extension messages."""
        self.closed = False
        self.error: Optional[ConnectorException] = None
        """Why the connection closed (failure or close())."""
        self.config = config if config is not None else RuntimeConfig()
        self.where = where
        self.leftover_hook: Optional[Callable[[List[Event]], None]] = None
        """Driver hook for :meth:`received`: events no waiter took."""
        self._ext_plain, self._ext_stream = extension_headers(os.environ.get(TOKEN_ENV))
        self.broken_hook: Optional[Callable[[ConnectorException], None]] = None
        """Driver hook for :meth:`received`: the runtime sent bytes that are not frames."""

    # ------------------------------------------------------------ requests (low level)
    def next_request_id(self) -> int:
        """A counter seeded with the current time in ms, as the released SDK does."""
        with self._lock:
            rid = self._next_id
            self._next_id = rid + 1
        return rid

    def send_http(
        self,
        request_id: int,
        tenant_id: str,
        workspace_id: Optional[str],
        trace_id: Optional[str],
        deadline_at_ms: int,
        method: str,
        url: str,
        headers: Optional[Dict[str, str]],
        body: Any,
        stream: bool = False,
    ) -> bytes:
        """The frame for one http request; registers it as outstanding.

        Raises ProtocolError for a request that cannot be encoded, FrameTooLargeError for
        one over the frame cap (nothing is registered then).
        """
        frame = encode_http_request_frame(
            request_id, tenant_id, workspace_id, trace_id, deadline_at_ms,
            method, url, headers, body, self._ext_stream if stream else self._ext_plain,
        )  # fmt: skip
        if len(frame) - 4 > self.max_frame_size:
            raise FrameTooLargeError(len(frame) - 4, self.max_frame_size)
        with self._lock:
            if self.closed:
                raise ProtocolError("the connection is closed")
            self.outstanding[request_id] = stream
        return frame

    def send_health_check(self) -> bytes:
        return encode_health_check()

    def send_cancel(self, request_id: int) -> bytes:
        """Ask the runtime to abandon a request; its terminal response still arrives."""
        return encode_cancel_request(request_id)

    def forget(self, request_id: int) -> None:
        """Stop waiting for a request; late frames for it are dropped (it stays
        unanswered until the runtime answers it)."""
        with self._lock:
            w = self._waiters.pop(request_id, None)
            if w is not None:
                w.finished = True

    # ------------------------------------------------------------ requests (drivers)
    def open_request(self, request: HTTPRequest, stream: bool = False) -> Tuple[Waiter, bytes]:
        """Build the frame for ``request`` and register its waiter.

        Tenant, workspace and timeout fall back to the config's when the request leaves
        them empty, as in the released SDK; the deadline is now + timeout. A request
        that cannot be sent (not UTF-8, over the frame cap) raises
        ConnectorException(INVALID_REQUEST) and nothing is registered or sent.
        """
        config = self.config
        timeout_ms = request.timeout_ms or config.timeout_ms
        deadline_ms = int(time.time() * 1000) + timeout_ms
        with self._lock:
            if self.closed:
                raise policy.for_request(self._closed_error(), 0)
            rid = self._next_id
            self._next_id = rid + 1
        body = request.body
        if isinstance(body, (bytes, str)) and len(body) > self.max_frame_size:
            raise policy.too_large(len(body), self.max_frame_size, rid)  # not worth encoding
        ext = self._ext_stream if stream else self._ext_plain
        getter = _trace_get
        if getter is None:
            getter = _trace_getter()
        if getter is not False:
            ctx = getter()
            if ctx:  # something is current: the span's traceparent, if there is one
                traced = trace_pairs(ctx)
                if traced is not None:
                    ext = traced if ext is None else ext + traced
        try:
            frame = encode_http_request_frame(
                rid,
                request.tenant_id or config.tenant_id,
                request.workspace_id or config.workspace_id,
                request.trace_id,
                deadline_ms,
                request.method,
                request.url,
                request.headers,
                body,
                ext,
            )
        except ProtocolError as exc:
            raise policy.invalid_request(exc, rid) from None
        if len(frame) - 4 > self.max_frame_size:
            raise policy.too_large(len(frame) - 4, self.max_frame_size, rid)
        waiter = Waiter(rid, stream, time.monotonic() + policy.wait_seconds(timeout_ms))
        with self._lock:
            if self.closed:
                raise policy.for_request(self._closed_error(), rid)
            self.outstanding[rid] = stream
            self._waiters[rid] = waiter
        return waiter, frame

    def open_health(self, timeout_ms: int) -> Tuple[Waiter, bytes]:
        """Register the (single) pending health check; returns it and the frame."""
        waiter = Waiter(0, False, time.monotonic() + timeout_ms / 1000.0, health=True)
        with self._lock:
            if self.closed:
                raise self._closed_error()
            if self._health is not None:
                raise RuntimeError("a health check is already pending on this connection")
            self._health = waiter
        return waiter, encode_health_check()

    def give_up(self, waiter: Waiter) -> Optional[bytes]:
        """Stop waiting; the CancelRequest frame to send when the runtime can act on it
        (the request is unanswered and the runtime speaks the extensions), else None."""
        with self._lock:
            return self._give_up_locked(waiter)

    def _give_up_locked(self, waiter: Waiter) -> Optional[bytes]:
        waiter.finished = True
        if waiter.health:
            if self._health is waiter:
                self._health = None
            return None
        rid = waiter.request_id
        if self._waiters.get(rid) is waiter:
            del self._waiters[rid]
        if len(self.outstanding) - len(self._waiters) > _MAX_ABANDONED:
            for old in [r for r in self.outstanding if r not in self._waiters][:1024]:
                del self.outstanding[old]
        if rid in self.outstanding and self.extended and not self.closed:
            return encode_cancel_request(rid)
        return None

    def fail(self, exc: ConnectorException) -> bool:
        """Close the connection: every waiter gets ``exc``. False if already closed."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self.error = exc
            waiters = list(self._waiters.values())
            if self._health is not None:
                waiters.append(self._health)
            self._waiters.clear()
            self._health = None
            self.outstanding.clear()
            for waiter in waiters:
                waiter.error = exc
                waiter.finished = True
                waiter._wake()
        return True

    def close(self) -> None:
        """Close: waiters still waiting fail with TRANSIENT."""
        self.fail(policy.client_closed())

    def _closed_error(self) -> ConnectorException:
        return self.error if self.error is not None else policy.client_closed()

    def response(self, event: ResponseReceived) -> HTTPResponse:
        """An HTTPResponse, or the ConnectorException the released SDK raises for it."""
        rid, error_class, error_message, payload, duration_us = event
        if error_class != 0:
            raise policy.runtime_error(error_class, error_message, rid)
        if not payload:
            raise policy.empty_payload(rid)
        try:
            status, headers, body, _streaming = decode_http_response_payload(payload)
        except ProtocolError as exc:
            raise policy.unreadable_payload(exc, rid) from None
        return HTTPResponse(rid, status, headers, body, duration_us, _SUCCESS, None)

    # ------------------------------------------------------------ receiving
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> List[Event]:
        """Account for bytes received into :meth:`get_buffer`; deliver what they
        complete; return the events no waiter took. Raises ProtocolError (after failing
        every waiter) when the bytes are not frames: the connection must be closed."""
        if self.closed:
            return []
        self._frames.buffer_updated(nbytes)
        return self._drain()

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed received bytes; as :meth:`buffer_updated`."""
        if self.closed:
            return []
        self._frames.feed(data)
        return self._drain()

    def received(self, nbytes: int) -> None:
        """:meth:`buffer_updated` for a driver with hooks (the asyncio protocol): events
        no waiter took go to ``leftover_hook``; corrupt bytes to ``broken_hook``."""
        try:
            leftover = self.buffer_updated(nbytes)
        except ProtocolError:
            hook = self.broken_hook
            if hook is not None:
                hook(self._closed_error())
            return
        if leftover and self.leftover_hook is not None:
            self.leftover_hook(leftover)

    def _drain(self) -> List[Event]:
        leftover: List[Event] = []
        frames = self._frames
        try:
            # One frame at a time, in stream order: the frames before a bad length field
            # are delivered before it fails the connection (as the compiled twin does).
            while True:
                frame = frames.next_frame()
                if frame is None:
                    break
                self._on_frame(frame[0], frame[1], leftover)
        except ProtocolError as exc:
            self.fail(policy.bad_frame(exc, isinstance(exc, FrameTooLargeError)))
            raise
        return leftover

    def _on_frame(self, mtype: int, body: bytes, leftover: List[Event]) -> None:
        if mtype == 1:
            r = decode_execute_response(body)
            with self._lock:
                waiter, ambiguous = self._owner_locked(r.request_id)
                if waiter is not None:
                    waiter.events.append(r)
                    waiter.finished = True
                    waiter._wake()
            if waiter is None:
                if ambiguous:
                    log.warning(
                        "dropping a request_id-0 answer from the runtime (%s): it could "
                        "belong to any of several requests in flight",
                        r.error_message,
                    )
                leftover.append(r)
        elif mtype == 6 or mtype == 5:
            if mtype == 6:
                c = decode_stream_chunk(body)
                rid = c.request_id
                event: Event = StreamDataReceived(rid, c.data)
            else:
                s = decode_stream_start(body)
                rid = s.request_id
                event = StreamStarted(rid, s.status_code, dict(s.headers), s.is_streaming)
            with self._lock:
                self.extended = True
                if not self.outstanding.get(rid):
                    return  # stray: finished, unknown, or a request that never opted in
                waiter = self._waiters.get(rid)
                if waiter is not None:
                    waiter.events.append(event)
                    waiter._wake()
            if waiter is None:
                leftover.append(event)
        elif mtype == 3:
            h = decode_health_response(body)
            event = HealthReceived(h.healthy, h.message, h.active_requests, h.available_credits)
            with self._lock:
                self.extended = True
                waiter = self._health
                if waiter is not None:
                    self._health = None
                    waiter.events.append(event)
                    waiter.finished = True
                    waiter._wake()
            if waiter is None:
                leftover.append(event)
        elif mtype == 4:
            u = decode_credit_update(body)
            with self._lock:
                self.extended = True
                self.credits = u.total_credits
            leftover.append(CreditsUpdated(u.credit_delta, u.total_credits))
        else:
            log.debug("ignoring message type %d from the runtime", mtype)

    def _owner_locked(self, rid: int) -> Tuple[Optional[Waiter], bool]:
        """(waiter of a terminal response or None, whether a request_id-0 answer was
        dropped as ambiguous). Marks the request answered."""
        outstanding = self.outstanding
        if rid in outstanding:
            del outstanding[rid]
            return self._waiters.pop(rid, None), False
        if rid != 0:
            return None, False  # late (its caller left long ago) or unknown
        health = self._health if not self.extended else None
        candidates = len(outstanding) + (health is not None)
        if candidates != 1:
            return None, candidates > 1
        if health is not None:
            self._health = None
            return health, False
        (only,) = outstanding
        del outstanding[only]
        return self._waiters.pop(only, None), False


class BlockingChannel:
    """The blocking I/O engine of one runtime connection (the sync client's driver).

    ``execute`` is a whole round trip; ``start`` / ``next_event`` / ``give_up`` serve
    streams; ``health`` a health check. One thread at a time reads the socket and
    delivers for everybody; the others sleep on their waiter until an event of theirs
    arrives or the reading is handed to them (a thread that leaves hands it on).
    The socket is closed here, never while another thread is inside a call on it.
    """

    def __init__(self, conn: ClientConnection, sock: socket.socket) -> None:
        self.conn = conn
        self._sock = sock
        self._send_lock = threading.Lock()
        self._cancels: List[bytes] = []
        self._reading = False
        self._sleepers: List[Waiter] = []
        self._io = 0
        self._shut = False
        self._rcvtimeo: Optional[float] = None
        self._sndtimeo: Optional[float] = None
        self.reconnect: Optional[Callable[[], BlockingChannel]] = None
        """Called by :meth:`execute` on a closed channel: the channel to use instead."""
        # SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket bound each call; without them (Windows)
        # the socket stays non-blocking and _sockio waits: never one shared timeout
        self._sockio: Any = None
        if _use_timeval:
            sock.settimeout(None)
        else:
            self._sockio = _sockio
            sock.setblocking(False)

    @property
    def closed(self) -> bool:
        return self.conn.closed

    # ------------------------------------------------------------ round trips
    def execute(self, request: HTTPRequest) -> HTTPResponse:
        """Send ``request``, wait for its answer, return it as an HTTPResponse."""
        conn = self.conn
        if conn.closed and self.reconnect is not None:
            return self.reconnect().execute(request)
        waiter, frame = conn.open_request(request, False)
        try:
            self.send(frame, waiter)
            event = self.next_event(waiter)
        except BaseException:
            if not waiter.finished:  # interrupted (KeyboardInterrupt): cancel, forget
                self.give_up(waiter)
            raise
        assert isinstance(event, ResponseReceived)
        return conn.response(event)

    def start(self, request: HTTPRequest) -> Waiter:
        """Send a streaming request; its events come from :meth:`next_event`."""
        waiter, frame = self.conn.open_request(request, True)
        self.send(frame, waiter)
        return waiter

    def health(self, timeout_ms: int) -> Event:
        """Send a HealthCheck; its answer (HealthReceived, or a released runtime's
        request_id-0 ResponseReceived)."""
        waiter, frame = self.conn.open_health(timeout_ms)
        try:
            self.send(frame, waiter)
            return self.next_event(waiter)
        except ConnectorException as exc:
            if exc.error_class == ErrorClass.TIMEOUT:
                raise policy.health_timed_out(self.conn.where, timeout_ms) from None
            raise
        finally:
            if not waiter.finished:
                self.conn.give_up(waiter)

    def give_up(self, waiter: Waiter) -> None:
        """Stop waiting for a request; cancel it at the runtime when it can."""
        cancel = self.conn.give_up(waiter)
        if cancel is not None:
            self._send_quietly(cancel)

    def close(self, exc: Optional[ConnectorException] = None) -> None:
        """Close: every waiter fails (with ``exc``, default: the client was closed)."""
        self.conn.fail(exc if exc is not None else policy.client_closed())
        self._shutdown()

    # ------------------------------------------------------------ sending
    def send(self, frame: bytes, waiter: Waiter) -> None:
        """Send one whole frame under the send lock, within the waiter's deadline."""
        remaining = waiter.deadline - time.monotonic()
        if not self._send_lock.acquire(timeout=max(remaining, 0.0)):
            self.conn.give_up(waiter)
            raise policy.send_timed_out(self.conn.where, waiter.request_id)
        try:
            sock = self._enter_io()
            if sock is None:
                self.conn.give_up(waiter)
                raise policy.for_request(self.conn._closed_error(), waiter.request_id)
            try:
                if self._sockio is not None:
                    self._sockio.send_within(sock, frame, remaining)
                else:
                    current = self._sndtimeo
                    if current is None or not 0.9 * current <= remaining <= current:
                        self._set_timeout(sock, socket.SO_SNDTIMEO, remaining)
                    sock.sendall(frame)
            except (BlockingIOError, socket.timeout) as exc:  # the send timeout expired mid-frame
                self._fail(policy.connection_lost(exc, sending=True))
                raise policy.send_stalled(self.conn.where, waiter.request_id) from None
            except OSError as exc:
                self._fail(policy.connection_lost(exc, sending=True))
                raise policy.for_request(self.conn._closed_error(), waiter.request_id) from exc
            finally:
                self._exit_io()
        finally:
            self._unlock_send()

    def _send_quietly(self, frame: bytes) -> None:
        """A CancelRequest: sent now if the socket is free, else queued for the thread
        sending a frame, which sends it right after (never mid-frame, never waiting)."""
        with self.conn._lock:
            if not self._send_lock.acquire(blocking=False):
                self._cancels.append(frame)
                return
            self._cancels.append(frame)
        self._unlock_send()

    def _unlock_send(self) -> None:
        """Release the send lock, first sending the CancelRequests queued meanwhile."""
        while True:
            with self.conn._lock:
                pending, self._cancels = self._cancels, []
                if not pending or self._shut:
                    self._send_lock.release()
                    return
            sock = self._enter_io()
            if sock is None:
                continue
            try:
                for frame in pending:
                    if self._sockio is not None:  # no send timeout is set: 1 s, as compiled
                        self._sockio.send_within(sock, frame, 1.0)
                    else:
                        sock.sendall(frame)
            except OSError as exc:
                self._fail(policy.connection_lost(exc, sending=True))
            finally:
                self._exit_io()

    # ------------------------------------------------------------ receiving
    def next_event(self, waiter: Waiter) -> Event:
        """The waiter's next event, reading the socket for everybody as needed.

        Raises ConnectorException: the connection's failure, or TIMEOUT (after giving
        the request up and cancelling it) once the waiter's deadline has passed.
        """
        lock = self.conn._lock
        try:
            while True:
                with lock:
                    if waiter.events:
                        return waiter.events.popleft()
                    error = waiter.error
                    if error is None:
                        remaining = waiter.deadline - time.monotonic()
                        read = remaining > 0 and not self._reading
                        if read:
                            self._reading = True
                        elif remaining > 0:
                            sem = self._sleep_prepare_locked(waiter)
                if error is not None:
                    raise policy.for_request(error, waiter.request_id)
                if remaining <= 0:
                    self.give_up(waiter)
                    raise policy.timed_out(self.conn.where, waiter.request_id)
                if read:
                    try:
                        self._read(remaining)
                    finally:
                        with lock:
                            self._reading = False
                else:
                    woke = sem.acquire(timeout=remaining)
                    with lock:
                        waiter._sleeping = False
                        if not woke and waiter._woken:
                            sem.acquire()  # the wake-up raced the timeout: consume it
                        if waiter in self._sleepers:
                            self._sleepers.remove(waiter)
        finally:
            with lock:
                self._hand_off_locked()

    def _sleep_prepare_locked(self, waiter: Waiter) -> threading.Lock:
        sem = waiter._sem
        if sem is None:
            sem = waiter._sem = threading.Lock()
            sem.acquire()  # held: sleeping is acquiring it again, waking is releasing it
        waiter._sleeping = True
        waiter._woken = False
        self._sleepers.append(waiter)
        return sem

    def _hand_off_locked(self) -> None:
        """Nobody reads: wake a sleeper to take the reading over."""
        if self._reading:
            return
        for sleeper in self._sleepers:
            if not sleeper._woken:
                sleeper._wake()
                return

    def _read(self, timeout: float) -> None:
        """One receive (bounded by ``timeout``), delivered to the waiters."""
        conn = self.conn
        sock = self._enter_io()
        if sock is None:
            return
        try:
            if self._sockio is not None:
                got = self._sockio.recv_within(sock, conn.get_buffer(), timeout)
                if got is None:
                    return  # nothing within the timeout
                n = got
            else:
                current = self._rcvtimeo
                if current is None or not 0.9 * current <= timeout <= current:
                    self._set_timeout(sock, socket.SO_RCVTIMEO, timeout)
                n = sock.recv_into(conn.get_buffer())
        except (BlockingIOError, socket.timeout):  # the receive timeout expired
            return
        except OSError as exc:
            self._fail(policy.connection_lost(exc))
            return
        finally:
            self._exit_io()
        if n == 0:
            self._fail(policy.closed_by_runtime())
            return
        try:
            leftover = conn.buffer_updated(n)
        except ProtocolError:
            self._fail(conn._closed_error())
            return
        for event in leftover:
            if isinstance(event, ResponseReceived):
                log.debug("dropping a response for request %d: nobody waits", event.request_id)

    def _set_timeout(self, sock: socket.socket, option: int, seconds: float) -> None:
        """Bound the next socket calls. SO_RCVTIMEO/SO_SNDTIMEO keep the socket in
        blocking mode, so each call is one syscall (Python's own timeouts add a poll()
        before every call); callers re-set it only when the wait shrinks noticeably or
        grows."""
        seconds = max(seconds, 0.001)  # a zero timeval would mean "wait forever"
        assert _TIMEVAL is not None  # else the channel waits in _sockio instead
        whole = int(seconds)
        sock.setsockopt(
            socket.SOL_SOCKET, option, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6))
        )
        if option == socket.SO_RCVTIMEO:
            self._rcvtimeo = seconds
        else:
            self._sndtimeo = seconds

    # ------------------------------------------------------------ the socket's life
    def _enter_io(self) -> Optional[socket.socket]:
        with self.conn._lock:
            if self._shut:
                return None
            self._io += 1
            return self._sock

    def _exit_io(self) -> None:
        with self.conn._lock:
            self._io -= 1
            last = self._shut and self._io == 0
        if last:
            self._sock.close()

    def _fail(self, exc: ConnectorException) -> None:
        if self.conn.fail(exc):
            log.warning("%s", exc.message)
        self._shutdown()

    def _shutdown(self) -> None:
        """Wake any thread blocked on the socket; close it once nobody is inside a call."""
        with self.conn._lock:
            if self._shut:
                return
            self._shut = True
            idle = self._io == 0
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if idle:
            self._sock.close()
