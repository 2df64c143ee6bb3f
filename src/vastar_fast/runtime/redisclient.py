"""The runtime's Redis client: one pipelined RESP connection per worker, on the loop.

Used by :mod:`.quotas` only, and imported only when quotas are configured. It speaks
just what the quotas need (EVALSHA / EVAL, AUTH, SELECT) over one connection on an
``asyncio.Protocol``: a call is written to the socket at once, the replies come back in
order and each ``done`` callback runs straight from ``data_received`` -- no task, no
future and no extra loop iteration per call. redis-py's asyncio client cost a task, a
pooled connection and two or three loop iterations per call (``docs/decisions.md``:
about 150-210 us per EVALSHA against 110 us here, on a loopback where Redis itself
needs 80). Replies are parsed by hiredis when it is installed (the ``redis`` extra),
else by a small pure-Python RESP2 parser.

- Every call has a deadline (``shared_state.timeout_ms``) covering connecting and the
  round trip: one timer watches the oldest call in flight; when it is late, every call
  in flight fails (:class:`BackendError`) and the connection is dropped (its replies
  can no longer be matched), so a Redis that is down or slow costs a request at most
  the deadline, never a hang. The next call connects again.
- Scripts go as EVALSHA, and as EVAL (which also caches them) when Redis answers
  NOSCRIPT (a restarted Redis).
- URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS with the
  system's CAs) and ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``. Nothing
  here logs a URL or a password.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["BackendError", "RedisBackend", "RespParser", "Script", "cancel_and_wait", "parse_url"]

log = logging.getLogger("vastar_fast.runtime.quotas")

Done = Callable[[Any, Optional[BaseException]], None]
"""``done(result, error)``: exactly one of them is None (a script may return None)."""


async def cancel_and_wait(task: Optional[asyncio.Task[Any]]) -> None:
    """Cancel ``task`` (if any) and wait for it to end, whatever it ends with."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


class BackendError(Exception):
    """A Redis call that failed or took longer than its deadline."""


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``); the text is Redis's."""


# ---------------------------------------------------------------- RESP
def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (int, float)):
        return repr(value).encode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def encode_command(parts: Sequence[Any]) -> bytes:
    """A RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = _arg(part)
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


_NOT_YET = object()


class RespParser:
    """RESP2 replies from a byte stream, in pure Python (hiredis.Reader's interface:
    ``feed(data)``, ``gets()`` -> a reply or False). Error replies are returned as
    :class:`ReplyError` instances, as hiredis does with ``replyError``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        value, pos = self._parse(self._pos)
        if value is _NOT_YET:
            return False
        self._pos = pos
        return value

    def _parse(self, pos: int) -> Tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return _NOT_YET, pos
        kind = buf[pos : pos + 1]
        line = bytes(buf[pos + 1 : end])
        nxt = end + 2
        if kind == b":":
            return int(line), nxt
        if kind == b"+":
            return line, nxt
        if kind == b"-":
            return ReplyError(line.decode("utf-8", "replace")), nxt
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, nxt
            if len(buf) < nxt + n + 2:
                return _NOT_YET, pos
            return bytes(buf[nxt : nxt + n]), nxt + n + 2
        if kind == b"*":
            n = int(line)
            if n < 0:
                return None, nxt
            items: List[Any] = []
            for _ in range(n):
                item, nxt = self._parse(nxt)
                if item is _NOT_YET:
                    return _NOT_YET, pos
                items.append(item)
            return items, nxt
        raise BackendError(f"Redis sent an unexpected reply type {kind!r}")


def _reader() -> Any:
    try:
        import hiredis
    except ImportError:
        return RespParser()
    return hiredis.Reader(replyError=ReplyError)


# ---------------------------------------------------------------- URLs
def parse_url(url: str) -> dict:
    """``{"host", "port", "path", "tls", "db", "username", "password"}`` of a Redis URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    out: dict = {"host": None, "port": None, "path": None, "tls": scheme == "rediss",
                 "db": 0, "username": None, "password": None}  # fmt: skip
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password is not None:
        out["password"] = unquote(parts.password)
    elif out["username"] is not None and scheme == "unix":
        out["password"], out["username"] = out["username"], None
    if "password" in query:
        out["password"] = query["password"][0]
    if scheme == "unix":
        out["path"] = unquote(parts.path)
        if "db" in query:
            out["db"] = int(query["db"][0])
    elif scheme in ("redis", "rediss"):
        out["host"] = parts.hostname or "127.0.0.1"
        out["port"] = parts.port or 6379
        path = parts.path.strip("/")
        if path:
            out["db"] = int(path)
        elif "db" in query:
            out["db"] = int(query["db"][0])
    else:
        raise ValueError("a Redis URL is redis://, rediss:// or unix://")
    if out["username"] is not None and out["password"] is None:
        out["username"] = None  # redis://name@host: no AUTH (redis-py reads it the same way)
    return out


# ---------------------------------------------------------------- the client
class Script:
    """A Lua script: its source and SHA-1 (EVALSHA, EVAL on NOSCRIPT)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode("utf-8")
        self.sha = hashlib.sha1(self.source).hexdigest().encode("ascii")


