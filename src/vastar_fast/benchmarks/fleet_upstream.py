"""An OpenAI-like upstream that records the arrival of every request, for the fleet
quotas' benchmark and tests (``python -m vastar_fast.benchmarks.fleet_upstream``).

``POST /v1/chat/completions`` answers after ``--latency-ms`` (plus, per request, the
``x-latency-ms`` header), buffered or streamed (``"stream": true``; with
``stream_options.include_usage`` the last chunk carries the usage, as OpenAI's does).
Each answer uses a deterministic number of tokens: the prompt's (a token per 4 bytes of
the messages' JSON, at least 1) and a completion between 1 and ``max_tokens`` (default
64), drawn from the request body and a counter. ``x-status: 429`` answers 429 with
``retry-after-ms`` from ``x-retry-after-ms``.

``GET /_arrivals`` returns ``[[t, tokens, status, tag], ...]``: the
``time.monotonic()`` at which each request arrived (one clock for every process of the
host), the tokens it used as the upstream counts them (prompt plus completion; 0 for a
429), its status and its ``x-tag`` header (the sender's label, "" without).
``DELETE /_arrivals`` forgets them. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import threading
import time
import urllib.request
from typing import Any, List, Optional

from aiohttp import web

__all__ = ["FleetUpstream", "fetch_arrivals", "make_app", "tokens_for"]


def tokens_for(body: bytes, counter: int) -> tuple:
    """(prompt, completion) tokens of a request body: deterministic per body and
    counter."""
    data = json.loads(body) if body else {}
    messages = data.get("messages", [])
    prompt = max(1, len(json.dumps(messages)) // 4)
    limit = data.get("max_tokens") or data.get("max_completion_tokens") or 64
    digest = hashlib.blake2b(body + counter.to_bytes(8, "little"), digest_size=4).digest()
    completion = 1 + int.from_bytes(digest, "little") % max(1, int(limit))
    return prompt, completion


def fetch_arrivals(base: str) -> List[List[Any]]:
    """``GET base/_arrivals``."""
    with urllib.request.urlopen(base + "/_arrivals", timeout=10) as resp:
        return list(json.loads(resp.read()))


def make_app(latency_ms: float = 0.0) -> web.Application:
    arrivals: List[List[Any]] = []
    counter = [0]

    async def chat(request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        tag = request.headers.get("x-tag", "")
        body = await request.read()
        delay = latency_ms + float(request.headers.get("x-latency-ms", "0"))
        if request.headers.get("x-status") == "429":
            arrivals.append([now, 0, 429, tag])
            retry_ms = request.headers.get("x-retry-after-ms", "1000")
            return web.json_response(
                {"error": {"message": "Rate limit reached (fleet upstream)", "type": "requests"}},
                status=429,
                headers={"retry-after-ms": retry_ms,
                         "retry-after": str(max(1, round(float(retry_ms) / 1000)))},
            )  # fmt: skip
        counter[0] += 1
        prompt, completion = tokens_for(body, counter[0])
        arrivals.append([now, prompt + completion, 200, tag])
        data = json.loads(body) if body else {}
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        text = " ".join("tok" for _ in range(completion))
        if not data.get("stream"):
            return web.json_response(
                {
                    "id": f"chatcmpl-{counter[0]}",
                    "object": "chat.completion",
                    "model": data.get("model", "m"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(obj: Any) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        base = {"id": f"chatcmpl-{counter[0]}", "object": "chat.completion.chunk", "model": "m"}
        await response.write(event({**base, "choices": [{"index": 0, "delta": {"content": text}}]}))
        await response.write(
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        if (data.get("stream_options") or {}).get("include_usage"):
            await response.write(event({**base, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def get_arrivals(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def clear_arrivals(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.json_response([])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/_arrivals", get_arrivals)
    app.router.add_delete("/_arrivals", clear_arrivals)
    app.router.add_get("/health", health)
    return app


class FleetUpstream:
    """The upstream in a thread of this process (tests); ``base`` is its URL."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.app = make_app(latency_ms)
        self.runner: Optional[web.AppRunner] = None
        self.port = 0
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arrivals(self) -> List[List[Any]]:
        """``[[monotonic time, tokens, status, tag], ...]`` of every request so far."""
        return fetch_arrivals(self.base)

    def close(self) -> None:
        async def stop() -> None:
            if self.runner is not None:
                await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    web.run_app(make_app(args.latency_ms), host="127.0.0.1", port=args.port, print=None,
                access_log=None)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
