"""One request from its frame to its single terminal answer: :class:`Exchange`.

A state machine driven by callbacks (the upstream connection's parser, the pool, the
deadline timer, the client's CancelRequest, the connection's end), not a task: a task
per request cost ~27 us of CPU per request in this daemon (docs/decisions.md). Every
path ends in :meth:`Exchange._finish`, which runs once: it writes the terminal
ExecuteResponse (unless the client is gone), releases the credit, the tenant's count
and the daemon's in-flight count, and records the metrics.

Answers are encoded by the codec directly (``ServerConnection``'s static ``send_*``
helpers are the same functions, one call deeper).

Steps: validate (connector, payload JSON, method, URL, tenant policy, headers) ->
admit through the host's circuit breaker -> an upstream connection (idle, or connected
for us) -> write the request -> the answer: status and headers (streamed: StreamStart),
body (streamed: a StreamChunk per piece as it arrives, reading paused while the client
is slower than the upstream) -> the terminal answer. A failed attempt is retried per
:mod:`.retry` until it succeeds, may not be retried, or the deadline comes.

One of the runtime's twinned request-path modules (see ``upstream.py``).
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from vastar_fast._log import logger
from vastar_fast.errors import ProtocolError
from vastar_fast.protocol import codec
from vastar_fast.runtime.redact import redact_headers, redact_url
from vastar_fast.runtime.tracing import begin_trace
from vastar_fast.types import MAX_PAYLOAD_SIZE, ErrorClass

from .breaker import BreakerOpen
from .policy import PolicyEngine
from .shaping import (
    METHOD_LIST,
    METHODS,
    Fail,
    build_request,
    drop_decoded,
    is_sse,
    redirect_target,
    response_headers,
    target_of,
    without_credentials,
)
from .upstream import UpstreamConnection, UpstreamFailure, Waiter

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

if TYPE_CHECKING:
    from vastar_fast.runtime.server import Runtime

__all__ = [
    "BY_CLIENT",
    "BY_DEADLINE",
    "BY_DISCONNECT",
    "BY_SHUTDOWN",
    "DEADLINE_TICK_S",
    "Deadlines",
    "Exchange",
    "InFlight",
]

log = logger("vastar_fast.runtime")  # the real one, with the package's NullHandler

BY_CLIENT = "client"
BY_DEADLINE = "deadline"
BY_SHUTDOWN = "shutdown"
BY_DISCONNECT = "disconnect"

_SUCCESS = 0
_TRANSIENT = int(ErrorClass.TRANSIENT)
_PERMANENT = int(ErrorClass.PERMANENT)
_TIMEOUT = int(ErrorClass.TIMEOUT)
_INVALID = int(ErrorClass.INVALID_REQUEST)
_RATE_LIMITED = int(ErrorClass.RATE_LIMITED)
_CHUNK_MAX = 1024 * 1024
"""Largest StreamChunk data; far below the 10 MiB frame cap."""

_encode_response = codec.encode_execute_response
_encode_http_response = codec.encode_http_response_frame
_encode_stream_start = codec.encode_stream_start
_encode_stream_chunk = codec.encode_stream_chunk
_decode_payload = codec.decode_http_request_payload
_perf = time.perf_counter
_sched_yield = getattr(os, "sched_yield", None)  # not on Windows

CONTENDED_WAIT = 0.10
"""Fraction of the time the loop's thread was runnable that it spent waiting for a CPU,
above which the CPUs count as contended and the loop does not poll (docs/decisions.md:
under 0.03 for one client on a quiet 2-CPU machine, polling or not; 0.2-0.4 with eight
client processes or a CPU-bound neighbour)."""
CONTENTION_CHECK_S = 0.05
"""Seconds between two readings of that wait (each about 10 us)."""
CONTENTION_MIN_RUNNABLE = 0.2
"""A reading counts only if the thread was runnable this share of the wall time since
the last one; a thread that mostly slept waited mostly for wake-ups, which says little
about contention, and polls little anyway (a reading like that clears ``contended``)."""


_UNREADABLE = (OSError, IndexError, ValueError)
"""What reading a schedstat file can raise: gone, or not the fields expected."""


def thread_schedstat() -> Optional[Callable[[], Tuple[float, float]]]:
    """A reader of the calling thread's total time on a CPU and time runnable but
    waiting for one, in seconds (the first two fields of Linux's
    ``/proc/<pid>/task/<tid>/schedstat``), or None where the platform does not say
    (macOS, Windows, a kernel without scheduler statistics). Each reading opens the
    file (about 10 us; one every ``CONTENTION_CHECK_S`` at most)."""
    path = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat"

    def ran_and_waited() -> Tuple[float, float]:
        with open(path, "rb") as f:
            fields = f.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9

    try:
        ran_and_waited()
    except _UNREADABLE:
        return None
    return ran_and_waited


@cython.cfunc
@cython.inline
def _scored(score: cython.int, hit: cython.bint) -> cython.int:
    """A polling score (0-3) after one more gap: up when it was inside the window."""
    if hit:
        return score + 1 if score < 3 else 3
    return score - 1 if score > 0 else 0


@cython.cclass
class InFlight:
    """The daemon's count of requests in flight (``Runtime.active``), kept by the request
    path itself: one increment when an exchange starts, one decrement when it ends, with
    no Python frame in between (compiled). Set by the runtime: ``stopping`` once it
    stops, ``on_idle`` (called when the last request ends while stopping), ``metrics``
    (None unless metrics are exported).

    It also keeps the loop polling for a short while after a request starts or ends
    (:meth:`poll_after`, the daemon's ``--spin-us``): while the loop has a callback
    ready it asks the kernel for events without sleeping, so a quick upstream answer
    or a client's next request finds the daemon awake instead of paying a sleep and a
    wake-up. It polls only where that has been paying off: the gap that followed the
    last starts (the upstream's answer, mostly) and the last ends (the client's next
    request) is each scored, and after an event of a kind whose gaps have been longer
    than the window the loop sleeps at once; only while at most the request just
    started is in flight (none after an end), where the loop would otherwise sleep
    waiting on one peer; and not while the CPUs are contended: where the kernel says
    (Linux), the loop thread's wait for a CPU is read every ``CONTENTION_CHECK_S``, and
    above ``CONTENDED_WAIT`` of its runnable time polling would take a CPU others wait for
    (docs/decisions.md, "Polling briefly instead of sleeping").
    """

    count = cython.declare(cython.longlong, visibility="readonly")
    stopping = cython.declare(cython.bint, visibility="public")
    on_idle = cython.declare(object, visibility="public")
    metrics = cython.declare(object, visibility="public")
    spin_s = cython.declare(cython.double, visibility="readonly")
    """Seconds the loop keeps polling after a request event; 0: never."""
    polling = cython.declare(cython.bint, visibility="readonly")
    """A polling callback is queued on the loop (it queues itself until the window ends)."""
    _loop: Any
    _poll_cb: Any
    _touched: cython.double
    _last_was_start: cython.bint
    _after_start: cython.int
    _after_end: cython.int
    _fresh: cython.bint
    schedstat = cython.declare(object, visibility="public")
    """A callable giving the loop thread's total seconds on a CPU and waiting for one
    (:func:`thread_schedstat`, set by :meth:`poll_after`), or None: never contended."""
    contended = cython.declare(cython.bint, visibility="readonly")
    """At the last reading the loop's thread waited for a CPU more than
    ``CONTENDED_WAIT`` of the time it was runnable: polling is off until a reading
    says otherwise."""
    _next_check: cython.double
    _read_at: cython.double
    _ran: cython.double
    _waited: cython.double

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self.on_idle = None
        self.metrics = None
        self.spin_s = 0.0
        self.polling = False
        self._loop = None
        self._poll_cb = self._poll
        self._touched = -1.0  # no event yet
        self._last_was_start = False
        # Scores 0-3 of how often the gap after a start / an end was inside the window;
        # 2 or more: poll after that kind of event. One long gap is forgiven, two are not.
        self._after_start = 3
        self._after_end = 3
        self._fresh = False
        self.schedstat = None
        self.contended = False
        self._next_check = 0.0
        self._read_at = -1.0  # no reading yet
        self._ran = 0.0
        self._waited = 0.0

    def poll_after(self, loop: Any, seconds: float) -> None:
        """Keep ``loop`` polling for ``seconds`` after a request starts or ends (0:
        never), where the gaps after such events have been shorter than that and the
        CPUs are not contended. Call it in the loop's thread (whose wait it reads)."""
        if not seconds >= 0.0:
            raise ValueError(f"the polling window must be 0 or more seconds, got {seconds!r}")
        self._loop = loop
        self.spin_s = seconds
        if seconds > 0.0 and self.schedstat is None:
            self.schedstat = thread_schedstat()

    def _check_contention(self, now: float) -> None:
        """Read the loop thread's CPU times; contended if, since the last reading, it
        was runnable at least ``CONTENTION_MIN_RUNNABLE`` of the wall time and spent
        more than ``CONTENDED_WAIT`` of that waiting for a CPU. (A share of runnable
        time, not of wall time: a thread that sleeps most of the time waits little in
        all, however long each wake-up waits; and not for a thread that mostly slept,
        whose waits were mostly for its wake-ups, or it would never poll again.)"""
        self._next_check = now + CONTENTION_CHECK_S
        if self.schedstat is None:
            return
        try:
            ran, waited = self.schedstat()
        except _UNREADABLE as e:  # the thread's file went away
            log.debug("CPU times unreadable (%s): contention no longer checked", e)
            self.schedstat = None
            self.contended = False
            return
        runnable = (ran - self._ran) + (waited - self._waited)
        if 0.0 <= self._read_at < now:
            busy = (
                runnable >= CONTENTION_MIN_RUNNABLE * (now - self._read_at)
                and waited - self._waited > CONTENDED_WAIT * runnable
            )
            if busy != self.contended:
                self.contended = busy
                log.debug(
                    "CPUs %s: polling %s", *(("contended", "off") if busy else ("free again", "on"))
                )
        self._read_at = now
        self._ran = ran
        self._waited = waited

    @cython.cfunc
    def _touch(self, start: cython.bint) -> None:
        now: cython.double = _perf()
        if self._touched >= 0.0:  # score the gap that followed the last event, by its kind
            hit: cython.bint = now - self._touched < self.spin_s
            if self._last_was_start:
                self._after_start = _scored(self._after_start, hit)
            else:
                self._after_end = _scored(self._after_end, hit)
        self._touched = now
        self._last_was_start = start
        self._fresh = True
        if now >= self._next_check:
            self._check_contention(now)
        if self._wanted() and not self.polling:
            self.polling = True
            self._loop.call_soon(self._poll_cb)

    @cython.cfunc
    def _wanted(self) -> cython.bint:
        """Polling pays after the last event's kind: its recent gaps were in the window,
        and the loop waits on one peer only (the one request just started, or none in
        flight after an end). With more in flight, their events keep the loop awake
        anyway, and on a machine whose CPUs are all busy polling would take time the
        clients and upstreams need (docs/decisions.md). Never while the CPUs are
        contended (:attr:`contended`)."""
        if self.contended:
            return False
        if self._last_was_start:
            return self.count <= 1 and self._after_start >= 2
        return self.count <= 0 and self._after_end >= 2

    def _poll(self) -> None:
        """One turn of polling: queued again (so the loop's next wait does not sleep)
        until the window after the last request event has passed. The first turn after
        an event yields the CPU once: the kernel queues the peer a write woke on the
        writer's CPU when it expects the writer to sleep, and that peer (the upstream,
        the client) should run at once, not after the window."""
        if self._wanted() and not self.stopping and _perf() - self._touched < self.spin_s:
            if self._fresh:
                self._fresh = False
                if _sched_yield is not None:
                    _sched_yield()
            self._loop.call_soon(self._poll_cb)
        else:
            self.polling = False

    @cython.ccall
    def started(self) -> None:
        self.count += 1
        if self.spin_s > 0.0:
            self._touch(True)
        if self.metrics is not None:
            self.metrics.in_flight(1)

    @cython.ccall
    def finished(self, tenant_id: str, error_class: int, seconds: float) -> None:
        """One request got its terminal answer (exactly once per request)."""
        self.count -= 1
        if self.spin_s > 0.0:
            self._touch(False)
        if self.count == 0 and self.stopping and self.on_idle is not None:
            self.on_idle()
        if self.metrics is not None:
            self.metrics.in_flight(-1)
            self.metrics.observe(tenant_id, error_class, seconds)


@cython.cclass
class Exchange:
    """The life of one request in flight."""

    rid = cython.declare(object, visibility="public")
    done = cython.declare(cython.bint, visibility="public")
    reason = cython.declare(object, visibility="public")
    deadline_slot = cython.declare(cython.longlong, visibility="public")
    """The request's slot in the runtime's :class:`Deadlines` (-1: not registered)."""
    stream_started = cython.declare(cython.bint, visibility="public")
    rt: Any
    inflight: InFlight
    ipc: Any
    tenant_id: str
    extended_stream: cython.bint
    deadline: cython.double
    t0: cython.double
    retry_timer: Any
    waiter: Any
    conn: Any
    tenant: Any
    tenant_slot: cython.longlong
    breaker: Any
    probe: cython.bint
    attempts: cython.int
    status: cython.int
    method: str
    is_head: cython.bint
    request_bytes: bytes
    pool_key: tuple
    ssl_ctx: Any
    target: Any
    limit: cython.longlong
    headers: dict
    body: bytes
    payload_len: cython.longlong
    allow_link_local: cython.bint
    follow_redirects: cython.bint
    redirect: Any
    hops: cython.int
    _headers: dict
    _sse: cython.bint
    quota: Any
    """Fleet quotas (quotas.py): the Ticket of the quota that applies, or None."""
    trace: Any
    """tracing.RequestTrace when the runtime records spans (--otel), else None."""

    def __init__(
        self, rt: Runtime, ipc: Any, rid: int, tenant_id: str, stream: bool,
        deadline: float, t0: float,
    ) -> None:  # fmt: skip
        self.rt = rt
        self.inflight = rt.inflight
        self.ipc = ipc
        self.rid = rid
        self.tenant_id = tenant_id
        self.extended_stream = stream
        self.deadline = deadline
        self.t0 = t0
        self.done = False
        self.reason = None
        self.deadline_slot = -1
        self.retry_timer = None
        self.waiter = None
        self.conn = None
        self.tenant = None
        self.tenant_slot = -1
        self.breaker = None
        self.probe = False
        self.attempts = 0
        self.stream_started = False
        self.status = 0
        self.method = ""
        self.is_head = False
        self.request_bytes = b""
        self.pool_key = ()
        self.ssl_ctx = None
        self.target = None
        self.limit = 0
        self.headers = {}
        self.body = b""
        self.payload_len = 0
        self.allow_link_local = False
        self.follow_redirects = rt.settings.http.follow_redirects
        self.redirect = None
        self.hops = 0
        self._headers = {}
        self._sse = False
        self.quota = None
        self.trace = None

    # ---------------------------------------------------------------- start
    def start(self, frame: codec.ExecuteRequestFrame) -> None:
        self.inflight.started()  # counted before anything can finish it
        try:
            self._prepare(frame)
        except Fail as fail:
            self._finish(fail.error_class, _encode_response(self.rid, fail.error_class,
                                                            fail.message, None, self._us()))  # fmt: skip
            return
        except Exception as exc:  # a bug: answer anyway, never leave a request hanging
            self._internal_error(exc)
            return
        self._attempt()

    @cython.cfunc
    def _prepare(self, frame: Any) -> None:
        if frame.connector_name != "http" or frame.operation != "request":
            raise Fail(
                _INVALID,
                f"unknown connector {frame.connector_name!r} / operation {frame.operation!r}: "
                "this runtime provides connector 'http' with operation 'request'",
            )
        rt = self.rt
        tenant = rt.policy.tenant(frame.tenant_id)
        if tenant.token_required:
            problem = tenant.authorize(frame.headers)
            if problem is not None:
                raise Fail(_PERMANENT, problem)
        payload = frame.payload
        try:
            http = _decode_payload(payload)
        except ProtocolError as exc:
            raise Fail(
                _INVALID,
                f"{exc}; send a JSON object "
                '{"method": "GET", "url": "https://...", "headers": {...}, "body": "..."}',
            ) from None
        method: str = http.method
        if method not in METHODS:
            method = method.upper()
            if method not in METHODS:
                raise Fail(
                    _INVALID, f"unsupported HTTP method {http.method!r}; use one of {METHOD_LIST}"
                )
        text: str = http.body
        self.method = method
        self.body = text.encode("utf-8") if text else b""
        self.headers = http.headers
        self.payload_len = len(payload)
        if rt.tracer is not None or frame.headers:  # tracing.py: continue the caller's trace
            self.trace = begin_trace(rt.tracer, frame.headers, http.headers, method, http.url,
                                     text, frame.tenant_id, self.rid, self.extended_stream)  # fmt: skip
        self._route(target_of(http.url), tenant)
        self.limit = tenant.policy.max_response_bytes
        slot = tenant.acquire()
        if slot < 0:
            denial = tenant.refusal(slot)
            raise Fail(int(denial[0]), denial[1])
        self.tenant_slot = slot
        self.tenant = tenant
        if rt.debug:
            log.debug(
                "request %d tenant=%r: %s %s headers=%s body=%d bytes stream=%s",
                self.rid, frame.tenant_id, method, redact_url(http.url),
                redact_headers(http.headers), len(self.body), self.extended_stream,
            )  # fmt: skip

    @cython.cfunc
    def _route(self, target: Any, tenant: Any) -> None:
        """Check ``target`` against the tenant's policy and aim the exchange at it (the
        first URL, and every redirect hop)."""
        denial = PolicyEngine.check(tenant, target.host, target.port, self.payload_len)
        if denial is not None:
            raise Fail(int(denial[0]), denial[1])
        if target.forbidden and not tenant.allow_link_local:
            raise Fail(
                _PERMANENT,
                f"{target.host_key} is a link-local or metadata address, which tenant "
                f"{tenant.name!r} may not reach; set {tenant.key}.allow_link_local: true in the "
                "runtime config if it must",
            )
        rt = self.rt
        limits = rt.settings.limits
        self.request_bytes = build_request(self.method, target, self.headers, self.body,
                                           limits.max_request_headers,
                                           limits.max_header_bytes)  # fmt: skip
        self.is_head = self.method == "HEAD"
        self.target = target
        self.allow_link_local = tenant.allow_link_local
        tls_key = None
        self.ssl_ctx = None
        if target.tls:
            tls_key, self.ssl_ctx = rt.pool.ssl_for(tenant.policy)
        self.pool_key = (target.scheme, target.host, target.port, tls_key)
        self.breaker = rt.breakers.get(target.host_key)
        if rt.quotas is not None:  # fleet quotas: the ticket of the quota for this target
            self.quota = rt.quotas.ticket(self, target, self.method, self.headers, self.body,
                                          self.deadline, self.quota)  # fmt: skip

    @cython.cfunc
    def _follow(self) -> None:
        """Follow the redirect the last answer asked for, within the tenant's policy."""
        location = self.redirect
        self.redirect = None
        rt = self.rt
        self.hops += 1
        limit = rt.settings.http.max_redirects
        if self.hops > limit:
            raise Fail(
                _PERMANENT,
                f"{self.target.host_key} redirected more than {limit} times "
                "(http.max_redirects); the last hop was not followed",
            )
        target = target_of(location)
        old = self.target
        status = self.status
        if (status == 303 and self.method != "HEAD") or (
            status in (301, 302) and self.method == "POST"
        ):
            self.method = "GET"  # what browsers and HTTP clients do
            self.body = b""
            self.headers = {k: v for k, v in self.headers.items()
                            if k.lower() != "content-type"}  # fmt: skip
        if (target.scheme, target.host, target.port) != (old.scheme, old.host, old.port):
            self.headers = without_credentials(self.headers)  # never across origins
        self._route(target, self.tenant)
        if rt.debug:
            log.debug("request %d: following a %d redirect to %s", self.rid, status,
                      redact_url(location))  # fmt: skip
        self.attempts = 0
        self._attempt()

    # ---------------------------------------------------------------- attempts
    def _attempt(self) -> None:
        self.retry_timer = None
        if self.done:
            return
        self.attempts += 1
        if self.quota is not None:  # fleet quotas: admission first; it calls go()
            self.quota.admit()
            return
        self.go()

    def go(self) -> None:
        """Send the attempt (after its quota admitted it, when a quota applies)."""
        if self.done:
            return
        try:
            self.probe = self.breaker.check()
        except BreakerOpen as exc:
            tail = f" (after {self.attempts - 1} attempts)" if self.attempts > 1 else ""
            self._fail_with(_TRANSIENT, exc.message + tail)
            return
        target = self.target
        if self.trace is not None:  # tracing.py: a span per attempt, its traceparent upstream
            limits = self.rt.settings.limits
            self.request_bytes = self.trace.attempt(self.status, self.method, target,
                                                    self.headers, self.body, limits)  # fmt: skip
        got = self.rt.pool.acquire(self.pool_key, target.host, target.port, self.ssl_ctx,
                                   target.host_key, self._connected,
                                   self.allow_link_local)  # fmt: skip
        if type(got) is UpstreamConnection:
            self._send(got)
        else:
            self.waiter = got

    def quota_refused(self, message: str) -> None:
        """The quota cannot admit the attempt before the deadline (quotas.py)."""
        if not self.done:
            self._fail_with(_RATE_LIMITED, message)

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
            self._send(conn)

    @cython.cfunc
    def _send(self, conn: Any) -> None:
        self.conn = conn
        conn.send(self.request_bytes, self, self.is_head, self.limit, self.extended_stream,
                  self.quota is not None)  # fleet quotas read the raw headers  # fmt: skip

    # ---------------------------------------------------------------- the answer (sink)
    def on_head(self, status: int, headers: Any, decoded: bool) -> None:
        if self.done:
            return
        self.status = status
        if self.quota is not None:  # fleet quotas: a 429's retry-after, remaining counts
            self.quota.head(status, headers)
        if type(headers) is dict:  # the upstream's fast path shaped them already
            shaped = headers
            if decoded:
                drop_decoded(shaped)
        else:
            shaped = response_headers(headers, decoded)
        self._headers = shaped
        self._sse = is_sse(shaped)
        if self.follow_redirects:
            self.redirect = redirect_target(status, shaped, self.target)
            if self.redirect is not None:
                return  # its body is read and dropped; on_done follows it
        if self.extended_stream:
            self.breaker.record_success()
            self.probe = False
            self.stream_started = True
            self.ipc.write(_encode_stream_start(self.rid, status, list(shaped.items()), self._sse))

    def on_body(self, data: bytes) -> None:
        if self.done or self.redirect is not None:
            return
        if self.quota is not None:  # fleet quotas: the usage is in the stream
            self.quota.chunk(data)
        if self.trace is not None:  # tracing.py: GenAI response attributes
            self.trace.body(data)
        ipc = self.ipc
        rid = self.rid
        if len(data) <= _CHUNK_MAX:
            ipc.write(_encode_stream_chunk(rid, data))
        else:
            for i in range(0, len(data), _CHUNK_MAX):
                ipc.write(_encode_stream_chunk(rid, data[i : i + _CHUNK_MAX]))
        if ipc.paused and self.conn is not None:
            self.conn.pause_reading()  # the client is slower than the upstream

    def pause(self) -> None:
        """The client is slower than the upstreams: stop reading this one's answer."""
        if self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        """The client caught up (the connection's write buffer drained)."""
        if self.conn is not None:
            self.conn.resume_reading()

    def on_done(self, body: bytes) -> None:
        self.conn = None
        if self.done:
            return
        if self.quota is not None:  # fleet quotas: reconcile with the answer's usage
            self.quota.done(self.status, body)
        if self.redirect is not None:
            self.breaker.record_success()
            self.probe = False
            try:
                self._follow()
            except Fail as fail:
                self._fail_with(fail.error_class, fail.message)
            except Exception as exc:  # a bug: answer anyway
                self._internal_error(exc)
            return
        if self.trace is not None:  # tracing.py: GenAI response attributes
            self.trace.body(body)
        try:
            if self.extended_stream:
                frame = _encode_http_response(self.rid, self.status, self._headers, b"",
                                              self._sse, self._us())  # fmt: skip
            else:
                self.breaker.record_success()
                self.probe = False
                frame = _encode_http_response(self.rid, self.status, self._headers, body,
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
        if self.quota is not None:  # fleet quotas: a request that never left costs nothing
            self.quota.failed(failure.connect)
        if self.trace is not None:  # tracing.py: the attempt's span ends with the failure
            self.trace.failed(int(failure.error_class), failure.message)
        breaker = self.breaker
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
            self._finish(_PERMANENT, _encode_response(rid, _PERMANENT, "cancelled by client",
                                                      None, self._us()))  # fmt: skip
        elif reason == BY_DEADLINE:
            self._finish(
                _TIMEOUT,
                _encode_response(
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
                _encode_response(
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

    @cython.cfunc
    def _abandon_upstream(self) -> None:
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()  # a half-done exchange: the connection is never reused
        waiter = self.waiter
        self.waiter = None
        if waiter is not None:
            w: Waiter = waiter
            w.cancelled = True
        timer = self.retry_timer
        self.retry_timer = None
        if timer is not None:
            timer.cancel()
        if self.probe and self.breaker is not None:
            self.breaker.release_probe()
            self.probe = False

    # ---------------------------------------------------------------- endings
    @cython.cfunc
    def _fail_with(self, error_class: int, message: str) -> None:
        self._abandon_upstream()
        self._finish(error_class, _encode_response(self.rid, error_class, message, None,
                                                   self._us()))  # fmt: skip

    @cython.cfunc
    def _internal_error(self, exc: BaseException) -> None:
        log.error("internal error handling request %d", self.rid, exc_info=exc)
        self._fail_with(
            _TRANSIENT,
            f"internal error in the runtime ({type(exc).__name__}); retry, and report it if it "
            "persists",
        )

    @cython.cfunc
    def _finish(self, error_class: int, frame: Optional[bytes]) -> None:
        """The single end of every request."""
        if self.done:
            return
        self.done = True
        ipc = self.ipc
        if frame is not None:
            ipc.write(frame)  # the answer goes out first; bookkeeping after it
        if self.deadline_slot >= 0:
            self.rt.deadlines.discard(self, self.deadline_slot)
        ipc.requests.pop(self.rid, None)
        tenant = self.tenant
        if tenant is not None:
            tenant.release(self.tenant_slot)
        if self.quota is not None:  # fleet quotas: leave the queue
            self.quota.close()
        rt = self.rt
        self.inflight.finished(self.tenant_id, error_class, _perf() - self.t0)
        if self.trace is not None:  # tracing.py: the attempt's and the request's spans end
            self.trace.finish(error_class, self.status, frame)
        if rt.debug:
            log.debug("request %d done: error_class=%d in %dus", self.rid, error_class,
                      self._us())  # fmt: skip

    @cython.cfunc
    def _us(self) -> object:
        return int((_perf() - self.t0) * 1e6)


DEADLINE_TICK_S = 0.005
"""Deadlines fire at most this much after they pass (one shared timer, see Deadlines)."""


@cython.cclass
class Deadlines:
    """Every request's deadline on one timer, instead of a TimerHandle per request.

    A request is filed under the 5 ms slot its deadline falls in; one loop timer waits
    for the earliest slot with requests, and when it fires every request of the slots
    that have come is cancelled with TIMEOUT (at most ``DEADLINE_TICK_S`` late). Filing
    and unfiling are a dict and a set operation; a timer started and cancelled per
    request cost ~8 us of CPU per request in this daemon (docs/decisions.md).
    """

    _loop: Any
    _slots: dict
    _heap: list
    _timer: Any
    _timer_slot: cython.longlong

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._slots = {}
        self._heap = []
        self._timer = None
        self._timer_slot = -1

    def add(self, ex: Any, deadline: float) -> int:
        """File ``ex`` under its deadline (loop time); the slot to give :meth:`discard`."""
        slot: cython.longlong = int(deadline / DEADLINE_TICK_S) + 1
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = bucket = set()
            heapq.heappush(self._heap, slot)
            if self._timer is None or slot < self._timer_slot:
                self._arm(slot)
        bucket.add(ex)
        return slot

    def discard(self, ex: Any, slot: int) -> None:
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.discard(ex)
            if not bucket:
                del self._slots[slot]  # its heap entry is dropped when it comes up

    @cython.cfunc
    def _arm(self, slot: cython.longlong) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self._loop.call_at(slot * DEADLINE_TICK_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now_slot: cython.longlong = int(self._loop.time() / DEADLINE_TICK_S)
        heap = self._heap
        due: List[Any] = []
        while heap and heap[0] <= now_slot:
            bucket = self._slots.pop(heapq.heappop(heap), None)
            if bucket:
                due.extend(bucket)
        for ex in due:
            ex.deadline_slot = -1
            ex.cancel(BY_DEADLINE)
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)  # slots emptied by finished requests
        if heap:
            self._arm(heap[0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
