"""One client connection of the daemon: frames in, answers out.

Drives the sans-I/O :class:`~vastar_fast.protocol.connection.ServerConnection`: decoded
requests are admitted here (shutdown, credits, duplicate ids, a deadline already
passed) and handed to an :class:`~.pipeline.Exchange`; HealthChecks are answered;
CancelRequests cancel; invalid messages are answered (and the connection closed when
the byte stream cannot be trusted any more).

Why an asyncio protocol rather than streams: reading is a callback (no reader task and
no StreamReader copy per connection), and every frame is written whole with one
``transport.write`` from the loop thread, so writes of concurrent requests on one
connection are serialised by construction. When the client reads slower than
upstreams answer (the transport's write buffer passes ``limits.max_unsent_bytes``), the
connection stops reading the client's frames and its exchanges stop reading their
upstreams until the buffer drains: memory per connection stays bounded.

One of the runtime's twinned request-path modules (see ``upstream.py``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any, Optional

from vastar_fast._log import logger
from vastar_fast.protocol.events import (
    CancelReceived,
    HealthCheckReceived,
    InvalidMessage,
    RequestReceived,
)
from vastar_fast.types import ErrorClass

from .pipeline import BY_CLIENT, BY_DISCONNECT, Exchange

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

if cython.compiled:  # the same sans-I/O core, compiled beside this module (setup.py)
    from .connection import ServerConnection  # type: ignore[import-not-found,unused-ignore]
else:
    from vastar_fast.protocol.connection import ServerConnection

if TYPE_CHECKING:
    from vastar_fast.runtime.server import Runtime

__all__ = ["IPCConnection"]

log = logger("vastar_fast.runtime")  # the real one, with the package's NullHandler

_MAX_DEADLINE_S = 7 * 24 * 3600.0
_TRANSIENT = int(ErrorClass.TRANSIENT)
_RATE_LIMITED = int(ErrorClass.RATE_LIMITED)
_TIMEOUT = int(ErrorClass.TIMEOUT)
_INVALID = int(ErrorClass.INVALID_REQUEST)
_send_response = ServerConnection.send_response
_send_health = ServerConnection.send_health
_perf = time.perf_counter
_wall = time.time


@cython.cclass
class IPCConnection:
    """One client connection (an asyncio protocol): admits requests, writes answers."""

    rt = cython.declare(object, visibility="public")
    sc = cython.declare(object, visibility="public")
    requests = cython.declare(dict, visibility="public")
    transport = cython.declare(object, visibility="public")
    credits = cython.declare(cython.longlong, visibility="public")
    paused = cython.declare(cython.bint, visibility="public")
    last_rx = cython.declare(cython.double, visibility="public")
    """Loop time of the last bytes received (idle and partial-frame timeouts)."""
    announced: cython.bint
    max_frame_headers: cython.Py_ssize_t

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sc = ServerConnection()
        self.requests = {}
        self.transport = None
        limits = runtime.settings.limits
        self.credits = limits.credits_per_connection
        self.max_frame_headers = limits.max_frame_headers
        self.announced = False
        self.paused = False
        self.last_rx = 0.0

    # ------------------------------------------------------------ transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        rt = self.rt
        self.last_rx = rt.loop.time()
        limit = rt.settings.limits.max_connections
        if len(rt.connections) >= limit:
            # Over the cap: say so and hang up (the answer is flushed before the close).
            transport.write(  # type: ignore[attr-defined]
                _send_response(
                    0, _TRANSIENT,
                    f"the runtime already serves {limit} connections "
                    "(limits.max_connections); retry later, or share one connection between "
                    "requests", None, 0,
                )
            )  # fmt: skip
            transport.close()
            self.transport = None
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        # Answers waiting for a slow client are bounded: past the mark, pause_writing.
        transport.set_write_buffer_limits(high=rt.settings.limits.max_unsent_bytes)  # type: ignore[attr-defined]
        rt.connections.add(self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.rt.connections.discard(self)
        self.transport = None
        for ex in list(self.requests.values()):
            ex.cancel(BY_DISCONNECT)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop taking its requests and stop
        reading the upstream answers meant for it, until it catches up."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        for ex in self.requests.values():
            ex.pause()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        for ex in list(self.requests.values()):
            ex.resume()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.rt.loop.time()
        for event in self.sc.receive_data(data):
            kind = type(event)
            if kind is RequestReceived:
                self._start(event)
            elif kind is HealthCheckReceived:
                rt = self.rt
                self.write(
                    _send_health(
                        not rt.stopping,
                        "shutting down" if rt.stopping else "ok",
                        rt.active,
                        max(0, self.credits - len(self.requests)),
                    )
                )
            elif kind is CancelReceived:
                ex = self.requests.get(event.request_id)
                if ex is not None:
                    ex.cancel(BY_CLIENT)
            elif kind is InvalidMessage:
                self._invalid(event)

    # ------------------------------------------------------------ writing
    def write(self, frame: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.announced and self.sc.extended:
            self.announced = True
            transport.write(self.sc.send_credit_update(self.credits, self.credits))
        transport.write(frame)

    @cython.cfunc
    def _invalid(self, event: Any) -> None:
        message: str = event.message
        if event.fatal:
            if not message.startswith("Invalid FlatBuffers message"):
                message = f"Invalid frame: {message}; closing the connection"
            else:
                message += "; closing the connection"
        else:
            message = (
                f"Invalid message: {message}; this runtime accepts ExecuteRequest (0), "
                "HealthCheck (2) and CancelRequest (7)"
            )
        if self.rt.debug:
            log.debug("invalid message from a client: %s", message)
        self.write(_send_response(0, _INVALID, message, None, 0))
        if event.fatal and self.transport is not None:
            self.transport.close()  # flushes the answer first

    # ------------------------------------------------------------ admission
    @cython.cfunc
    def _refuse(self, rid: Any, error_class: int, message: str) -> None:
        self.write(_send_response(rid, error_class, message, None, 0))

    @cython.cfunc
    def _start(self, event: Any) -> None:
        frame = event.frame
        rid = frame.request_id
        rt = self.rt
        if rt.stopping:
            self._refuse(rid, _TRANSIENT, "the runtime is shutting down and takes no new "
                         "requests; retry once it (or another instance) is back")  # fmt: skip
            return
        requests = self.requests
        if len(requests) >= self.credits:
            self._refuse(
                rid,
                _RATE_LIMITED,
                f"too many requests in flight on this connection: the limit is {self.credits} "
                "(limits.credits_per_connection); wait for answers before sending more",
            )
            return
        if rid in requests:
            self._refuse(rid, _INVALID, f"request_id {rid} is already in flight on this "
                         "connection; use a new request_id for every request")  # fmt: skip
            return
        if len(frame.headers) > self.max_frame_headers:
            self._refuse(
                rid,
                _INVALID,
                f"the request's header list has {len(frame.headers)} entries, more than the "
                f"runtime's limit of {self.max_frame_headers} (limits.max_frame_headers)",
            )
            return
        t0: float = _perf()
        loop = rt.loop
        now: float = loop.time()
        deadline_ms = frame.deadline_at_ms
        deadline: float
        if deadline_ms:
            left: float = deadline_ms / 1000.0 - _wall()
            if left <= 0:
                self._refuse(
                    rid,
                    _TIMEOUT,
                    f"deadline_at_ms {deadline_ms} had already passed ({-left * 1000:.0f} ms "
                    "ago) when the runtime received the request; give it more time or check "
                    "the client's clock",
                )
                return
            deadline = now + min(left, _MAX_DEADLINE_S)
        else:
            deadline = now + rt.default_deadline_s
        ex = Exchange(rt, self, rid, frame.tenant_id, "stream" in event.extensions, deadline, t0)
        requests[rid] = ex
        ex.start(frame)  # counts itself in first; the upstream request goes out before the rest
        if not ex.done:
            ex.deadline_slot = rt.deadlines.add(ex, deadline)
