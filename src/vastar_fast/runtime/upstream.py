"""The upstream HTTP/1.1 client: keep-alive pools per host on an asyncio protocol with
the llhttp parser (``httptools``), callbacks all the way (no task per request).

Why not aiohttp's ``ClientSession`` (what the runtime used before): measured inside a
minimal daemon on the same machine, same client, sequential 13-byte GETs to a loopback
nginx (docs/decisions.md has the table), aiohttp costs ~207 us of daemon CPU per request,
pyreqwest ~170 us, curl_cffi ~393 us, a protocol on httptools with a task per request
~110 us and the same with callbacks only ~83 us (the released runtime: ~93 us). The
parser is llhttp, Node.js's maintained HTTP/1.1 parser, strict by default.

What it does: one pool per (scheme, host, port, TLS settings) with limits in total and
per host (the excess waits for a connection, oldest first); idle connections closed
after ``keepalive_timeout_s``; TLS verified by default with the system store plus a
tenant's extra CAs, or off when a tenant says so explicitly; requests written in one
``write``; responses framed by Content-Length, chunked encoding or the end of the
connection; HEAD, 204 and 304 without a body; 1xx answers skipped; gzip/deflate
decoded (as aiohttp did) with the size limit applied to the decoded bytes; the body
handed over whole or chunk by chunk as it arrives; reading paused and resumed for a
slow client; a connection whose exchange is abandoned is closed, never reused.

Not handled, on purpose: HTTP/2 (ALPN offers only http/1.1), proxies (the runtime never
read proxy settings from its environment), content encodings other than gzip/deflate
(passed through with their headers intact).

This module is one of the runtime's twinned request-path modules: run as Python it is
the pure twin; ``setup.py`` compiles the same source with Cython (pure Python mode:
the ``cython`` decorators and types) into ``vastar_fast.runtime._compiled.upstream``.
Sibling modules are imported relatively so each twin uses its own siblings.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import zlib
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

import httptools

from vastar_fast._log import logger
from vastar_fast.runtime.config import HTTPSettings, TenantPolicy
from vastar_fast.types import ErrorClass

from .http1 import parse_simple
from .shaping import forbidden_address

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = [
    "PoolKey",
    "ResponseSink",
    "UpstreamConnection",
    "UpstreamFailure",
    "UpstreamPool",
    "Waiter",
    "classify_connect_error",
]

log = logger("vastar_fast.runtime")  # the real one, with the package's NullHandler

PoolKey = Tuple[str, str, int, Any]
"""(scheme, host, port, TLS settings key): connections are shared only within a key."""

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_DECODED = frozenset((b"gzip", b"x-gzip", b"deflate"))
_TRANSIENT = ErrorClass.TRANSIENT
_PERMANENT = ErrorClass.PERMANENT


class UpstreamFailure(Exception):
    """A failure to get (all of) an HTTP answer, already classified.

    ``connect`` is True when the request certainly never reached the upstream (so a
    retry is safe for any method); ``host_fault`` says whether it counts against the
    host's circuit breaker (a local shortage of file descriptors does not).
    """

    def __init__(
        self, error_class: ErrorClass, message: str, connect: bool, host_fault: bool
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.connect = connect
        self.host_fault = host_fault


class _Forbidden(Exception):
    """Every address a name resolves to is link-local or a metadata address."""


def classify_connect_error(exc: BaseException, where: str, timeout_s: float) -> UpstreamFailure:
    """What a failed connect (DNS, TCP, TLS handshake) means for the caller."""
    if isinstance(exc, _Forbidden):
        return UpstreamFailure(
            _PERMANENT,
            f"{where} resolves only to link-local or metadata addresses, which this tenant may "
            "not reach; set allow_link_local: true in its runtime policy if it must",
            True,
            False,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UpstreamFailure(
            _PERMANENT,
            f"TLS certificate verification failed for {where}: {exc.verify_message or exc}; "
            "fix the upstream certificate or give the tenant a ca_file in the runtime config",
            False,
            False,
        )
    if isinstance(exc, ssl.SSLError):
        return UpstreamFailure(
            _PERMANENT,
            f"TLS handshake with {where} failed: {exc.reason or exc}; check that the URL's "
            "port speaks TLS and that the upstream accepts TLS 1.2 or later",
            False,
            False,
        )
    if isinstance(exc, socket.gaierror):
        return UpstreamFailure(
            _TRANSIENT,
            f"cannot resolve the host of {where} (DNS: {exc.strerror or exc}); check the URL's "
            "host name, or retry if DNS is flaky",
            True,
            True,
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamFailure(
            _TRANSIENT,
            f"connecting to {where} timed out after {timeout_s:g}s (http.connect_timeout_s); "
            "retry later",
            True,
            True,
        )
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return UpstreamFailure(
            _TRANSIENT,
            f"the runtime ran out of a local resource connecting to {where} "
            f"({exc.strerror or exc}); this is not the upstream's fault: lower the load or "
            "raise the runtime's limits (open files), then retry",
            True,
            False,
        )
    if isinstance(exc, OSError):
        return UpstreamFailure(
            _TRANSIENT,
            f"cannot connect to {where}: {exc.strerror or exc}; is the upstream running and "
            "reachable? Retry later",
            True,
            True,
        )
    return UpstreamFailure(
        _TRANSIENT,
        f"connecting to {where} failed unexpectedly ({type(exc).__name__}: {exc}); retry, and "
        "report it if it persists",
        True,
        False,
    )


class ResponseSink:
    """What an exchange offers the connection carrying it (the pipeline implements it).

    ``on_head`` once with the status and the raw header pairs, then either ``on_body``
    per decoded piece (streaming) or nothing until ``on_done(body)`` (buffered; in
    streaming mode ``on_done(b"")``), or ``on_fail`` at any point; exactly one of
    on_done / on_fail ends it.
    """

    def on_head(self, status: int, headers: Any, decoded: bool) -> None:
        """``headers``: raw (name, value) byte pairs in order, or, when the request was
        sent with ``raw=False``, possibly already the released shape (a dict of str).
        ``decoded``: the body is being decompressed (gzip/deflate) on its way."""
        raise NotImplementedError

    def on_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_done(self, body: bytes) -> None:
        raise NotImplementedError

    def on_fail(self, failure: UpstreamFailure) -> None:
        raise NotImplementedError

    def too_big(self, size: int, at_least: bool) -> str:
        """The message for a response over the size limit."""
        raise NotImplementedError


class _HeadDone(Exception):
    """Raised in a parser callback to end the answer to HEAD after its headers."""


class _Decoder:
    """gzip / deflate decoding with the output bounded by what is still allowed."""

    def __init__(self, encoding: bytes) -> None:
        self._raw_deflate = encoding == b"deflate"
        # 47 = 32 + 15: zlib or gzip header, detected. Some servers send raw deflate
        # for "deflate"; that is tried when the zlib header is missing.
        self._obj = zlib.decompressobj(47 if not self._raw_deflate else 15)
        self._first = True

    def decode(self, data: bytes, room: int) -> bytes:
        try:
            out = self._obj.decompress(data, room)
        except zlib.error:
            if not (self._first and self._raw_deflate):
                raise
            self._obj = zlib.decompressobj(-15)
            out = self._obj.decompress(data, room)
        self._first = False
        return out

    def flush(self) -> bytes:
        return self._obj.flush()


@cython.cclass
class UpstreamConnection:
    """One keep-alive HTTP/1.1 connection (an asyncio protocol); one exchange at a time."""

    pool = cython.declare(object, visibility="public")
    key = cython.declare(object, visibility="public")
    where = cython.declare(str, visibility="public")
    transport = cython.declare(object, visibility="public")
    sink = cython.declare(object, visibility="public")
    closed = cython.declare(cython.bint, visibility="public")
    counted = cython.declare(cython.bint, visibility="public")
    """Holds one of the pool's connection slots (released once, when it closes)."""
    idle_since = cython.declare(cython.double, visibility="public")
    requests = cython.declare(cython.longlong, visibility="public")
    link_local = cython.declare(cython.bint, visibility="public")
    """Connected to a link-local or metadata address (only tenants allowing those use it)."""
    parser: Any
    _head: cython.bint
    _stream: cython.bint
    _limit: cython.longlong
    _total: cython.longlong
    _headers: list
    _parts: list
    _got_bytes: cython.bint
    _headers_done: cython.bint
    _informational: cython.bint
    _until_eof: cython.bint
    _done: cython.bint
    _keep_alive: cython.bint
    _raw: cython.bint
    _decoder: Any

    def __init__(self, pool: UpstreamPool, key: PoolKey, where: str) -> None:
        self.pool = pool
        self.key = key
        self.where = where
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink = None
        self.closed = False
        self.counted = True
        self.idle_since = 0.0
        self.requests = 0
        self.link_local = False
        self._head = False
        self._stream = False
        self._limit = 0
        self._total = 0
        self._headers = []
        self._parts = []
        self._got_bytes = False
        self._headers_done = False
        self._informational = False
        self._until_eof = False
        self._done = False
        self._keep_alive = False
        self._raw = True
        self._decoder = None

    # ---------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.pool.lost(self)
        sink = self.sink
        if sink is None:
            return
        if self._until_eof and self._headers_done and exc is None:
            self._complete()  # the body was delimited by the end of the connection
            return
        self.sink = None
        detail = f" ({exc})" if exc else ""
        if not self._got_bytes:
            # Nothing of the answer arrived. On a reused connection that is most likely
            # the keep-alive race (the upstream closed it as we sent): not a host fault.
            sink.on_fail(
                UpstreamFailure(
                    _TRANSIENT,
                    f"{self.where} closed the connection before answering{detail}; retry",
                    False,
                    self.requests <= 1,
                )
            )
        else:
            part = "body" if self._headers_done else "headers"
            sink.on_fail(
                UpstreamFailure(
                    _TRANSIENT, f"{self.where} broke off the response {part}{detail}; retry",
                    False, True,
                )
            )  # fmt: skip

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what the EOF meant

    def pause_writing(self) -> None:
        pass  # a request is written whole; the transport buffers the rest

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            # Bytes nobody asked for (an idle keep-alive connection): do not reuse it.
            self.abort()
            return
        first: cython.bint = not self._got_bytes
        self._got_bytes = True
        if first and not self._head:
            # The first bytes of the answer: when they are all of it, plainly framed
            # (http1.py), one pass reads them and llhttp is not asked.
            simple = parse_simple(data, not self._raw)
            if simple is not None:
                self._simple(simple)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadDone):
                # The answer to HEAD ends with its headers; llhttp would wait for the body
                # its Content-Length announces, so it is stopped and replaced.
                self.parser = httptools.HttpResponseParser(self)
                self._complete()
            elif isinstance(cause, UpstreamFailure):
                self._fail(cause)
            else:
                self._fail_protocol(f"sent an answer the runtime could not process ({exc})")
        except httptools.HttpParserUpgrade:
            self._fail_protocol("asked to switch protocols (upgrade), which is not supported")
        except httptools.HttpParserError as exc:
            self._fail_protocol(f"sent an invalid HTTP response ({exc})")
        else:
            if self._done:
                self._complete()

    # ---------------------------------------------------------------- exchange
    def send(
        self, data: bytes, sink: Any, head: bool, limit: int, stream: bool, raw: bool = True
    ) -> None:
        """Write one request (head and body together) and wait for its answer. ``raw``:
        the sink needs the raw header pairs; else a fast-path answer may come already in
        the released shape (a dict)."""
        self.sink = sink
        self._raw = raw
        self.requests += 1
        self._head = head
        self._stream = stream
        self._limit = limit
        self._total = 0
        self._parts = []
        self._got_bytes = False
        self._headers_done = False
        self._informational = False
        self._until_eof = False
        self._decoder = None
        self._done = False
        self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection at once (exchange abandoned): never reused."""
        self.sink = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # ---------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status: int = parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True  # 100 Continue, 103 Early Hints: wait for the answer
            return
        self._informational = False
        length = -1
        chunked = False
        encoding = b""
        for name, value in self._headers:
            n = len(name)
            if n == 14:
                if name.lower() == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        pass
            elif n == 17:
                if name.lower() == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            elif n == 16 and name.lower() == b"content-encoding":
                encoding = value.strip().lower()
        # Asked here: once the message is complete llhttp has reset its flags.
        self._on_head(status, parser.should_keep_alive(), self._headers, length, chunked,
                      encoding)  # fmt: skip
        if self._head and self.sink is not None:
            self._done = True
            raise _HeadDone

    @cython.cfunc
    def _simple(self, answer: tuple) -> None:
        """A whole answer read by http1.read_simple: the callbacks llhttp would make."""
        status: int
        length: cython.longlong
        status, headers, body, keep, length, encoding = answer
        try:
            self._on_head(status, keep, headers, length, False, encoding)
            if body:
                self.on_body(body)
        except UpstreamFailure as failure:
            self._fail(failure)
            return
        except Exception as exc:  # as llhttp reports a callback's failure
            self._fail_protocol(f"sent an answer the runtime could not process ({exc})")
            return
        self._done = True
        self._complete()

    @cython.cfunc
    def _on_head(
        self, status: int, keep_alive: cython.bint, headers: Any, length: cython.longlong,
        chunked: cython.bint, encoding: bytes,
    ) -> None:  # fmt: skip
        """Frame the answer's body, tell the sink. ``headers``: raw (name, value) pairs,
        or from the fast path the released shape already (when the sink asked for it)."""
        self._headers_done = True
        self._keep_alive = keep_alive
        sink = self.sink
        if sink is None:
            return
        if not (self._head or status == 204 or status == 304):
            if length > self._limit:
                raise UpstreamFailure(_PERMANENT, sink.too_big(length, False), False, False)
            if length < 0 and not chunked:
                self._until_eof = True
            if encoding in _DECODED:
                self._decoder = _Decoder(encoding)
        sink.on_head(status, headers, self._decoder is not None)

    def on_body(self, data: bytes) -> None:
        if self._informational or self._done:
            return
        sink = self.sink
        if sink is None:
            return
        decoder = self._decoder
        if decoder is not None:
            try:
                data = decoder.decode(data, self._limit - self._total + 1)
            except zlib.error as exc:
                raise UpstreamFailure(
                    _TRANSIENT,
                    f"{self.where} sent a body that does not decode as its Content-Encoding "
                    f"({exc}); retry, or ask without Accept-Encoding",
                    False,
                    True,
                ) from None
        self._total += len(data)
        if self._total > self._limit:
            raise UpstreamFailure(_PERMANENT, sink.too_big(self._total, True), False, False)
        if not data:
            return
        if self._stream:
            sink.on_body(data)
        else:
            self._parts.append(data)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._done = True

    # ---------------------------------------------------------------- endings
    @cython.cfunc
    def _complete(self) -> None:
        sink = self.sink
        if sink is None:
            return
        decoder = self._decoder
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                self._total += len(tail)
                if self._total > self._limit:
                    self._fail(UpstreamFailure(_PERMANENT, sink.too_big(self._total, True),
                                               False, False))  # fmt: skip
                    return
                if self._stream:
                    sink.on_body(tail)
                else:
                    self._parts.append(tail)
        self.sink = None
        parts = self._parts
        self._parts = []
        if self._stream or not parts:
            body = b""
        elif len(parts) == 1:
            body = parts[0]
        else:
            body = b"".join(parts)
        keep = not self.closed and self._keep_alive and not self._until_eof
        if not keep:
            self.abort()
        sink.on_done(body)  # the answer first; the connection goes back to the pool after
        if keep and not self.closed:
            self.pool.release(self)

    @cython.cfunc
    def _fail(self, failure: UpstreamFailure) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.on_fail(failure)

    @cython.cfunc
    def _fail_protocol(self, what: str) -> None:
        self._fail(UpstreamFailure(_TRANSIENT, f"{self.where} {what}; retry", False, True))


@cython.cclass
class Waiter:
    """An exchange waiting for a connection; ``cancelled`` when it gave up."""

    key = cython.declare(object, visibility="public")
    target = cython.declare(tuple, visibility="public")
    callback = cython.declare(object, visibility="public")
    cancelled = cython.declare(cython.bint, visibility="public")

    def __init__(self, key: PoolKey, target: tuple, callback: Any) -> None:
        self.key = key
        self.target = target
        self.callback = callback
        self.cancelled = False


@cython.cclass
class UpstreamPool:
    """Keep-alive connections per :data:`PoolKey`, bounded in total and per key.

    Runs on the event loop thread only. :meth:`acquire` hands out an idle connection at
    once, or returns a :class:`Waiter` whose callback runs later (connected, or
    failed); a caller that gives up sets ``waiter.cancelled``.
    """

    loop = cython.declare(object, visibility="public")
    settings = cython.declare(object, visibility="public")
    idle = cython.declare(dict, visibility="public")
    open_by_key = cython.declare(dict, visibility="public")
    open = cython.declare(cython.longlong, visibility="public")
    _keepalive: cython.double
    _pool_limit: cython.longlong
    _per_key_limit: cython.longlong
    _waiters: Any
    _ssl: dict
    _sweeper: Any
    _closing: cython.bint
    _connecting: set

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: HTTPSettings) -> None:
        self.loop = loop
        self.settings = settings
        self.idle = {}
        self.open_by_key = {}
        self.open = 0
        self._keepalive = settings.keepalive_timeout_s
        self._pool_limit = settings.pool_limit
        self._per_key_limit = settings.per_host_limit
        self._waiters: Deque[Waiter] = deque()
        self._ssl = {}
        self._sweeper = None
        self._closing = False
        self._connecting = set()

    # ---------------------------------------------------------------- TLS
    def ssl_for(self, policy: TenantPolicy) -> Tuple[Any, Optional[ssl.SSLContext]]:
        """(key part, context) for a tenant: verified (system store + its extra CAs), or
        unverified when its policy says ``tls_verify: false``."""
        key = (policy.tls_verify, policy.ca_file)
        ctx = self._ssl.get(key)
        if ctx is not None:
            return key, ctx
        if not policy.tls_verify:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context()
            if policy.ca_file:
                ctx.load_verify_locations(cafile=policy.ca_file)
        ctx.set_alpn_protocols(["http/1.1"])
        self._ssl[key] = ctx
        return key, ctx

    # ---------------------------------------------------------------- acquire / release
    def acquire(
        self,
        key: PoolKey,
        host: str,
        port: int,
        ssl_ctx: Optional[ssl.SSLContext],
        where: str,
        callback: Callable[[Optional[UpstreamConnection], Optional[UpstreamFailure]], None],
        allow_link_local: bool = False,
    ) -> object:
        """An idle connection at once, or a :class:`Waiter` with ``callback`` to come.

        Without ``allow_link_local``, connections to link-local or metadata addresses
        are neither reused nor made (a name that resolves only to such addresses fails).
        """
        conn: UpstreamConnection
        i: cython.Py_ssize_t
        idle = self.idle.get(key)
        if idle:
            now: float = self.loop.time()
            i = len(idle) - 1
            while i >= 0:
                conn = idle[i]
                if conn.closed or now - conn.idle_since >= self._keepalive:
                    del idle[i]
                    conn.abort()
                elif allow_link_local or not conn.link_local:
                    del idle[i]
                    return conn
                i -= 1
        waiter = Waiter(key, (host, port, ssl_ctx, where, allow_link_local), callback)
        if self._can_open(key):
            self._connect(waiter)
        else:
            self._waiters.append(waiter)
        return waiter

    @cython.cfunc
    def _can_open(self, key: Any) -> cython.bint:
        victim: UpstreamConnection
        conn: UpstreamConnection
        if self._per_key_limit and self.open_by_key.get(key, 0) >= self._per_key_limit:
            return False
        if self._pool_limit and self.open >= self._pool_limit:
            # make room by closing an idle connection to another host, oldest first
            found = None
            for conns in self.idle.values():
                for conn in conns:
                    if found is None or conn.idle_since < found.idle_since:
                        found = conn
            if found is None:
                return False
            victim = found
            self.idle[victim.key].remove(victim)
            victim.abort()
            self._lost(victim, False)
        return True

    @cython.cfunc
    def _connect(self, waiter: Waiter) -> None:
        key = waiter.key
        self.open += 1
        self.open_by_key[key] = self.open_by_key.get(key, 0) + 1
        task = self.loop.create_task(self._open(waiter))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_checked(
        self, host: str, port: int, ctx: Any, allow_link_local: bool, factory: Any
    ) -> None:
        """Resolve, drop forbidden addresses, connect to the first that answers."""
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = []
        for _family, _, _, _, sockaddr in infos:
            ip = sockaddr[0]
            if allow_link_local or not forbidden_address(ip):
                addresses.append(ip)
        if not addresses:
            raise _Forbidden(host)
        last: Optional[BaseException] = None
        for ip in addresses:
            try:
                await self.loop.create_connection(
                    factory, ip, port, ssl=ctx, server_hostname=host if ctx is not None else None
                )
                return
            except ssl.SSLError:
                raise  # the server answered: another address of it will not do better
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    async def _open(self, waiter: Waiter) -> None:
        host, port, ctx, where, allow_ll = waiter.target
        key = waiter.key
        timeout = self.settings.connect_timeout_s
        made: List[UpstreamConnection] = []

        def factory() -> UpstreamConnection:
            conn = UpstreamConnection(self, key, where)  # holds the slot reserved for it
            for earlier in made:  # an attempt on another address that did not work out
                earlier.counted = False
            made.append(conn)
            return conn

        try:
            await asyncio.wait_for(
                self._connect_checked(host, port, ctx, allow_ll, factory), timeout
            )
        except BaseException as exc:
            if made:
                made[-1].abort()
                self._lost(made[-1], False)  # the one holding the slot releases it
            else:
                self._release_slot(key)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not waiter.cancelled:
                waiter.callback(None, classify_connect_error(exc, where, timeout))
            self._wake()
            return
        conn = made[-1]
        transport = conn.transport
        peer: Any = transport.get_extra_info("peername") if transport is not None else None
        conn.link_local = bool(peer) and forbidden_address(str(peer[0]))
        if conn.closed:
            if not waiter.cancelled:
                waiter.callback(None, UpstreamFailure(
                    _TRANSIENT, f"{where} closed the connection as soon as it was made; "
                    "retry later", True, True,
                ))  # fmt: skip
        elif waiter.cancelled or self._closing:
            self.release(conn)
        else:
            waiter.callback(conn, None)

    @cython.cfunc
    def _release_slot(self, key: Any) -> None:
        self.open -= 1
        left = self.open_by_key.get(key, 1) - 1
        if left > 0:
            self.open_by_key[key] = left
        else:
            self.open_by_key.pop(key, None)

    def release(self, conn: UpstreamConnection) -> None:
        """A connection whose exchange completed cleanly: reuse it (a waiter first)."""
        waiter: Waiter
        if conn.closed or self._closing:
            conn.abort()
            return
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if waiter.key == conn.key and not waiter.cancelled:
                    waiters.remove(waiter)
                    waiter.callback(conn, None)
                    return
        conn.idle_since = self.loop.time()
        idle = self.idle.get(conn.key)
        if idle is None:
            self.idle[conn.key] = [conn]
        else:
            idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._keepalive / 2 + 0.1, self._sweep)

    def lost(self, conn: UpstreamConnection) -> None:
        """A connection closed (its ``connection_lost``)."""
        self._lost(conn, True)

    @cython.cfunc
    def _lost(self, conn: UpstreamConnection, wake: cython.bint) -> None:
        if conn.counted:
            conn.counted = False
            self._release_slot(conn.key)
            idle = self.idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)
            if wake:
                self._wake()

    @cython.cfunc
    def _wake(self) -> None:
        """A slot freed up: connect for the oldest waiter that may open one now."""
        waiter: Waiter
        waiters = self._waiters
        for waiter in list(waiters):
            if waiter.cancelled:
                waiters.remove(waiter)
                continue
            if self._can_open(waiter.key):
                waiters.remove(waiter)
                self._connect(waiter)
                return

    def _sweep(self) -> None:
        conn: UpstreamConnection
        self._sweeper = None
        limit = self._keepalive
        now: float = self.loop.time()
        left = False
        for key, conns in list(self.idle.items()):
            for conn in list(conns):
                if now - conn.idle_since >= limit:
                    conns.remove(conn)
                    conn.abort()
            if conns:
                left = True
            else:
                del self.idle[key]
        if left:
            self._sweeper = self.loop.call_later(limit / 2 + 0.1, self._sweep)

    async def close(self) -> None:
        conn: UpstreamConnection
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conns in self.idle.values():
            for conn in conns:
                conn.abort()
        self.idle.clear()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.sleep(0)
