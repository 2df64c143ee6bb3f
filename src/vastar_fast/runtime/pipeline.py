"""One request, from its decoded frame to its single terminal ExecuteResponse: payload
and policy checks, the upstream exchange (retried where safe), streaming, and the
answers for each way a request can be cancelled."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Dict, List, Optional

import aiohttp
from yarl import URL

from ..errors import ProtocolError
from ..protocol import codec
from ..protocol.connection import RequestReceived, ServerConnection
from ..types import MAX_PAYLOAD_SIZE, ErrorClass
from .breaker import Breaker, BreakerOpen
from .ipc import BY_CLIENT, BY_DEADLINE, BY_SHUTDOWN, IPCConnection, Request
from .policy import PolicyEngine, TenantState
from .redact import redact_headers, redact_url
from .shaping import METHOD_LIST, METHODS, Fail, is_sse, parse_url, response_headers, too_big
from .transport import classify

if TYPE_CHECKING:
    from .server import Runtime

__all__ = ["handle"]

log = logging.getLogger("vastar_fast.runtime")

_CHUNK_MAX = 1024 * 1024
"""Largest StreamChunk data; far below the 10 MiB frame cap."""
_BIG_FRAME = 256 * 1024
"""Buffered answers larger than this wait for a paused transport to drain first."""
_SUCCESS = 0
_TRANSIENT = int(ErrorClass.TRANSIENT)
_PERMANENT = int(ErrorClass.PERMANENT)
_TIMEOUT = int(ErrorClass.TIMEOUT)
_INVALID = int(ErrorClass.INVALID_REQUEST)

_send_response = ServerConnection.send_response
_send_http_response = ServerConnection.send_http_response
_send_stream_start = ServerConnection.send_stream_start
_send_stream_chunk = ServerConnection.send_stream_chunk


async def handle(rt: Runtime, conn: IPCConnection, req: Request, event: RequestReceived) -> None:
    """Run one request to its single terminal ExecuteResponse."""
    t0 = time.perf_counter()
    frame = event.frame
    rid = req.rid
    tenant: Optional[TenantState] = None
    error_class = _SUCCESS
    try:
        try:
            if frame.connector_name != "http" or frame.operation != "request":
                raise Fail(
                    _INVALID,
                    f"unknown connector {frame.connector_name!r} / operation "
                    f"{frame.operation!r}: this runtime provides connector 'http' with "
                    "operation 'request'",
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
                    _INVALID,
                    f"unsupported HTTP method {http.method!r}; use one of {METHOD_LIST}",
                )
            url = parse_url(http.url)
            host = url.host or ""
            port = url.port or (443 if url.scheme == "https" else 80)
            tenant = rt.policy.tenant(frame.tenant_id)
            denial = PolicyEngine.check(tenant, host, port, len(frame.payload))
            if denial is not None:
                raise Fail(int(denial[0]), denial[1])
            if rt.debug:
                log.debug(
                    "request %d tenant=%r: %s %s headers=%s body=%d chars stream=%s",
                    rid, frame.tenant_id, method, redact_url(http.url),
                    redact_headers(http.headers), len(http.body), "stream" in event.extensions,
                )  # fmt: skip
            tenant.in_flight += 1
            try:
                await _exchange(
                    rt, conn, req, tenant, method, url, f"{url.scheme}://{host}:{port}",
                    http.headers, http.body, "stream" in event.extensions, t0,
                )  # fmt: skip
            finally:
                tenant.in_flight -= 1
        except Fail as fail:
            error_class = fail.error_class
            conn.write(_send_response(rid, error_class, fail.message, None, _us(t0)))
        except asyncio.CancelledError:
            error_class = _cancelled(conn, req, t0)
        except Exception as exc:  # a bug: answer anyway, never leave a request hanging
            log.exception("internal error handling request %d", rid)
            error_class = _TRANSIENT
            conn.write(
                _send_response(
                    rid,
                    _TRANSIENT,
                    f"internal error in the runtime ({type(exc).__name__}); retry, and "
                    "report it if it persists",
                    None,
                    _us(t0),
                )
            )
    finally:
        conn.finished(req)
        rt.metrics.observe(frame.tenant_id, error_class, time.perf_counter() - t0)
        if rt.debug:
            log.debug("request %d done: error_class=%d in %dus", rid, error_class, _us(t0))


def _cancelled(conn: IPCConnection, req: Request, t0: float) -> int:
    """The terminal answer of a request whose task was cancelled, by reason."""
    reason = req.reason
    rid = req.rid
    if reason == BY_CLIENT:
        conn.write(_send_response(rid, _PERMANENT, "cancelled by client", None, _us(t0)))
        return _PERMANENT
    if reason == BY_DEADLINE:
        conn.write(
            _send_response(
                rid,
                _TIMEOUT,
                f"deadline passed after {_us(t0) / 1000:.0f} ms before the upstream "
                f"{'finished' if req.stream_started else 'answered'}; the upstream request "
                "was cancelled. Give the request a later deadline_at_ms (timeout) if the "
                "upstream is just slow",
                None,
                _us(t0),
            )
        )
        return _TIMEOUT
    if reason == BY_SHUTDOWN:
        conn.write(
            _send_response(
                rid,
                _TRANSIENT,
                "the runtime shut down before this request finished (grace period "
                "exceeded); the upstream request was cancelled, retry it",
                None,
                _us(t0),
            )
        )
        return _TRANSIENT
    # The client went away: nobody to answer. Propagate as a real cancellation when
    # the loop itself is being torn down.
    if reason is None:
        raise asyncio.CancelledError
    return _TRANSIENT


async def _exchange(
    rt: Runtime,
    conn: IPCConnection,
    req: Request,
    tenant: TenantState,
    method: str,
    url: URL,
    host_key: str,
    headers: Dict[str, str],
    body_text: str,
    stream: bool,
    t0: float,
) -> None:
    """Send the request (retrying where safe) and write the answer."""
    assert rt.transport is not None
    session = rt.transport.session
    ssl_arg = rt.transport.ssl_for(tenant.policy)
    body = body_text.encode("utf-8") if body_text else None
    breaker = rt.breakers.get(host_key)
    limit = tenant.policy.max_response_bytes
    attempt = 0
    while True:
        attempt += 1
        probe = _admit(breaker, attempt)
        resp: Optional[aiohttp.ClientResponse] = None
        try:
            resp = await session.request(method, url, headers=headers, data=body, ssl=ssl_arg)
            if stream:
                breaker.record_success()
                await _stream(conn, req, resp, tenant, t0)
                return
            data = await _read_body(resp, limit, tenant)
        except (Fail, asyncio.CancelledError):
            if probe:
                breaker.release_probe()
            if resp is not None:
                resp.close()  # do not return a half-read connection to the pool
            raise
        except Exception as exc:
            if resp is not None:
                resp.close()
            failure = classify(exc, host_key)
            if failure.host_fault:
                breaker.record_failure()
            elif probe:
                breaker.release_probe()
            if req.stream_started:
                raise Fail(int(failure.error_class), failure.message) from None
            delay = rt.retry.delay(attempt, failure, method, rt.loop.time(), req.deadline)
            if delay is None:
                tail = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                raise Fail(int(failure.error_class), failure.message + tail) from None
            if rt.debug:
                log.debug("request %d attempt %d failed, retrying in %.3fs", req.rid,
                          attempt, delay)  # fmt: skip
            await asyncio.sleep(delay)
            continue
        breaker.record_success()
        headers_out = response_headers(resp)
        frame = _send_http_response(
            req.rid, resp.status, headers_out, data, is_sse(headers_out), _us(t0)
        )
        if len(frame) - 4 > MAX_PAYLOAD_SIZE:
            raise Fail(
                _PERMANENT,
                f"the upstream's {len(data)}-byte response encodes to a {len(frame) - 4}-byte "
                f"frame, over the {MAX_PAYLOAD_SIZE}-byte frame cap of Vastar clients; ask "
                "for less data per request (paging) or use the streaming extension",
            )
        if conn._paused and len(frame) > _BIG_FRAME:
            await conn.drain()  # a slow reader: do not pile big answers up in memory
        conn.write(frame)
        return


async def _stream(
    conn: IPCConnection,
    req: Request,
    resp: aiohttp.ClientResponse,
    tenant: TenantState,
    t0: float,
) -> None:
    """Extension: StreamStart now, StreamChunk per piece as it arrives, then the
    terminal response with an empty body."""
    rid = req.rid
    headers_out = response_headers(resp)
    sse = is_sse(headers_out)
    limit = tenant.policy.max_response_bytes
    req.stream_started = True
    conn.write(_send_stream_start(rid, resp.status, headers_out, sse))
    total = 0
    content = resp.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise Fail(
                    _PERMANENT,
                    f"the upstream response exceeded tenant {tenant.name!r}'s limit of "
                    f"{limit} bytes ({tenant.key}.max_response_bytes); the rest was dropped",
                )
            if len(chunk) <= _CHUNK_MAX:
                conn.write(_send_stream_chunk(rid, chunk))
            else:
                for i in range(0, len(chunk), _CHUNK_MAX):
                    conn.write(_send_stream_chunk(rid, chunk[i : i + _CHUNK_MAX]))
            if conn._paused:
                await conn.drain()
    finally:
        resp.release()
    conn.write(_send_http_response(rid, resp.status, headers_out, "", sse, _us(t0)))


def _admit(breaker: Breaker, attempt: int) -> bool:
    try:
        return breaker.check()
    except BreakerOpen as exc:
        tail = f" (after {attempt - 1} attempts)" if attempt > 1 else ""
        raise Fail(_TRANSIENT, exc.message + tail) from None


def _us(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1e6)


async def _read_body(resp: aiohttp.ClientResponse, limit: int, tenant: TenantState) -> bytes:
    """The whole body, refusing (PERMANENT) one over the tenant's response size limit."""
    length = resp.content_length
    if length is not None and length > limit:
        raise Fail(_PERMANENT, too_big(length, limit, tenant))
    if length is not None and "Content-Encoding" not in resp.headers:
        return await resp.read()
    parts: List[bytes] = []
    total = 0
    content = resp.content
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise Fail(_PERMANENT, too_big(total, limit, tenant, at_least=True))
        parts.append(chunk)
    resp.release()
    return b"".join(parts)
