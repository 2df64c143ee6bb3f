#!/usr/bin/env python3
"""Load generator for the AI endpoint simulator (``vastar simulator``).

Starts the simulator in a *subprocess* with zero delays (so client and server
run on different cores; on Linux they are pinned to different CPUs), then
measures, for a bounded time and request count, on loopback only:

* non-streaming chat completions per second;
* zero-delay 50-chunk SSE streams per second (role chunk + 47 content chunks +
  finish chunk + ``[DONE]``).

``--features`` adds the newer endpoints: a Responses API stream (47 deltas), a
streamed tool call (chat completions), a 1,000-token ``ignore_eos`` stream and
an embeddings request (1536 dimensions).

Two Python clients are available: ``aiohttp`` (the ordinary client, what a
connector would use) and ``raw`` (a minimal asyncio HTTP/1.1 keep-alive
client). The raw client exists because the aiohttp client costs about as much
CPU per request as the server does, so with one core each it caps the figure
below the server's capacity. ``--wrk`` additionally runs /usr/bin/wrk (if
installed) with a Lua script for the POST bodies, the cheapest client of all.

Usage::

    python -m vastar_fast.benchmarks.simulator_load [--duration 5] [--concurrency 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from vastar_fast.services import ServiceProcess, make_tmpdir, start_simulator

PATH = "/v1/chat/completions"
NON_STREAM_BODY = json.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
).encode()
# The quantum answer is a few hundred tokens; 47 of them + role chunk + finish
# chunk + [DONE] = 50 SSE events per stream.
STREAM_BODY = json.dumps(
    {
        "model": "gpt-4o",
        "stream": True,
        "max_tokens": 47,
        "messages": [{"role": "user", "content": "Explain quantum computing in simple terms."}],
    }
).encode()
# Same stream, but every request gets a unique prompt ("@N@" -> counter), so
# the server's response cache never hits: measures the full parse+render path.
UNIQUE_STREAM_BODY = json.dumps(
    {
        "model": "gpt-4o",
        "stream": True,
        "max_tokens": 47,
        "messages": [{"role": "user", "content": "Tell me something, request @N@."}],
    }
).encode()


# Opt-in scenarios (--features): (path, body, the bytes a good answer ends with).
FEATURE_SCENARIOS: Dict[str, Tuple[str, bytes, Optional[bytes]]] = {
    "responses-47": (
        "/v1/responses",
        json.dumps(
            {
                "model": "gpt-4.1",
                "stream": True,
                "ignore_eos": True,
                "max_output_tokens": 47,
                "input": "Explain quantum computing in simple terms.",
            }
        ).encode(),
        b"}\n\n",
    ),
    "tool-stream": (
        PATH,
        json.dumps(
            {
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "parameters": {
                                "type": "object",
                                "properties": {
                                    "city": {"type": "string"},
                                    "unit": {"type": "string", "enum": ["c", "f"]},
                                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                },
                                "required": ["city", "unit", "days"],
                            },
                        },
                    }
                ],
            }
        ).encode(),
        b"[DONE]\n\n",
    ),
    "stream-1000": (
        PATH,
        json.dumps(
            {
                "model": "gpt-4o",
                "stream": True,
                "ignore_eos": True,
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "Tell me a long story"}],
            }
        ).encode(),
        b"[DONE]\n\n",
    ),
    "embeddings": (
        "/v1/embeddings",
        json.dumps(
            {"model": "text-embedding-3-small", "input": "The quick brown fox jumps."}
        ).encode(),
        None,
    ),
}


@dataclass
class Result:
    scenario: str
    client: str
    requests: int
    seconds: float
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- server


def start_server(directory: str, pin: Optional[int]) -> ServiceProcess:
    """The simulator with zero delays, through the launcher (on CPU ``pin`` if given)."""
    return start_simulator(
        directory,
        ttft_ms=0,
        token_delay_ms=0,
        cpus={pin} if pin is not None else None,
        startup_timeout_s=15.0,
        stop_grace_s=10.0,
    )


def check_stream_shape(port: int) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}",
        data=STREAM_BODY,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5.0) as r:
        body = r.read()
    events = body.count(b"data: ")
    if not body.endswith(b"data: [DONE]\n\n"):
        raise RuntimeError("stream did not end with [DONE]")
    return events


# --------------------------------------------------------------------------- clients


async def run_aiohttp(
    port: int,
    path: str,
    body: bytes,
    end: Optional[bytes],
    concurrency: int,
    duration: float,
    max_requests: int,
) -> Tuple[int, int, float]:
    import aiohttp

    unique = b"@N@" in body

    url = f"http://127.0.0.1:{port}{path}"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    done = 0
    errors = 0
    deadline = 0.0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, errors
            while done + errors < max_requests and time.perf_counter() < deadline:
                data = body
                if unique:
                    data = body.replace(b"@N@", str(done + errors).encode())
                try:
                    async with session.post(url, data=data, headers=headers) as resp:
                        data = await resp.read()
                    ok = resp.status == 200 and (end is None or data.endswith(end))
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    done += 1
                else:
                    errors += 1

        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done, errors, elapsed


class _RawConn(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 client: one request in flight per connection."""

    def __init__(self, request: bytes, on_done: Callable[[_RawConn, bool], None]) -> None:
        self.request = request
        self.on_done = on_done
        self.buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buf[:head_end]).lower()
            m = re.search(rb"content-length:\s*(\d+)", head)
            if m is not None:
                total = head_end + 4 + int(m.group(1))
                if len(self.buf) < total:
                    return
            else:  # chunked
                end = self.buf.find(b"\r\n0\r\n\r\n", head_end)
                if end < 0:
                    return
                total = end + 7
            ok = head.startswith(b"http/1.1 200")
            del self.buf[:total]
            self.on_done(self, ok)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def run_raw(
    port: int,
    path: str,
    body: bytes,
    end: Optional[bytes],
    concurrency: int,
    duration: float,
    max_requests: int,
) -> Tuple[int, int, float]:
    loop = asyncio.get_running_loop()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    counts = {"done": 0, "errors": 0, "inflight": 0}
    finished = loop.create_future()
    deadline = 0.0

    def on_done(conn: _RawConn, ok: bool) -> None:
        counts["done" if ok else "errors"] += 1
        if counts["done"] + counts["errors"] + counts["inflight"] - 1 < max_requests and (
            time.perf_counter() < deadline
        ):
            conn.send()
        else:
            counts["inflight"] -= 1
            if counts["inflight"] == 0 and not finished.done():
                finished.set_result(None)

    conns: List[_RawConn] = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(
            lambda: _RawConn(request, on_done), "127.0.0.1", port
        )
        conns.append(proto)
    start = time.perf_counter()
    deadline = start + duration
    for conn in conns:
        counts["inflight"] += 1
        conn.send()
    try:
        await asyncio.wait_for(finished, timeout=duration + 30.0)
    finally:
        elapsed = time.perf_counter() - start
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    return counts["done"], counts["errors"], elapsed