class _Call:
    __slots__ = ("args", "deadline", "done", "script")

    def __init__(self, done: Done, deadline: float, script: Optional[Script],
                 args: Optional[List[bytes]]) -> None:  # fmt: skip
        self.done = done
        self.deadline = deadline
        self.script = script
        self.args = args


class _Connection(asyncio.Protocol):
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.transport: Optional[asyncio.Transport] = None
        self.reader = _reader()
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        backend = self.backend
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a reply we cannot parse: nothing after it matches
                backend._broken(self, f"Redis sent a reply that cannot be read: {exc}")
                return
            if reply is False:
                return
            if backend.conn is not self:
                return
            backend._reply(reply)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost = True
        self.backend._broken(self, "the connection to Redis was lost")


class RedisBackend:
    """One worker process's connection to the fleet's Redis."""

    def __init__(self, url: str, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.target = parse_url(url)
        self.timeout_s = timeout_s
        self.loop = loop
        self.conn: Optional[_Connection] = None
        self._connecting: Optional[asyncio.Task] = None
        self._waiting: List[Tuple[bytes, _Call]] = []
        """Calls made while connecting: written once the connection is ready."""
        self._inflight: Deque[_Call] = deque()
        self._watch: Optional[asyncio.TimerHandle] = None
        self._watch_at = 0.0
        self.closed = False
        self.round_trips = 0
        """Calls answered (for tests and the benchmark)."""

    def script(self, source: str) -> Script:
        """A script object for :meth:`call` and :meth:`run`."""
        return Script(source)

    # -- calls
    def call(self, script: Script, keys: Sequence[str], args: Sequence[Any], done: Done) -> None:
        """Run ``script``; ``done(result, None)`` or ``done(None, error)`` on the loop,
        within the deadline (never from inside this call)."""
        if self.closed:
            self.loop.call_soon(done, None, BackendError("the quota service is closed"))
            return
        argv = [_arg(k) for k in keys] + [_arg(a) for a in args]
        tail = [b"%d" % len(keys), *argv]
        call = _Call(done, self.loop.time() + self.timeout_s, script, tail)
        self._send(encode_command([b"EVALSHA", script.sha, *tail]), call)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future:
        """Await ``script``'s result; :class:`BackendError` when it fails or is late."""
        fut: asyncio.Future = self.loop.create_future()

        def done(result: Any, error: Optional[BaseException]) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self.call(script, keys, args, done)
        return fut

    def _send(self, data: bytes, call: _Call) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None and not conn.lost:
            self._inflight.append(call)
            conn.transport.write(data)
            self._arm(call.deadline)
            return
        self._waiting.append((data, call))
        self._arm(call.deadline)
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        t = self.target
        try:
            if t["path"] is not None:
                coro = self.loop.create_unix_connection(lambda: _Connection(self), t["path"])
            else:
                ctx = ssl.create_default_context() if t["tls"] else None
                coro = self.loop.create_connection(lambda: _Connection(self), t["host"],
                                                   t["port"], ssl=ctx)  # fmt: skip
            _, conn = await asyncio.wait_for(coro, self.timeout_s)
        except asyncio.CancelledError:
            self._connecting = None
            self._fail_waiting("the quota service is closed")
            raise
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self._connecting = None
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            self._fail_waiting(f"cannot connect to Redis ({why}: {_safe(exc)})")
            return
        self._connecting = None
        if self.closed:
            if conn.transport is not None:
                conn.transport.close()
            self._fail_waiting("the quota service is closed")
            return
        self.conn = conn
        if conn.transport is not None:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None and t["path"] is None:
                import socket

                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
        deadline = self.loop.time() + self.timeout_s
        setup: List[bytes] = []
        if t["password"] is not None:
            auth = [b"AUTH", t["username"], t["password"]] if t["username"] else \
                [b"AUTH", t["password"]]  # fmt: skip
            setup.append(encode_command(auth))
        if t["db"]:
            setup.append(encode_command([b"SELECT", t["db"]]))
        for data in setup:
            self._inflight.append(_Call(self._setup_done, deadline, None, None))
            conn.transport.write(data)  # type: ignore[union-attr]
        waiting, self._waiting = self._waiting, []
        for data, call in waiting:
            self._inflight.append(call)
            conn.transport.write(data)  # type: ignore[union-attr]
        if self._inflight:
            self._arm(min(c.deadline for c in self._inflight))

    def _setup_done(self, result: Any, error: Optional[BaseException]) -> None:
        if error is not None:
            conn = self.conn
            if conn is not None:
                self._broken(conn, f"Redis refused the connection's setup ({error})")

    def _reply(self, reply: Any) -> None:
        if not self._inflight:
            self._broken(self.conn, "Redis sent a reply nobody asked for")
            return
        call = self._inflight.popleft()
        self.round_trips += 1
        if isinstance(reply, ReplyError):
            text = str(reply)
            if call.script is not None and call.args is not None and text.startswith("NOSCRIPT"):
                script, args = call.script, call.args
                call.script = None  # once
                self._send(encode_command([b"EVAL", script.source, *args]), call)
                return
            call.done(None, BackendError(f"Redis answered an error: {text[:300]}"))
            return
        call.done(reply, None)

    # -- deadlines
    def _arm(self, deadline: float) -> None:
        watch = self._watch
        if watch is not None and self._watch_at <= deadline:
            return
        if watch is not None:
            watch.cancel()
        self._watch_at = deadline
        self._watch = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._watch = None
        now = self.loop.time()
        oldest = None
        if self._inflight:
            oldest = self._inflight[0].deadline
        if self._waiting:
            first = min(c.deadline for _, c in self._waiting)
            oldest = first if oldest is None else min(oldest, first)
        if oldest is None:
            return
        if oldest > now:
            self._arm(oldest)
            return
        late = f"Redis did not answer within {self.timeout_s * 1000:g} ms (shared_state.timeout_ms)"
        if self._inflight and self._inflight[0].deadline <= now and self.conn is not None:
            self._broken(self.conn, late)
        if self._waiting:  # still connecting (that has its own deadline): fail the late
            due = [c for _, c in self._waiting if c.deadline <= now]
            if due:
                self._waiting = [(d, c) for d, c in self._waiting if c.deadline > now]
                error = BackendError(late)
                for call in due:
                    call.done(None, error)
        if self._inflight or self._waiting:
            self._check_soon()

    def _check_soon(self) -> None:
        deadlines = [c.deadline for c in self._inflight] + [c.deadline for _, c in self._waiting]
        if deadlines:
            self._arm(min(deadlines))

    # -- failures
    def _broken(self, conn: Optional[_Connection], why: str) -> None:
        """The connection is unusable: every call in flight on it fails."""
        if conn is None or conn is not self.conn:
            return
        self.conn = None
        if conn.transport is not None and not conn.lost:
            conn.transport.abort()
        calls, self._inflight = self._inflight, deque()
        error = BackendError(why)
        for call in calls:
            call.done(None, error)

    def _fail_waiting(self, why: str) -> None:
        calls, self._waiting = self._waiting, []
        error = BackendError(why)
        for _, call in calls:
            call.done(None, error)

    def reset(self) -> None:
        """Drop the connection (Redis went away); the next call connects again."""
        if self.conn is not None:
            self._broken(self.conn, "the connection to Redis was dropped")

    async def close(self) -> None:
        """Wait (within the deadline) for calls in flight, then close the connection."""
        if self._inflight or self._waiting:
            end = self.loop.time() + self.timeout_s * 2
            while (self._inflight or self._waiting) and self.loop.time() < end:
                await asyncio.sleep(0.005)
        self.closed = True
        await cancel_and_wait(self._connecting)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        conn = self.conn
        if conn is not None:
            self._broken(conn, "the quota service is closed")
        self._fail_waiting("the quota service is closed")


def _safe(exc: BaseException) -> str:
    """An exception's text without anything that looks like a URL (it could carry a
    password)."""
    text = str(exc)
    if "://" in text or "@" in text:
        return "(details withheld: they name the Redis URL)"
    return text[:300]
