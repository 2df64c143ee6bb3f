"""Upstream HTTP client candidates, each inside one minimal daemon (the runtime-speed
decision in docs/decisions.md): ``python -m vastar_fast.benchmarks.upstream_candidates
SOCKET KIND`` with KIND one of aiohttp, pyreqwest, curl, httptools (a task per request)
or httptools-cb (callbacks only, no task). Measure them beside ours and the released
runtime, for example::

    python -m vastar_fast.benchmarks.stack_bench --sections runtime \
        --released-runtime ../shared/peers/vastar-connector-runtime \
        --candidate "aiohttp=python -m vastar_fast.benchmarks.upstream_candidates {socket} aiohttp" \
        --candidate "cb=python -m vastar_fast.benchmarks.upstream_candidates {socket} httptools-cb"

A diagnostic, not a runtime: plain GETs, no policy, no error handling. pyreqwest and
curl_cffi are not dependencies of vastar-fast: install them to measure them.
"""
# ruff: noqa
# mypy: ignore-errors

import asyncio, json, sys, time, socket
import uvloop
from urllib.parse import urlsplit
import httptools
from vastar_fast.protocol import codec

kind = sys.argv[2] if len(sys.argv) > 2 else "httptools-cb"


async def make_fetch():
    if kind == "aiohttp":
        import aiohttp

        s = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            trust_env=False,
        )

        async def fetch(method, url, headers):
            async with s.request(method, url, headers=headers) as r:
                body = await r.read()
                return r.status, {k.lower(): v for k, v in r.headers.items()}, body

        return fetch
    if kind == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        c = ClientBuilder().build()

        async def fetch(method, url, headers):
            r = await c.request(method, url).build().send()
            body = await r.bytes()
            return r.status, dict(r.headers.items()), bytes(body)

        return fetch
    if kind == "curl":
        from curl_cffi.requests import AsyncSession

        s = AsyncSession()

        async def fetch(method, url, headers):
            r = await s.request(method, url)
            return r.status_code, dict(r.headers), r.content

        return fetch
    if kind == "httptools":
        import httptools
        from urllib.parse import urlsplit

        pools = {}

        class Up(asyncio.Protocol):
            def __init__(self, key):
                self.key = key
                self.parser = httptools.HttpResponseParser(self)
                self.fut = None

            def connection_made(self, t):
                self.t = t
                t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def data_received(self, data):
                self.parser.feed_data(data)

            def on_message_begin(self):
                self.headers = {}
                self.body = []

            def on_header(self, n, v):
                self.headers[n.decode("latin-1").lower()] = v.decode("latin-1")

            def on_body(self, b):
                self.body.append(b)

            def on_message_complete(self):
                f, self.fut = self.fut, None
                pools.setdefault(self.key, []).append(self)
                f.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

        async def fetch(method, url, headers):
            u = urlsplit(url)
            key = (u.hostname, u.port or 80)
            pool = pools.get(key)
            if pool:
                up = pool.pop()
            else:
                _, up = await loop.create_connection(lambda: Up(key), key[0], key[1])
            up.fut = loop.create_future()
            up.t.write(f"{method} {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
            return await up.fut

        return fetch


class Ipc(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.fb = codec.FrameBuffer()

    def data_received(self, data):
        self.fb.feed(data)
        for mtype, body in self.fb.frames():
            req = codec.decode_execute_request(body)
            loop.create_task(self.handle(req))

    async def handle(self, req):
        t0 = time.perf_counter()
        http = json.loads(req.payload)
        status, headers, body = await fetch(http["method"], http["url"], http.get("headers") or {})
        payload = codec.encode_http_response_payload(status, headers, body.decode(), False)
        self.t.write(
            codec.encode_execute_response(
                req.request_id, 0, None, payload, int((time.perf_counter() - t0) * 1e6)
            )
        )


async def main(path):
    global loop, fetch
    loop = asyncio.get_running_loop()
    fetch = await make_fetch()
    await loop.create_unix_server(Ipc, path)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- httptools-cb
cb_pools = {}


class CbUp(asyncio.Protocol):
    def __init__(self, key):
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.cb = None

    def connection_made(self, t):
        self.t = t
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.headers = {}
        self.body = []

    def on_header(self, name, value):
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, b):
        self.body.append(b)

    def on_message_complete(self):
        cb, self.cb = self.cb, None
        cb_pools.setdefault(self.key, []).append(self)
        cb(self.parser.get_status_code(), self.headers, b"".join(self.body))


class CbIpc(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.fb = codec.FrameBuffer()

    def data_received(self, data):
        self.fb.feed(data)
        for mtype, body in self.fb.frames():
            req = codec.decode_execute_request(body)
            http = json.loads(req.payload)
            u = urlsplit(http["url"])
            key = (u.hostname, u.port or 80)
            rid = req.request_id
            t0 = time.perf_counter()

            def done(status, headers, body, rid=rid, t0=t0):
                payload = codec.encode_http_response_payload(status, headers, body.decode(), False)
                self.t.write(
                    codec.encode_execute_response(
                        rid, 0, None, payload, int((time.perf_counter() - t0) * 1e6)
                    )
                )

            pool = cb_pools.get(key)
            if pool:
                up = pool.pop()
                up.cb = done
                up.t.write(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
            else:

                async def conn():
                    _, up = await loop.create_connection(lambda: CbUp(key), key[0], key[1])
                    up.cb = done
                    up.t.write(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())

                loop.create_task(conn())


async def main_cb(path):
    global loop
    loop = asyncio.get_running_loop()
    await loop.create_unix_server(CbIpc, path)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main_cb(sys.argv[1]) if kind == "httptools-cb" else main(sys.argv[1]))
