"""One request from its frame to its single terminal answer: :class:`Exchange`.

A state machine driven by callbacks (the upstream connection's parser, the pool, the
deadline timer, the client's CancelRequest, the connection's end), not a task: a task
per request cost ~27 us of CPU per request in this daemon (docs/decisions.md). Every
path ends in :meth:`Exchange._finish`, which runs once: it writes the terminal
ExecuteResponse (unless the client is gone), releases the credit, the tenant's count
and the daemon's in-flight count, and records the metrics.

Steps: validate (connector, payload JSON, method, URL, tenant policy, headers) ->
admit through the host's circuit breaker -> an upstream connection (idle, or connected
for us) -> write the request -> the answer: status and headers (streamed: StreamStart),
body (streamed: a StreamChunk per piece as it arrives, reading paused while the client
is slower than the upstream) -> the terminal answer. A failed attempt is retried per
:mod:`.retry` until it succeeds, may not be retried, or the deadline comes.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import ProtocolError
from ..protocol import codec
from ..protocol.connection import ServerConnection
from ..types import MAX_PAYLOAD_SIZE, ErrorClass
from .breaker import Breaker, BreakerOpen
from .policy import PolicyEngine, TenantState
from .redact import redact_headers, redact_url
from .shaping import (
    METHOD_LIST,
    METHODS,
    Fail,
    Target,
    build_request,
    is_sse,
    parse_target,
    response_headers,
)
from .upstream import PoolKey, ResponseSink, UpstreamConnection, UpstreamFailure

if TYPE_CHECKING:
    import asyncio

    from .ipc import IPCConnection
    from .server import Runtime

__all__ = ["BY_CLIENT", "BY_DEADLINE", "BY_DISCONNECT", "BY_SHUTDOWN", "Exchange"]

log = logging.getLogger("vastar_fast.runtime")

BY_CLIENT = "client"
BY_DEADLINE = "deadline"
BY_SHUTDOWN = "shutdown"
BY_DISCONNECT = "disconnect"

_SUCCESS = 0
_TRANSIENT = int(ErrorClass.TRANSIENT)
_PERMANENT = int(ErrorClass.PERMANENT)
_TIMEOUT = int(ErrorClass.TIMEOUT)
_INVALID = int(ErrorClass.INVALID_REQUEST)
_CHUNK_MAX = 1024 * 1024
"""Largest StreamChunk data; far below the 10 MiB frame cap."""

_send_response = ServerConnection.send_response
_send_http_response = ServerConnection.send_http_response
_send_stream_start = ServerConnection.send_stream_start
_send_stream_chunk = ServerConnection.send_stream_chunk
_perf = time.perf_counter

_TARGETS: Dict[str, Target] = {}
_TARGETS_MAX = 4096


def target_of(url: str) -> Target:
    """:func:`parse_target` with a bounded cache (most clients repeat their URLs)."""
    target = _TARGETS.get(url)
    if target is None:
        target = parse_target(url)
        if len(_TARGETS) >= _TARGETS_MAX:
            _TARGETS.clear()
        _TARGETS[url] = target
    return target


class Exchange(ResponseSink):
    """The life of one request in flight."""

    __slots__ = (
        "_headers",
        "_sse",
        "attempts",
        "breaker",
        "conn",
        "deadline",
        "done",
        "extended_stream",
        "ipc",
        "is_head",
        "method",
        "pool_key",
        "probe",
        "reason",
        "request_bytes",
        "retry_timer",
        "rid",
        "rt",
        "ssl_ctx",
        "status",
        "stream_started",
        "t0",
        "target",
        "tenant",
        "tenant_id",
        "timer",
        "waiter",
    )

    def __init__(
        self, rt: Runtime, ipc: IPCConnection, rid: int, tenant_id: str, stream: bool,
        deadline: float, t0: float,
    ) -> None:  # fmt: skip
        self.rt = rt
        self.ipc = ipc
        self.rid = rid
        self.tenant_id = tenant_id
        self.extended_stream = stream
        self.deadline = deadline
        self.t0 = t0
        self.done = False
        self.reason: Optional[str] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.retry_timer: Optional[asyncio.TimerHandle] = None
        self.waiter: Optional[object] = None
        self.conn: Optional[UpstreamConnection] = None
        self.tenant: Optional[TenantState] = None
        self.breaker: Optional[Breaker] = None
        self.probe = False
        self.attempts = 0
        self.stream_started = False
        self.status = 0
        self.method = ""
        self.is_head = False
        self.request_bytes = b""
        self.pool_key: PoolKey = ("", "", 0, None)
        self.ssl_ctx: Optional[ssl.SSLContext] = None
        self.target: Optional[Target] = None
        self._headers: Dict[str, str] = {}
        self._sse = False

    # ---------------------------------------------------------------- start
    def start(self, frame: codec.ExecuteRequestFrame) -> None:
        try:
            self._prepare(frame)
        except Fail as fail:
            self._finish(fail.error_class, _send_response(self.rid, fail.error_class,
                                                          fail.message, None, self._us()))  # fmt: skip
            return
        except Exception as exc:  # a bug: answer anyway, never leave a request hanging
            self._internal_error(exc)
            return
        self._attempt()

    def _prepare(self, frame: codec.ExecuteRequestFrame) -> None:
        if frame.connector_name != "http" or frame.operation != "request":
            raise Fail(
                _INVALID,
                f"unknown connector {frame.connector_name!r} / operation {frame.operation!r}: "
                "this runtime provides connector 'http' with operation 'request'",
            )
        try:
            http = codec.decode_http_request_payload(frame.payload)
        except ProtocolError as exc:
            raise Fail(
                _INVALID,
                f"{exc}; send a JSON object "
                '{"method": "GET", "url": "https://...", "headers": {...}, "body": "..."}',
            ) from None
        method = http.method.upper()
        if method not in METHODS:
            raise Fail(
                _INVALID, f"unsupported HTTP method {http.method!r}; use one of {METHOD_LIST}"
            )
        target = target_of(http.url)
        rt = self.rt
        tenant = rt.policy.tenant(frame.tenant_id)
        denial = PolicyEngine.check(tenant, target.host, target.port, len(frame.payload))
        if denial is not None:
            raise Fail(int(denial[0]), denial[1])
        body = http.body.encode("utf-8") if http.body else b""
        self.request_bytes = build_request(method, target, http.headers, body)
        self.method = method
        self.is_head = method == "HEAD"
        self.target = target
        if target.tls:
            tls_key, self.ssl_ctx = rt.pool.ssl_for(tenant.policy)
        else:
            tls_key = None
        self.pool_key = (target.scheme, target.host, target.port, tls_key)
        self.breaker = rt.breakers.get(target.host_key)
        tenant.in_flight += 1
        self.tenant = tenant
        if rt.debug:
            log.debug(
                "request %d tenant=%r: %s %s headers=%s body=%d bytes stream=%s",
                self.rid, frame.tenant_id, method, redact_url(http.url),
                redact_headers(http.headers), len(body), self.extended_stream,
            )  # fmt: skip

    # ---------------------------------------------------------------- attempts
    def _attempt(self) -> None:
        self.retry_timer = None
        if self.done:
            return
        self.attempts += 1
        breaker = self.breaker
        assert breaker is not None and self.target is not None
        try:
            self.probe = breaker.check()
        except BreakerOpen as exc:
            tail = f" (after {self.attempts - 1} attempts)" if self.attempts > 1 else ""
            self._fail_with(_TRANSIENT, exc.message + tail)
            return
        target = self.target
        conn, waiter = self.rt.pool.acquire(
            self.pool_key, target.host, target.port, self.ssl_ctx, target.host_key,
            self._connected,
        )  # fmt: skip
        if conn is not None:
            self._send(conn)
        else:
            self.waiter = waiter

    def _connected(
        self, conn: Optional[UpstreamConnection], failure: Optional[UpstreamFailure]
    ) -> None:
        self.waiter = None
        if self.done:
            if conn is not None:
                self.rt.pool.release(conn)
            return
        if failure is not None:
            self.on_fail(failure)
        else:
            assert conn is not None
            self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        assert self.tenant is not None
        conn.send(self.request_bytes, self, self.is_head, self.tenant.policy.max_response_bytes,
                  self.extended_stream)  # fmt: skip

    # ---------------------------------------------------------------- the answer
    def on_head(self, status: int, headers: List[Tuple[bytes, bytes]], decoded: bool) -> None:
        if self.done:
            return
        self.status = status
        shaped = response_headers(headers, decoded)
        self._headers = shaped
        self._sse = is_sse(shaped)
        if self.extended_stream:
            assert self.breaker is not None
            self.breaker.record_success()
            self.probe = False
            self.stream_started = True
            self.ipc.write(_send_stream_start(self.rid, status, shaped, self._sse))

    def on_body(self, data: bytes) -> None:
        if self.done:
            return
        ipc = self.ipc
        rid = self.rid
        if len(data) <= _CHUNK_MAX:
            ipc.write(_send_stream_chunk(rid, data))
        else:
            for i in range(0, len(data), _CHUNK_MAX):
                ipc.write(_send_stream_chunk(rid, data[i : i + _CHUNK_MAX]))
        if ipc.paused and self.conn is not None:
            self.conn.pause_reading()  # the client is slower than the upstream
            ipc.paused_exchanges.add(self)

    def resume(self) -> None:
        """The client caught up (the connection's write buffer drained)."""
        if self.conn is not None:
            self.conn.resume_reading()

    def on_done(self, body: bytes) -> None:
        self.conn = None
        if self.done:
            return
        try:
            if self.extended_stream:
                frame = _send_http_response(self.rid, self.status, self._headers, "", self._sse,
                                            self._us())  # fmt: skip
            else:
                assert self.breaker is not None
                self.breaker.record_success()
                self.probe = False
                frame = _send_http_response(self.rid, self.status, self._headers, body,
                                            self._sse, self._us())  # fmt: skip
                if len(frame) - 4 > MAX_PAYLOAD_SIZE:
                    self._fail_with(
                        _PERMANENT,
                        f"the upstream's {len(body)}-byte response encodes to a "
                        f"{len(frame) - 4}-byte frame, over the {MAX_PAYLOAD_SIZE}-byte frame "
                        "cap of Vastar clients; ask for less data per request (paging) or use "
                        "the streaming extension",
                    )
                    return
        except Exception as exc:  # a bug: answer anyway
            self._internal_error(exc)
            return
        self._finish(_SUCCESS, frame)

    def on_fail(self, failure: UpstreamFailure) -> None:
        self.conn = None
        if self.done:
            return
        breaker = self.breaker
        assert breaker is not None
        if failure.host_fault:
            breaker.record_failure()
        elif self.probe:
            breaker.release_probe()
        self.probe = False
        if self.stream_started:
            self._fail_with(int(failure.error_class), failure.message)
            return
        rt = self.rt
        delay = rt.retry.delay(self.attempts, failure, self.method, rt.loop.time(), self.deadline)
        if delay is None:
            tail = f" (gave up after {self.attempts} attempts)" if self.attempts > 1 else ""
            self._fail_with(int(failure.error_class), failure.message + tail)
            return
        if rt.debug:
            log.debug("request %d attempt %d failed, retrying in %.3fs", self.rid,
                      self.attempts, delay)  # fmt: skip
        self.retry_timer = rt.loop.call_later(delay, self._attempt)

    def too_big(self, size: int, at_least: bool) -> str:
        tenant = self.tenant
        assert tenant is not None
        return (
            f"the upstream response is {'over ' if at_least else ''}{size} bytes, more than "
            f"tenant {tenant.name!r}'s limit of {tenant.policy.max_response_bytes} bytes "
            f"({tenant.key}.max_response_bytes); ask for less data per request, or raise the "
            "limit"
        )

    # ---------------------------------------------------------------- cancellation
    def cancel(self, reason: str) -> None:
        """Abandon the request (client cancel, deadline, shutdown, client gone)."""
        if self.done:
            return
        self.reason = reason
        self._abandon_upstream()
        rid = self.rid
        if reason == BY_CLIENT:
            self._finish(_PERMANENT, _send_response(rid, _PERMANENT, "cancelled by client", None,
                                                    self._us()))  # fmt: skip
        elif reason == BY_DEADLINE:
            self._finish(
                _TIMEOUT,
                _send_response(
                    rid,
                    _TIMEOUT,
                    f"deadline passed after {self._us() / 1000:.0f} ms before the upstream "
                    f"{'finished' if self.stream_started else 'answered'}; the upstream request "
                    "was cancelled. Give the request a later deadline_at_ms (timeout) if the "
                    "upstream is just slow",
                    None,
                    self._us(),
                ),
            )
        elif reason == BY_SHUTDOWN:
            self._finish(
                _TRANSIENT,
                _send_response(
                    rid,
                    _TRANSIENT,
                    "the runtime shut down before this request finished (grace period "
                    "exceeded); the upstream request was cancelled, retry it",
                    None,
                    self._us(),
                ),
            )
        else:  # the client went away: nobody to answer
            self._finish(_TRANSIENT, None)

    def _abandon_upstream(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()  # a half-done exchange: the connection is never reused
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.cancelled = True  # type: ignore[attr-defined]
        timer, self.retry_timer = self.retry_timer, None
        if timer is not None:
            timer.cancel()
        if self.probe and self.breaker is not None:
            self.breaker.release_probe()
            self.probe = False

    # ---------------------------------------------------------------- endings
    def _fail_with(self, error_class: int, message: str) -> None:
        self._abandon_upstream()
        self._finish(error_class, _send_response(self.rid, error_class, message, None, self._us()))

    def _internal_error(self, exc: BaseException) -> None:
        log.error("internal error handling request %d", self.rid, exc_info=exc)
        self._fail_with(
            _TRANSIENT,
            f"internal error in the runtime ({type(exc).__name__}); retry, and report it if it "
            "persists",
        )

    def _finish(self, error_class: int, frame: Optional[bytes]) -> None:
        """The single end of every request."""
        if self.done:
            return
        self.done = True
        timer = self.timer
        if timer is not None:
            timer.cancel()
        ipc = self.ipc
        ipc.requests.pop(self.rid, None)
        ipc.paused_exchanges.discard(self)
        tenant = self.tenant
        if tenant is not None:
            tenant.in_flight -= 1
        rt = self.rt
        if frame is not None:
            ipc.write(frame)
        rt.request_finished()
        seconds = _perf() - self.t0
        rt.metrics.observe(self.tenant_id, error_class, seconds)
        if rt.debug:
            log.debug("request %d done: error_class=%d in %dus", self.rid, error_class,
                      int(seconds * 1e6))  # fmt: skip

    def _us(self) -> int:
        return int((_perf() - self.t0) * 1e6)
