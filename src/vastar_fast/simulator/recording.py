"""Record and replay: the simulator as a VCR between a client and a real endpoint.

Record mode (``--record DIR --upstream URL``) forwards every request to the
upstream and streams the answer back as it arrives, chunk for chunk, while
storing the exchange in ``DIR`` as one JSON file: the request (method, path,
query, headers and body) and the response (status, headers, and each chunk
with its arrival time since the request went out). With chunked transfer
encoding a chunk is one HTTP chunk of the upstream's answer, so the stored
boundaries are the upstream's writes, not accidents of TCP; otherwise it is one
read. Credentials never reach a file: ``Authorization``, ``x-api-key`` and the
like, cookies, and ``key=`` style query parameters are stored as ``REDACTED``.

Replay mode (``--replay DIR``) answers a request with the stored exchange whose
method, path, query (without credentials) and body match (a JSON body matches
whatever its key order and spacing), sending the same chunks, as HTTP chunks,
at the recorded times divided by the speed factor (0: no waiting). Several
recordings of one request are served in turn. A request without a recording
gets a 404 that says so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web

from vastar_fast._log import logger

from .settings import SimulatorSettings

__all__ = ["REDACTED", "create_record_app", "create_replay_app", "match_key"]

log = logger("vastar_fast.simulator")  # the real one, with the package's NullHandler

REDACTED = "REDACTED"
FORMAT_VERSION = 1
_SESSION_KEY = web.AppKey("vastar_record_session", aiohttp.ClientSession)

_SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "openai-organization",
        "openai-project",
    )
)
_SECRET_HEADER_RE = re.compile(
    r"(auth|secret|password|api-?key|access-?token|session-?token)", re.I
)
_SECRET_QUERY = frozenset(("key", "api_key", "api-key", "apikey", "access_token", "token"))
# Hop-by-hop and framing headers: never forwarded, never replayed.
_HOP = frozenset(
    (
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "accept-encoding",
    )
)


def _is_secret_header(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_HEADERS or bool(_SECRET_HEADER_RE.search(low))


def _redacted_headers(headers: Mapping[str, str]) -> List[List[str]]:
    return [[k, REDACTED if _is_secret_header(k) else v] for k, v in headers.items()]


def _public_query(query: str) -> str:
    """The query string without credential parameters, sorted (the match form)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)]
    return urlencode(sorted((k, v) for k, v in pairs if k.lower() not in _SECRET_QUERY))


def _redacted_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in _SECRET_QUERY else v) for k, v in pairs])


