"""Side by side with the released Vastar stack: ``python -m vastar_fast.benchmarks.stack_bench``.

Starts one loopback nginx upstream (``/small``: 13 bytes of text/plain; ``/sse35k``: a
35 KB OpenAI chat-completion event stream served as text/event-stream), the released
runtime binary and ``vastar runtime``, each on its own Unix socket, and measures in one
run, alternating the contenders (A B, then B A, ...), each client in its own process:

``runtime``  the same client (vastar_fast) against each runtime: sequential 13 B GETs
             (req/s, median and p99 latency, CPU microseconds per request of the daemon
             process tree and of the client) and N client processes (req/s, daemon CPU).
``stack``    the released SDK on the released runtime against vastar_fast on vastar
             runtime: sequential 13 B GETs, sequential 35 KB SSE GETs, N client
             processes of 13 B GETs.
``client``   each client's own CPU cost per round trip through the released runtime:
             CPU time of the client process per request minus that of a raw loop that
             sends a pre-encoded frame and reads the answer's bytes (13 B and 35 KB SSE).
``stream``   ours only (the released runtime buffers event streams): how long after an
             upstream writes its first SSE chunk the client has it, over ``--rounds``
             streams (the upstream writes a chunk, pauses 200 ms, writes another).
``paced``    the cost of ``vastar runtime``'s polling (``--spin-us``): one client
             sending a 13 B GET every 1 ms and every 10 ms (sleeping in between), against
             ours, ours with ``--spin-us 0`` and the released runtime: daemon CPU
             microseconds per request (which then holds the polling) and latency.
``floor``    what any runtime's sequential round trip costs before it does any work of
             its own: a keep-alive 13 B GET from a bare Python socket straight to the
             same nginx, and a 60-byte ping-pong over a Unix socket between two
             processes (the two hops and four wake-ups a round trip has when every
             peer sleeps while it waits). Their sum is a floor for a runtime that
             sleeps while it waits; one that polls (``vastar runtime``'s ``--spin-us``)
             saves two of those wake-ups and can go under it. The section puts each
             daemon's sequential median beside it (from the runtime and stack sections).

The released paths come from ``--released-runtime`` / ``--released-sdk`` or the
environment variables ``VASTAR_RELEASED_RUNTIME`` / ``VASTAR_RELEASED_SDK`` (the
directory holding the ``vastar_connector_sdk`` package; it needs numpy and flatbuffers).
Without them only our own figures are printed. Everything started is stopped again.

Why these measures: on a small shared machine wall-clock differences between two
clients swing several-fold from run to run; CPU time per request and throughput ratios
of alternated runs are the stable figures. Ratios are medians over ``--runs`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from vastar_fast.services import (
    ServiceProcess,
    child_environment,
    free_port,
    released_runtime_service,
    runtime_service,
    tcp_ready,
    unix_socket_ready,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SMALL = b"hello, world!"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def sse_body(target: int = 35_000) -> bytes:
    """A realistic OpenAI chat.completion.chunk stream of about ``target`` bytes."""
    words = ["Hello", " there", "!", " A", " FlatBuffers", " vtable", " maps", " field",
             " slots", " to", " offsets", ",", " so", " reads", " are", " O(1)", "."]  # fmt: skip
    out: List[str] = []
    size = i = 0
    while size < target:
        chunk = {
            "id": "chatcmpl-8x1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-3.5-turbo-0613",
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": {"content": words[i % len(words)]},
                         "logprobs": None, "finish_reason": None}],
        }  # fmt: skip
        event = "data: " + json.dumps(chunk) + "\n\n"
        out.append(event)
        size += len(event)
        i += 1
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


# ---------------------------------------------------------------- services
def child_env(extra_path: Sequence[str] = ()) -> Dict[str, str]:
    return child_environment(extra_path=extra_path)


def _task_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of ``pid``: nanosecond schedstat where the kernel has
    it, else utime + stime in clock ticks (10 ms resolution)."""
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (Linux /proc)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        total += _task_cpu_s(p)
        todo.extend(children.get(p, ()))
    return total


