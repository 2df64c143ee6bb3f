"""One client connection of the daemon: frames in, answers out (credits, health,
invalid messages), one task per request.

Why asyncio.Protocol rather than streams: reading is a callback (no reader task and no
StreamReader copy per connection), and every frame is written whole with one
``transport.write`` from the loop thread, so writes of concurrent requests on one
connection are serialised by construction. Backpressure comes from the transport's
``pause_writing``; only streamed chunks wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Dict, List, Optional, cast

from ..protocol.connection import (
    CancelReceived,
    HealthCheckReceived,
    InvalidMessage,
    RequestReceived,
    ServerConnection,
)
from ..types import ErrorClass

if TYPE_CHECKING:
    from .server import Runtime

__all__ = ["BY_CLIENT", "BY_DEADLINE", "BY_DISCONNECT", "BY_SHUTDOWN", "IPCConnection", "Request"]

log = logging.getLogger("vastar_fast.runtime")

_MAX_DEADLINE_S = 7 * 24 * 3600.0
_HIGH_WATER = 4 * 1024 * 1024
"""Transport write buffer size above which streamed chunks wait for the client."""
_TRANSIENT = int(ErrorClass.TRANSIENT)
_RATE_LIMITED = int(ErrorClass.RATE_LIMITED)
_TIMEOUT = int(ErrorClass.TIMEOUT)
_INVALID = int(ErrorClass.INVALID_REQUEST)

# Why a request task was cancelled (the terminal answer depends on it).
BY_CLIENT = "client"
BY_DEADLINE = "deadline"
BY_SHUTDOWN = "shutdown"
BY_DISCONNECT = "disconnect"

_send_response = ServerConnection.send_response


class Request:
    """Book-keeping of one request in flight."""

    __slots__ = ("deadline", "reason", "rid", "stream_started", "task", "timer")

    def __init__(self, rid: int, deadline: float) -> None:
        self.rid = rid
        self.deadline = deadline
        """Loop time after which the request is abandoned with TIMEOUT."""
        self.reason: Optional[str] = None
        self.task: Optional[asyncio.Task[None]] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.stream_started = False


class IPCConnection(asyncio.Protocol):
    """One client connection: decodes frames, starts request tasks, writes answers."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.sc = ServerConnection()
        self.requests: Dict[int, Request] = {}
        self.transport: Optional[asyncio.Transport] = None
        self.credits = runtime.settings.limits.credits_per_connection
        self.announced = False
        self._paused = False
        self._drain_waiters: List[asyncio.Future[None]] = []

    # ------------------------------------------------------------ transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.rt.connections.add(self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.rt.connections.discard(self)
        self.transport = None
        for req in list(self.requests.values()):
            self._cancel(req, BY_DISCONNECT)
        self._wake_writers()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait while the client is slower than the upstream (streamed chunks only)."""
        if self._paused and self.transport is not None:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    def data_received(self, data: bytes) -> None:
        for event in self.sc.receive_data(data):
            if type(event) is RequestReceived:
                self._start(event)
            elif type(event) is HealthCheckReceived:
                rt = self.rt
                self.write(
                    ServerConnection.send_health(
                        not rt.stopping,
                        "shutting down" if rt.stopping else "ok",
                        rt.active,
                        max(0, self.credits - len(self.requests)),
                    )
                )
            elif type(event) is CancelReceived:
                req = self.requests.get(event.request_id)
                if req is not None:
                    self._cancel(req, BY_CLIENT)
            elif type(event) is InvalidMessage:
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

    def _invalid(self, event: InvalidMessage) -> None:
        message = event.message
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

    # ------------------------------------------------------------ requests
    def _start(self, event: RequestReceived) -> None:
        frame = event.frame
        rid = frame.request_id
        rt = self.rt
        if rt.stopping:
            self.write(
                _send_response(
                    rid,
                    _TRANSIENT,
                    "the runtime is shutting down and takes no new requests; retry once it "
                    "(or another instance) is back",
                    None,
                    0,
                )
            )
            return
        if len(self.requests) >= self.credits:
            self.write(
                _send_response(
                    rid,
                    _RATE_LIMITED,
                    f"too many requests in flight on this connection: the limit is "
                    f"{self.credits} (limits.credits_per_connection); wait for answers before "
                    "sending more",
                    None,
                    0,
                )
            )
            return
        if rid in self.requests:
            self.write(
                _send_response(
                    rid,
                    _INVALID,
                    f"request_id {rid} is already in flight on this connection; use a new "
                    "request_id for every request",
                    None,
                    0,
                )
            )
            return
        loop = rt.loop
        now = loop.time()
        deadline_ms = frame.deadline_at_ms
        if deadline_ms:
            left = deadline_ms / 1000.0 - time.time()
            if left <= 0:
                self.write(
                    _send_response(
                        rid,
                        _TIMEOUT,
                        f"deadline_at_ms {deadline_ms} had already passed ({-left * 1000:.0f} ms "
                        "ago) when the runtime received the request; give it more time or "
                        "check the client's clock",
                        None,
                        0,
                    )
                )
                return
            deadline = now + min(left, _MAX_DEADLINE_S)
        else:
            deadline = now + rt.default_deadline_s
        req = Request(rid, deadline)
        self.requests[rid] = req
        rt.request_started()
        req.timer = loop.call_at(deadline, self._cancel, req, BY_DEADLINE)
        req.task = loop.create_task(rt.handle(self, req, event))

    def _cancel(self, req: Request, reason: str) -> None:
        if req.reason is None:
            req.reason = reason
        if req.task is not None:
            req.task.cancel()

    def finished(self, req: Request) -> None:
        if req.timer is not None:
            req.timer.cancel()
        self.requests.pop(req.rid, None)
        self.rt.request_finished()
