"""Real local upstream servers for the runtime tests, each in its own thread and loop.

``Upstream`` is an aiohttp web app on 127.0.0.1 (free port) with the routes the tests
need (echo, statuses, slow, SSE with a gap, big bodies, hit counters); ``FlakyUpstream``
is a raw asyncio server that drops the first N connections of a key without answering,
to exercise retries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional

from aiohttp import web

GOLDEN_SSE_BODY = (
    "".join(
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-x",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            }
        )
        + "\n\n"
        for i in range(3)
    )
    + "data: [DONE]\n\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Threaded:
    """Runs ``self._setup()`` on a private loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Upstream(_Threaded):
    def __init__(self, port: int = 0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        super().__init__()
        self.ssl_context = ssl_context
        self.hits: Counter[str] = Counter()
        self.events: List[tuple] = []
        """(name, time.time()) records written by handlers (SSE writes, cancellations)."""
        self.cancelled: Counter[str] = Counter()
        self.call(self._start(port))

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _start(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_route("*", "/echo", self.echo)
        r.add_get("/small", self.small)
        r.add_route("*", "/status/{code}", self.status)
        r.add_route("*", "/slow", self.slow)
        r.add_get("/sse", self.sse)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_get("/big", self.big)
        r.add_get("/bigchunked", self.bigchunked)
        r.add_get("/ctrl", self.ctrl)
        r.add_route("*", "/hits/{key}", self.count)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        try:
            self.call(self._runner.cleanup())
        finally:
            self._stop_loop()

    # ---------------------------------------------------------------- handlers
    async def echo(self, request: web.Request) -> web.Response:
        body = await request.text()
        resp = web.json_response(
            {"method": request.method, "headers": dict(request.headers), "body": body}
        )
        resp.headers.add("X-Multi", "a")
        resp.headers.add("X-Multi", "b")
        resp.headers["X-Mixed-Case"] = "Yes"
        return resp

    async def small(self, request: web.Request) -> web.Response:
        return web.Response(text="hello, world!")

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def slow(self, request: web.Request) -> web.Response:
        delay = float(request.query.get("delay", "1"))
        key = request.query.get("key", "slow")
        self.hits[key] += 1
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled[key] += 1
            self.events.append((f"{key}:cancelled", time.time()))
            raise
        return web.Response(text=f"slow {delay}")

    async def sse(self, request: web.Request) -> web.StreamResponse:
        gap = float(request.query.get("gap", "0.2"))
        key = request.query.get("key", "sse")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        self.events.append((f"{key}:first", time.perf_counter()))
        await asyncio.sleep(gap)
        await resp.write(b"data: two\n\n")
        self.events.append((f"{key}:second", time.perf_counter()))
        await resp.write_eof()
        return resp

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for part in GOLDEN_SSE_BODY.split("\n\n")[:-1]:
            await resp.write((part + "\n\n").encode())
        await resp.write_eof()
        return resp

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["n"]))

    async def bigchunked(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query["n"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        while n > 0:
            step = min(n, 4096)
            await resp.write(b"y" * step)
            n -= step
        await resp.write_eof()
        return resp

    async def ctrl(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x01" * int(request.query["n"]), content_type="text/plain")

    async def count(self, request: web.Request) -> web.Response:
        self.hits[request.match_info["key"]] += 1
        return web.Response(text=str(self.hits[request.match_info["key"]]))


class FlakyUpstream(_Threaded):
    """``/<key>/<fails>``: the first ``fails`` requests of a key are dropped unanswered
    (connection closed after the request was read); later ones get 200 "ok"."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()
        self.times: Dict[str, List[float]] = {}
        """Arrival times (``time.monotonic``) of each key's requests."""
        self.call(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            path = line.split(" ")[1]
            _, key, fails = path.split("/")[:3]
            length = 0
            for h in head.split(b"\r\n")[1:]:
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            if length:
                await reader.readexactly(length)
            self.hits[key] += 1
            self.times.setdefault(key, []).append(time.monotonic())
            if self.hits[key] <= int(fails):
                writer.transport.abort()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            writer.transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        try:
            self.call(stop())
        finally:
            self._stop_loop()


class ScriptedUpstream(_Threaded):
    """A raw HTTP/1.1 server whose answers are scripted byte for byte, per path.

    ``script[path](request)`` returns a list of steps: bytes to write, a float to sleep,
    ``"close"`` to close the connection, ``"abort"`` to reset it, or ``"hang"`` to keep
    it open without answering. After the steps the connection waits for the next
    request (keep-alive). Every request is recorded (``requests``: connection number,
    head bytes, body bytes) and every connection's peer (``peers``); ``open_now`` and
    ``max_open`` count connections open at once; ``closed`` lists connections the client
    closed (by number).
    """

    def __init__(self, script: Dict[str, Callable[[Dict[str, Any]], List[Any]]]) -> None:
        super().__init__()
        self.script = script
        self.requests: List[Dict[str, Any]] = []
        self.peers: List[Any] = []
        self.open_now = 0
        self.max_open = 0
        self.closed: List[int] = []
        self.call(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.peers)
        self.peers.append(writer.get_extra_info("peername"))
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed.append(number)
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                request = {"conn": number, "method": method, "path": path, "head": head,
                           "headers": headers, "body": body, "time": time.monotonic()}  # fmt: skip
                self.requests.append(request)
                steps = self.script[path.split("?", 1)[0]](request)
                for step in steps:
                    if isinstance(step, bytes):
                        writer.write(step)
                        await writer.drain()
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    elif step == "close":
                        writer.close()
                        return
                    elif step == "abort":
                        writer.transport.abort()
                        return
                    elif step == "hang":
                        if not await reader.read(1):
                            self.closed.append(number)
                        return
        except ConnectionError:
            self.closed.append(number)
        finally:
            self.open_now -= 1

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()

        try:
            self.call(stop())
        finally:
            self._stop_loop()


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    """A complete keep-alive answer with a Content-Length."""
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (bounded in time and count)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


__all__ = [
    "GOLDEN_SSE_BODY",
    "FlakyUpstream",
    "ScriptedUpstream",
    "Upstream",
    "free_port",
    "ok",
    "wait_until",
]