def run_wrk(
    port: int, path: str, body: bytes, concurrency: int, duration: float
) -> Optional[Result]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        lua = fh.name
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, int(duration))}s", "-s", lua,
             f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=duration + 30,
        ).stdout  # fmt: skip
    finally:
        os.unlink(lua)
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None:
        return None
    seconds = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
    return Result("", "wrk", int(m.group(1)), seconds, int(errs.group(1)) if errs else 0)


# --------------------------------------------------------------------------- handler cost


class _FakeRequest:
    """What the generation handler reads from a request, without a socket."""

    method = "POST"
    path = PATH
    transport = None

    def __init__(self, body: bytes) -> None:
        from multidict import CIMultiDict

        self._body = body
        self.headers = CIMultiDict(
            {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
        )
        self.query: Dict[str, str] = {}
        self.match_info: Dict[str, str] = {}

    async def read(self) -> bytes:
        return self._body


def handler_cost(batches: int = 7, calls: int = 20_000) -> Dict[str, float]:
    """Microseconds per call of the chat route's handler (cached plan, zero delay),
    the median of ``batches``: the simulator's own cost without aiohttp's I/O. Run it
    with PYTHONPATH pointing at another tree to compare two versions."""
    from vastar_fast.simulator import SimulatorSettings, create_app

    async def measure() -> Dict[str, float]:
        app = create_app(SimulatorSettings.fast())
        route = next(r for r in app.router.routes() if r.resource and r.resource.canonical == PATH)
        handler = route.handler
        out: Dict[str, float] = {}
        for name, body in (("non-stream", NON_STREAM_BODY), ("stream-50", STREAM_BODY)):
            request = _FakeRequest(body)
            await handler(request)  # type: ignore[arg-type]
            runs = []
            for _ in range(batches):
                start = time.perf_counter()
                for _ in range(calls):
                    await handler(request)  # type: ignore[arg-type]
                runs.append((time.perf_counter() - start) / calls * 1e6)
            out[name] = statistics.median(runs)
        return out

    return asyncio.run(measure())


# --------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=500_000, help="cap per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument(
        "--client", choices=["aiohttp", "raw", "both"], default="both", help="Python client(s)"
    )
    parser.add_argument("--wrk", action="store_true", help="also measure with wrk if installed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client CPUs")
    parser.add_argument(
        "--handler-cost",
        action="store_true",
        help="only measure the route handler in process (no sockets) and exit",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="also measure the Responses API, tool-call, long-stream and embeddings scenarios",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run's rate here")
    args = parser.parse_args(argv)
    if args.handler_cost:
        costs = handler_cost()
        print(
            "handler cost per call (median of 7 x 20,000): "
            + ", ".join(f"{name} {us:.2f} us" for name, us in costs.items())
        )
        return 0

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    pin_server: Optional[int] = None
    if not args.no_pin and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            pin_server = cpus[-1]
            os.sched_setaffinity(0, set(cpus[:-1]))

    tmp = make_tmpdir("vastar-simload-")
    proc = start_server(tmp, pin_server)
    assert proc.port is not None
    port = proc.port
    try:
        events = check_stream_shape(port)
        print(f"simulator pid {proc.pid} on 127.0.0.1:{port}; stream has {events} SSE events")
        done_marker = b"[DONE]\n\n"
        scenarios: Dict[str, Tuple[str, bytes, Optional[bytes]]] = {
            "non-stream": (PATH, NON_STREAM_BODY, None),
            f"stream-{events}": (PATH, STREAM_BODY, done_marker),
            f"stream-{events}u": (PATH, UNIQUE_STREAM_BODY, done_marker),
        }
        if args.features:
            scenarios.update(FEATURE_SCENARIOS)
        clients = ["aiohttp", "raw"] if args.client == "both" else [args.client]
        results: List[Tuple[Result, List[float]]] = []
        for scenario, (path, body, end) in scenarios.items():
            unique = b"@N@" in body
            for client in clients:
                if unique and client != "aiohttp":
                    continue  # the raw client replays one fixed request
                runner = run_aiohttp if client == "aiohttp" else run_raw
                runs: List[Result] = []
                for _ in range(args.repeat):
                    done, errors, secs = asyncio.run(
                        runner(
                            port,
                            path,
                            body,
                            end,
                            args.concurrency,
                            args.duration,
                            args.max_requests,
                        )
                    )
                    runs.append(Result(scenario, client, done, secs, errors))
                rates = [r.rate for r in runs]
                best = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
                results.append((best, rates))
            if args.wrk and not unique:
                wrk_runs = [
                    r
                    for r in (
                        run_wrk(port, path, body, args.concurrency, args.duration)
                        for _ in range(args.repeat)
                    )
                    if r is not None
                ]
                if wrk_runs:
                    for r in wrk_runs:
                        r.scenario = scenario
                    median = sorted(wrk_runs, key=lambda r: r.rate)[len(wrk_runs) // 2]
                    results.append((median, [r.rate for r in wrk_runs]))
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'scenario':<13} {'client':<8} {'requests':>9} {'errors':>7} {'median/s':>10} {'runs/s':<28}"
    )
    print("-" * 78)
    for r, rates in results:
        runs_s = ", ".join(f"{x:,.0f}" for x in rates)
        print(
            f"{r.scenario:<13} {r.client:<8} {r.requests:>9,} {r.errors:>7} "
            f"{statistics.median(rates):>10,.0f} {runs_s:<28}"
        )
    print(
        f"\nconcurrency {args.concurrency}, {args.duration:g} s per run, median of {args.repeat}"
        + (f"; server pinned to CPU {pin_server}" if pin_server is not None else "")
        + "\n'u' = unique prompt per request (server response cache never hits)"
    )
    if args.json:
        out: Dict[str, Any] = {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "server_cpu": pin_server,
            "results": [
                {
                    "scenario": r.scenario,
                    "client": r.client,
                    "requests": r.requests,
                    "errors": r.errors,
                    "median_per_s": statistics.median(rates),
                    "samples_per_s": rates,
                }
                for r, rates in results
            ],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