class Nginx:
    """A throwaway nginx on a free loopback port serving /small and /sse35k."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        www = tmp / "www"
        www.mkdir(parents=True)
        (www / "small").write_bytes(SMALL)
        (www / "sse35k").write_bytes(sse_body())
        for p in (tmp, www):
            os.chmod(p, 0o755)  # nginx workers may run as another user
        for f in ("small", "sse35k"):
            os.chmod(www / f, 0o644)
        conf = tmp / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {www};
        location = /sse35k {{ default_type text/event-stream; }}
    }}
}}
"""
        )
        self.service = ServiceProcess(
            "nginx",
            [NGINX, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
            log_path=str(tmp / "nginx.out"),
            env=child_environment(),
            ready=tcp_ready("127.0.0.1", self.port),
            startup_timeout_s=10.0,
            stop_signal=signal.SIGQUIT,  # graceful shutdown
            stop_grace_s=10.0,
        )
        try:
            self.service.start()
        except RuntimeError as exc:
            error_log = tmp / "error.log"
            detail = error_log.read_text("replace") if error_log.exists() else ""
            raise RuntimeError(f"nginx did not start: {exc}\n{detail}") from None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        self.service.stop()


class RuntimeProcess:
    """A runtime daemon on its own socket: ours (``python -m vastar_fast.runtime``) or
    the released binary. ``cpu_s()`` is the CPU time of its whole process tree."""

    def __init__(self, name: str, tmp: Path, binary: Optional[str], extra: Sequence[str]) -> None:
        self.name = name
        options: Dict[str, Any] = {"startup_timeout_s": 30.0, "stop_grace_s": 20.0}
        if binary is not None and "{socket}" in binary:  # a candidate's command line
            socket_path = str(tmp / f"{name}.sock")
            args = [a.replace("{socket}", socket_path) for a in binary.split()]
            self.service = ServiceProcess(name, args, log_path=str(tmp / f"{name}.log"),
                                          stdout_path=subprocess.DEVNULL,
                                          ready=unix_socket_ready(socket_path), **options)  # fmt: skip
            self.service.socket_path = socket_path
        elif binary is None:
            self.service = runtime_service(str(tmp), name=name, extra=extra,
                                           stdout_path=subprocess.DEVNULL, **options)  # fmt: skip
        else:
            # The released runtime logs three INFO lines per request to stdout: discarded.
            self.service = released_runtime_service(binary, str(tmp), name=name, **options)
        assert self.service.socket_path is not None
        self.socket_path: str = self.service.socket_path
        self.log_path = Path(self.service.log_path)
        self.service.start()
        assert self.service.process is not None
        self.proc = self.service.process

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.service.stop()


# ---------------------------------------------------------------- client processes
def _client_factory(kind: str, socket_path: str) -> Tuple[Callable[[str], Any], Callable[[], None]]:
    """(one request to a URL, close) for a client kind, in this (worker) process."""
    if kind == "raw":
        from vastar_fast.protocol import codec

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        frames: Dict[str, bytes] = {}
        unpack = struct.unpack_from

        def raw(url: str) -> int:
            frame = frames.get(url)
            if frame is None:
                frame = frames[url] = codec.encode_http_request_frame(
                    1, "default", "", None, int(time.time() * 1000) + 3_600_000,
                    "GET", url, None, None, None,
                )  # fmt: skip
            sock.sendall(frame)
            got = sock.recv_into(buf)
            while got < 4 or got < 4 + unpack(">I", buf)[0]:
                got += sock.recv_into(view[got:])
            return got

        return raw, sock.close
    if kind == "released":
        from vastar_connector_sdk import HTTPRequest as RReq  # type: ignore[import-not-found]
        from vastar_connector_sdk import RuntimeClient as RClient
        from vastar_connector_sdk import RuntimeConfig as RConf

        rclient = RClient(RConf(socket_path=socket_path))
        rclient.connect()
        rreqs: Dict[str, Any] = {}

        def released(url: str) -> Any:
            req = rreqs.get(url)
            if req is None:
                req = rreqs[url] = RReq(method="GET", url=url)
            return rclient.execute_http(req)

        return released, rclient.close
    from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig

    client = RuntimeClient(RuntimeConfig(socket_path=socket_path))
    client.connect()
    reqs: Dict[str, Any] = {}

    def ours(url: str) -> Any:
        req = reqs.get(url)
        if req is None:
            req = reqs[url] = HTTPRequest(method="GET", url=url)
        return client.execute_http(req)

    return ours, client.close


def worker_main(argv: List[str]) -> int:
    """``--worker KIND SOCKET URL N SECONDS [GAP]``: warm up, print "ready", wait for a
    line on stdin, run N requests (or for SECONDS when N is 0), sleeping GAP seconds
    after each (default 0), print one JSON result line."""
    kind, socket_path, url, n, seconds = argv[0], argv[1], argv[2], int(argv[3]), float(argv[4])
    gap = float(argv[5]) if len(argv) > 5 else 0.0
    sleep = time.sleep
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # the released SDK prints on connect and close
    once, close = _client_factory(kind, socket_path)
    expect = SMALL if url.endswith("/small") else None
    for _ in range(200):
        r = once(url)
        if expect is not None and kind != "raw" and r.body != expect:
            raise SystemExit(f"{kind}: unexpected body {r.body[:80]!r}")
    out.write("ready\n")
    out.flush()
    sys.stdin.readline()
    perf = time.perf_counter
    lat: List[float] = []
    cpu0 = time.process_time()
    t_start = perf()
    count = 0
    if n:
        for _ in range(n):
            t0 = perf()
            once(url)
            lat.append(perf() - t0)
            if gap:
                sleep(gap)
        count = n
    else:
        end = t_start + seconds
        while True:
            t0 = perf()
            once(url)
            t1 = perf()
            lat.append(t1 - t0)
            count += 1
            if t1 >= end:
                break
    wall = perf() - t_start
    cpu = time.process_time() - cpu0
    close()
    lat.sort()
    result = {
        "count": count,
        "wall_s": wall,
        "cpu_s": cpu,
        "median_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


class GapUpstream:
    """aiohttp upstream in a thread: chunk, 200 ms pause, chunk; records write times."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.writes: List[float] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def sse(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            self.writes.append(time.perf_counter())  # just before the bytes go out
            await resp.write(b"data: first\n\n")
            await asyncio.sleep(0.2)
            await resp.write(b"data: second\n\n")
            await resp.write_eof()
            return resp

        async def start() -> int:
            app = web.Application()
            app.router.add_get("/sse", sse)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _median_round_trip_us(one: Callable[[], None], n: int) -> float:
    for _ in range(min(500, n)):
        one()
    perf = time.perf_counter
    lat = []
    for _ in range(n):
        t0 = perf()
        one()
        lat.append(perf() - t0)
    return statistics.median(lat) * 1e6


def floor(port: int, n: int) -> Dict[str, float]:
    """The two legs of a sequential round trip with no runtime work in them (median
    microseconds): a bare keep-alive GET to nginx, and a Unix socket ping-pong."""
    up = socket.create_connection(("127.0.0.1", port))
    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def get() -> None:
        up.sendall(request)
        got = up.recv(65536)
        while not got.endswith(SMALL):
            more = up.recv(65536)
            if not more:
                raise RuntimeError("nginx closed the connection")
            got += more

    try:
        http_us = _median_round_trip_us(get, n)
    finally:
        up.close()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    echo = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys\n"
         "s = socket.socket(fileno=int(sys.argv[1]))\n"
         "while True:\n    m = s.recv(4096)\n    if not m: break\n    s.sendall(m)\n",
         str(b.fileno())],
        pass_fds=(b.fileno(),),
    )  # fmt: skip
    b.close()
    message = b"x" * 60

    def ping() -> None:
        a.sendall(message)
        got = a.recv(4096)
        while len(got) < len(message):
            got += a.recv(4096)

    try:
        ipc_us = _median_round_trip_us(ping, n)
    finally:
        a.close()
        echo.wait(10)
    return {"http_us": http_us, "ipc_us": ipc_us, "sum_us": http_us + ipc_us}


def first_chunk(socket_path: str, rounds: int) -> Dict[str, Any]:
    """Microseconds from the upstream's write of its first chunk to the client having it
    (both ``time.perf_counter``, one host)."""
    from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig

    up = GapUpstream()
    gaps: List[float] = []
    try:
        req = HTTPRequest("GET", f"http://127.0.0.1:{up.port}/sse")
        with RuntimeClient(RuntimeConfig(socket_path=socket_path)) as client:
            for i in range(rounds):
                with client.stream_http(req) as s:
                    if not s.streamed:
                        raise RuntimeError("the runtime did not stream")
                    next(iter(s))
                    got = time.perf_counter()
                    if len(up.writes) != i + 1:
                        raise RuntimeError("upstream write times out of step")
                    gaps.append((got - up.writes[i]) * 1e6)
                    s.read()
    finally:
        up.stop()
    gaps.sort()
    return {
        "rounds": rounds,
        "median_us": statistics.median(gaps),
        "p99_us": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
        "max_us": gaps[-1],
        "samples_us": gaps,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.released_sdk = args.released_sdk

    def run_clients(
        self, kind: str, rt: RuntimeProcess, url: str, procs: int, n: int, seconds: float,
        gap: float = 0.0,
    ) -> Dict[str, Any]:  # fmt: skip
        extra = [self.released_sdk] if kind == "released" and self.released_sdk else []
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    kind,
                    rt.socket_path,
                    url,
                    str(n),
                    str(seconds),
                    str(gap),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=child_env(extra),
            )
            for _ in range(procs)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                line = child.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"{kind} client did not start: {line!r}")
            cpu0 = rt.cpu_s()
            t0 = time.perf_counter()
            for child in children:
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                child.stdin.flush()
            results = []
            for child in children:
                assert child.stdout is not None
                results.append(json.loads(child.stdout.readline()))
            wall = time.perf_counter() - t0
            daemon_cpu = rt.cpu_s() - cpu0
        finally:
            for child in children:
                try:
                    child.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.communicate()
        total = sum(r["count"] for r in results)
        # Throughput: each process's own count over its own duration, summed.
        req_s = sum(r["count"] / r["wall_s"] for r in results) if procs > 1 else total / wall
        return {
            "req_per_s": req_s,
            "median_us": statistics.median(r["median_us"] for r in results),
            "p99_us": max(r["p99_us"] for r in results),
            "daemon_cpu_us": daemon_cpu / total * 1e6,
            "client_cpu_us": sum(r["cpu_s"] for r in results) / total * 1e6,
        }


def _alternate(pair: Sequence[Any], i: int) -> Sequence[Any]:
    return pair if i % 2 == 0 else list(reversed(pair))


def _median_of(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    keys = samples[0].keys()
    return {k: statistics.median(s[k] for s in samples) for k in keys}


def fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def run(args: argparse.Namespace) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vastar-stack-bench-"))
    os.chmod(tmp, 0o755)
    bench = Bench(args, tmp)
    released_rt = args.released_runtime
    ours_extra = ["--workers", str(args.workers)] if args.workers else []
    nginx = ours = rel = no_spin = None
    extra_services: List[RuntimeProcess] = []
    out: Dict[str, Any] = {"runs": args.runs, "sections": {}}
    try:
        nginx = Nginx(tmp / "nginx")
        ours = RuntimeProcess("vastar", tmp, None, ours_extra)
        if released_rt:
            rel = RuntimeProcess("released", tmp, released_rt, [])
        candidates = []
        for spec in args.candidate:  # diagnostics: other daemons beside ours and released
            label, _, cmd = spec.partition("=")
            candidates.append((label, RuntimeProcess(label, tmp, cmd, [])))
            extra_services.append(candidates[-1][1])
        small, sse = nginx.url("small"), nginx.url("sse35k")
        sections = args.sections
        # Each case: name -> [(label, kind, runtime, url, procs)]
        cases: Dict[str, List[Tuple[str, str, RuntimeProcess, str, int]]] = {}
        paced: Dict[str, Tuple[float, int]] = {}  # paced cases: name -> (gap s, requests)
        if "runtime" in sections:
            rts = [("vastar runtime", ours), *candidates]
            rts += [("released runtime", rel)] if rel else []
            cases["runtime: sequential 13 B GET, client vastar_fast"] = [
                (label, "vastar_fast", rt, small, 1) for label, rt in rts
            ]
            cases[f"runtime: {args.procs} client processes, 13 B GET, client vastar_fast"] = [
                (label, "vastar_fast", rt, small, args.procs) for label, rt in rts
            ]
        if "stack" in sections:
            stacks = [("vastar_fast + vastar runtime", "vastar_fast", ours)]
            if rel and bench.released_sdk:
                stacks.append(("released SDK + released runtime", "released", rel))
            for what, url, procs in (("sequential 13 B GET", small, 1),
                                     ("sequential 35 KB SSE GET", sse, 1),
                                     (f"{args.procs} client processes, 13 B GET", small,
                                      args.procs)):  # fmt: skip
                cases[f"stack: {what}"] = [(lab, k, rt, url, procs) for lab, k, rt in stacks]
        if "paced" in sections:
            no_spin = RuntimeProcess("vastar-no-spin", tmp, None, [*ours_extra, "--spin-us", "0"])
            rts = [("vastar runtime", ours), ("vastar runtime --spin-us 0", no_spin)]
            rts += [("released runtime", rel)] if rel else []
            for gap_ms, count in ((1, min(args.n, 1000)), (10, max(20, min(args.n // 10, 200)))):
                name = f"paced: a 13 B GET every {gap_ms} ms, client vastar_fast"
                cases[name] = [(label, "vastar_fast", rt, small, 1) for label, rt in rts]
                paced[name] = (gap_ms / 1000.0, count)
        if "client" in sections and rel:
            kinds = ["raw", "vastar_fast"] + (["released"] if bench.released_sdk else [])
            for what, url in (("13 B", small), ("35 KB SSE", sse)):
                cases[f"client own cost via released runtime: {what}"] = [
                    (k, k, rel, url, 1) for k in kinds
                ]
        if "stream" in sections:
            out["sections"]["stream: first SSE chunk forwarded (vastar runtime)"] = {
                "first_chunk": first_chunk(ours.socket_path, args.rounds)
            }
        legs = [floor(nginx.port, args.n) for _ in range(args.runs)] if "floor" in sections else []
        for name, contenders in cases.items():
            samples: Dict[str, List[Dict[str, Any]]] = {c[0]: [] for c in contenders}
            for i in range(args.runs):
                for label, kind, rt, url, procs in _alternate(contenders, i):
                    n = 0 if procs > 1 else args.n
                    gap, n = paced.get(name, (0.0, n))
                    samples[label].append(bench.run_clients(kind, rt, url, procs, n, args.seconds,
                                                            gap))  # fmt: skip
                if args.progress:
                    print(f"  {name}: round {i + 1}/{args.runs}", file=sys.stderr, flush=True)
            med = {label: _median_of(s) for label, s in samples.items()}
            section: Dict[str, Any] = {"median": med, "samples": samples}
            labels = [c[0] for c in contenders]
            if name.startswith("client"):
                raw = med["raw"]["client_cpu_us"]
                own = {k: med[k]["client_cpu_us"] - raw for k in labels if k != "raw"}
                section["own_cost_us"] = own
                per_run = [
                    (samples["vastar_fast"][j]["client_cpu_us"] - samples["raw"][j]["client_cpu_us"])
                    / (samples["released"][j]["client_cpu_us"] - samples["raw"][j]["client_cpu_us"])
                    for j in range(args.runs)
                ] if "released" in own else []  # fmt: skip
                if per_run:
                    section["own_cost_ratio_per_run"] = per_run
                    section["own_cost_ratio"] = own["vastar_fast"] / own["released"]
                # Wall-clock beside it: median round trip minus raw's (noisier: it also
                # holds the scheduler's wake-up latency, which no client controls).
                raw_wall = med["raw"]["median_us"]
                wall = {k: med[k]["median_us"] - raw_wall for k in labels if k != "raw"}
                section["own_wall_us"] = wall
                if "released" in wall and wall["released"] > 0:
                    section["own_wall_ratio"] = wall["vastar_fast"] / wall["released"]
            elif len(labels) >= 2:
                # Every contender against the last one (the released runtime or stack when
                # present); paced, the client sets the rate, so the daemons' CPU differs.
                metric, key = (("daemon_cpu_us", "ratio_daemon_cpu") if name in paced
                               else ("req_per_s", "ratio_req_per_s"))  # fmt: skip
                base = labels[-1]
                section["ratio_base"] = base
                section[f"{key}_per_run"] = {}
                section[key] = {}
                for a in labels[:-1]:
                    per_run = [
                        samples[a][j][metric] / samples[base][j][metric] for j in range(args.runs)
                    ]
                    section[f"{key}_per_run"][a] = per_run
                    section[key][a] = statistics.median(per_run)
            out["sections"][name] = section
        if legs:  # last, so that its table can put the sequential medians beside it
            out["sections"]["floor: a sequential round trip with no runtime work"] = {
                "floor": {k: statistics.median(leg[k] for leg in legs) for k in legs[0]}
            }
    finally:
        for svc in (ours, no_spin, rel, *extra_services, nginx):
            if svc is not None:
                svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def print_table(out: Dict[str, Any]) -> None:
    for name, section in out["sections"].items():
        if "floor" in section:
            fl = section["floor"]
            print(f"\n{name}  (medians of {out['runs']} runs)\n"
                  f"  bare keep-alive GET to nginx {fl['http_us']:.0f} us + Unix socket "
                  f"ping-pong {fl['ipc_us']:.0f} us = {fl['sum_us']:.0f} us")  # fmt: skip
            for other, sec in out["sections"].items():
                if other.startswith(("runtime: sequential", "stack: sequential 13 B")):
                    for label, m in sec["median"].items():
                        print(f"  {label} ({other.split(':')[0]}): median "
                              f"{m['median_us']:.0f} us, {m['median_us'] - fl['sum_us']:.0f} "
                              "us over the floor")  # fmt: skip
            continue
        if "first_chunk" in section:
            fc = section["first_chunk"]
            print(f"\n{name}: median {fc['median_us']:.0f} us, p99 {fc['p99_us']:.0f} us, "
                  f"max {fc['max_us']:.0f} us over {fc['rounds']} streams (goal: < 1 ms)")  # fmt: skip
            continue
        print(f"\n{name}  (medians of {out['runs']} alternated runs)")
        print(f"  {'contender':<34}{'req/s':>9}{'median us':>11}{'p99 us':>9}"
              f"{'daemon CPU us':>15}{'client CPU us':>15}")  # fmt: skip
        for label, m in section["median"].items():
            print(f"  {label:<34}{fmt(m['req_per_s']):>9}{fmt(m['median_us']):>11}"
                  f"{fmt(m['p99_us']):>9}{fmt(m['daemon_cpu_us']):>15}"
                  f"{fmt(m['client_cpu_us']):>15}")  # fmt: skip
        for label, ratio in section.get("ratio_req_per_s", {}).items():
            runs = ", ".join(f"{r:.2f}" for r in section["ratio_req_per_s_per_run"][label])
            print(f"  req/s {label} / {section['ratio_base']}: {ratio:.2f}x  [{runs}]")
        for label, ratio in section.get("ratio_daemon_cpu", {}).items():
            runs = ", ".join(f"{r:.2f}" for r in section["ratio_daemon_cpu_per_run"][label])
            print(f"  daemon CPU per request {label} / {section['ratio_base']}: {ratio:.2f}x  "
                  f"[{runs}]")  # fmt: skip
        if "own_cost_us" in section:
            own = ", ".join(f"{k} {v:.1f} us" for k, v in section["own_cost_us"].items())
            print(f"  own cost (client CPU minus raw): {own}")
        if "own_cost_ratio" in section:
            runs = ", ".join(f"{r:.3f}" for r in section["own_cost_ratio_per_run"])
            print(f"  own cost vastar_fast / released: {section['own_cost_ratio']:.3f}x  [{runs}]")
        if "own_wall_us" in section:
            wall = ", ".join(f"{k} {v:.1f} us" for k, v in section["own_wall_us"].items())
            ratio = section.get("own_wall_ratio")
            tail = f"; vastar_fast / released {ratio:.3f}x" if ratio is not None else ""
            print(f"  wall-clock (median round trip minus raw): {wall}{tail}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--worker":
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--released-runtime", default=os.environ.get("VASTAR_RELEASED_RUNTIME"),
                   help="the released runtime binary ($VASTAR_RELEASED_RUNTIME)")  # fmt: skip
    p.add_argument("--released-sdk", default=os.environ.get("VASTAR_RELEASED_SDK"),
                   help="directory holding the released vastar_connector_sdk package "
                   "($VASTAR_RELEASED_SDK)")  # fmt: skip
    p.add_argument("--sections", default="runtime,stack,client,stream,paced,floor",
                   help="comma-separated: runtime, stack, client, stream, paced, floor")  # fmt: skip
    p.add_argument("--rounds", type=int, default=20, help="streams for the stream section")
    p.add_argument("--runs", type=int, default=3, help="alternated rounds per case")
    p.add_argument("--n", type=int, default=4000, help="requests per sequential run")
    p.add_argument("--procs", type=int, default=8, help="client processes for throughput")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per throughput run")
    p.add_argument("--workers", type=int, default=0, help="pass --workers N to vastar runtime")
    p.add_argument("--candidate", metavar="LABEL=CMD", action="append", default=[],
                   help="diagnostics: also measure the daemon CMD ({socket} is replaced by its "
                   "socket path); repeatable; never a claim")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small counts (CI smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines")
    args = p.parse_args(argv)
    args.sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if args.quick:
        args.runs, args.n, args.seconds, args.rounds = 1, 300, 1.0, 3
    for path, what in ((args.released_runtime, "--released-runtime"),
                       (args.released_sdk, "--released-sdk")):  # fmt: skip
        if path and not os.path.exists(path):
            p.error(f"{what} {path}: no such file or directory")
    if not args.released_runtime:
        print("no released runtime given (--released-runtime / VASTAR_RELEASED_RUNTIME): "
              "measuring ours only", file=sys.stderr)  # fmt: skip
    out = run(args)
    print_table(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