def _canonical_body(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def match_key(method: str, path: str, query: str, body: bytes) -> str:
    """What a replayed request must match: method, path, public query, body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), _public_query(query).encode()):
        digest.update(part + b"\n")
    digest.update(_canonical_body(body))
    return digest.hexdigest()


def _encode(data: bytes) -> Dict[str, str]:
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def _decode(item: Mapping[str, Any]) -> bytes:
    data = item.get("data", "")
    if item.get("encoding") == "base64":
        return base64.b64decode(data)
    return str(data).encode("utf-8")


def _json_error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)


# --------------------------------------------------------------------------- record


class _Recorder:
    def __init__(self, directory: str, upstream: str) -> None:
        self.directory = directory
        self.upstream = upstream.rstrip("/")
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        #: The upstream's origin without credentials, safe for messages.
        self.origin = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        os.makedirs(directory, exist_ok=True)
        self.count = sum(1 for name in os.listdir(directory) if name.endswith(".json"))
        self.stored = 0

    def _path_for(self, method: str, path: str) -> str:
        self.count += 1
        slug = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")[:60] or "root"
        return os.path.join(self.directory, f"{self.count:06d}-{method.lower()}-{slug}.json")

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        session = request.app[_SESSION_KEY]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.upstream + request.rel_url.path_qs
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks: List[Tuple[float, bytes]] = []
        resp: Optional[web.StreamResponse] = None
        try:
            async with session.request(request.method, url, headers=headers, data=body) as up:
                headers_after = loop.time() - started
                chunked = up.headers.get("Transfer-Encoding", "").lower() == "chunked"
                out_headers = [(k, v) for k, v in up.headers.items() if k.lower() not in _HOP]
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in out_headers:
                    resp.headers.add(k, v)
                if chunked:
                    resp.enable_chunked_encoding()
                await resp.prepare(request)
                buf = bytearray()
                async for data, end_of_chunk in up.content.iter_chunks():
                    buf += data
                    if (end_of_chunk or not chunked) and buf:
                        piece = bytes(buf)
                        buf.clear()
                        chunks.append((loop.time() - started, piece))
                        await resp.write(piece)
                if buf:
                    chunks.append((loop.time() - started, bytes(buf)))
                    await resp.write(bytes(buf))
                await resp.write_eof()
        except aiohttp.ClientError as exc:
            log.warning("record: upstream %s failed: %s", self.origin, type(exc).__name__)
            return _json_error(
                502,
                f"record mode: the upstream {self.origin} could not be reached or broke off "
                f"({type(exc).__name__}); check --upstream",
                "upstream_unreachable",
            )
        except ConnectionError:
            log.debug("record: client went away during %s %s", request.method, request.path)
            return resp if resp is not None else web.Response(status=499)
        self._store(
            request, body, up.status, up.reason, out_headers, chunked, headers_after, chunks
        )
        return resp

    def _store(
        self,
        request: web.Request,
        body: bytes,
        status: int,
        reason: Optional[str],
        headers: List[Tuple[str, str]],
        chunked: bool,
        headers_after: float,
        chunks: List[Tuple[float, bytes]],
    ) -> None:
        query = request.rel_url.raw_query_string
        exchange = {
            "version": FORMAT_VERSION,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "match": match_key(request.method, request.path, query, body),
            "request": {
                "method": request.method,
                "path": request.path,
                "query": _redacted_query(query),
                "headers": _redacted_headers(request.headers),
                "body": _encode(body),
            },
            "response": {
                "status": status,
                "reason": reason,
                "headers": [[k, REDACTED if _is_secret_header(k) else v] for k, v in headers],
                "chunked": chunked,
                "headers_after_s": round(headers_after, 6),
                "chunks": [{"t": round(t, 6), **_encode(data)} for t, data in chunks],
            },
        }
        path = self._path_for(request.method, request.path)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(exchange, fh, indent=1, ensure_ascii=False)
        os.replace(tmp, path)
        self.stored += 1
        log.info(
            "recorded %s %s -> %d (%d chunks)", request.method, request.path, status, len(chunks)
        )


def create_record_app(settings: SimulatorSettings) -> web.Application:
    """The record-mode application (``settings.record_dir`` and ``settings.upstream``)."""
    assert settings.record_dir is not None and settings.upstream is not None
    recorder = _Recorder(settings.record_dir, settings.upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def open_session(app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=30.0, sock_read=600.0)
        app[_SESSION_KEY] = aiohttp.ClientSession(timeout=timeout, auto_decompress=True)

    async def close_session(app: web.Application) -> None:
        await app[_SESSION_KEY].close()

    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"status": "ok", "service": "vastar-simulator", "mode": "record",
             "upstream": recorder.origin, "recorded": recorder.stored}
        )  # fmt: skip

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", recorder.proxy)
    return app


# --------------------------------------------------------------------------- replay


class _Replayer:
    def __init__(self, directory: str, speed: float) -> None:
        if not os.path.isdir(directory):
            raise ValueError(f"replay directory {directory!r} does not exist; record into it first")
        self.speed = speed
        self.exchanges: Dict[str, List[Dict[str, Any]]] = {}
        self.turn: Dict[str, int] = {}
        self.count = 0
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    exchange = json.load(fh)
                req = exchange["request"]
                key = match_key(
                    req["method"], req["path"], req.get("query", ""), _decode(req["body"])
                )
                exchange["response"]["chunks"] = [
                    (float(c["t"]), _decode(c)) for c in exchange["response"]["chunks"]
                ]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"replay: {path} is not a recorded exchange: {exc}") from exc
            self.exchanges.setdefault(key, []).append(exchange)
            self.count += 1
        self.served = 0
        self.misses = 0

    async def _sleep_until(self, started: float, at: float) -> None:
        if self.speed == 0:
            return
        delay = started + at / self.speed - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = match_key(request.method, request.path, request.rel_url.raw_query_string, body)
        found = self.exchanges.get(key)
        if not found:
            self.misses += 1
            resp = _json_error(
                404,
                f"replay mode: no recorded exchange matches {request.method} {request.path} "
                f"(match key {key[:12]}); record it with --record DIR --upstream URL",
                "replay_miss",
            )
            resp.headers["x-simulator-replay"] = "miss"
            return resp
        turn = self.turn.get(key, 0)
        self.turn[key] = turn + 1
        answer = found[turn % len(found)]["response"]
        self.served += 1
        started = asyncio.get_running_loop().time()
        chunks: List[Tuple[float, bytes]] = answer["chunks"]
        await self._sleep_until(started, float(answer.get("headers_after_s", 0.0)))
        headers = [(k, v) for k, v in answer["headers"] if k.lower() not in _HOP]
        if not answer.get("chunked"):
            if chunks:
                await self._sleep_until(started, chunks[-1][0])
            resp = web.Response(status=answer["status"], body=b"".join(c for _, c in chunks))
            for k, v in headers:
                resp.headers.add(k, v)
            resp.headers["x-simulator-replay"] = "hit"
            return resp
        stream = web.StreamResponse(status=answer["status"])
        for k, v in headers:
            stream.headers.add(k, v)
        stream.headers["x-simulator-replay"] = "hit"
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        try:
            for at, data in chunks:
                await self._sleep_until(started, at)
                await stream.write(data)
            await stream.write_eof()
        except ConnectionError:
            log.debug("replay: client went away during %s %s", request.method, request.path)
        return stream


def create_replay_app(settings: SimulatorSettings) -> web.Application:
    """The replay-mode application (``settings.replay_dir``, ``settings.replay_speed``)."""
    assert settings.replay_dir is not None
    replayer = _Replayer(settings.replay_dir, settings.replay_speed)
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"status": "ok", "service": "vastar-simulator", "mode": "replay",
             "exchanges": replayer.count, "served": replayer.served, "misses": replayer.misses}
        )  # fmt: skip

    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", replayer.replay)
    return app
