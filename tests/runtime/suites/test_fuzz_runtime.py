"""Hostile frames into a running runtime: it never dies, its memory stays bounded, other
connections keep being served, and every frame is answered as the protocol says.

Connections (8 at a time) each send a batch of hostile frames from
:class:`fuzzing.Hostile` (random bytes, mutated golden frames, truncations, absurd
lengths, amplification shapes, huge vectors, strange requests, some of them to a local
upstream), most batches ending with bytes that break the framing. What the runtime
must answer is known from the sans-I/O decoder (the same ``ServerConnection``): one
terminal answer per ExecuteRequest and per invalid message, a HealthResponse per
HealthCheck, and after a fatal frame its answer and the end of the connection.
Meanwhile a watcher connection asks for health and makes a real request every 50 ms.

Sizes: 100,000 frames with ``VASTAR_SUITES=full``, 10,000 per twin in CI.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from fuzzing import Hostile
from vastar_fast.protocol.connection import (
    HealthCheckReceived,
    InvalidMessage,
    RequestReceived,
    ServerConnection,
)

from ..helpers import Daemon
from ..upstream import Upstream
from .conftest import optional_int, size
from .wire import Sampler, Wire, http_frame, response_payload

PARALLEL = 8


def count(events: List[Any]) -> Dict[str, Any]:
    """What a runtime must answer to frames that decode to ``events``."""
    return {
        "frames": len(events),
        "answers": sum(isinstance(e, (RequestReceived, InvalidMessage)) for e in events),
        "health": sum(isinstance(e, HealthCheckReceived) for e in events),
        "fatal": any(isinstance(e, InvalidMessage) and e.fatal for e in events),
    }


def answers_of(w: Wire) -> int:
    return sum(len(v) for v in w.terminal.values())


async def fuzz(path: str, sink: str, total: int, seed: int, daemon_pid: int) -> Dict[str, Any]:
    stats: Dict[str, Any] = {"frames_sent": 0, "frames_decoded": 0, "connections": 0,
                             "fatal_endings": 0, "reset_while_sending": 0, "bytes": 0,
                             "watch_ok": 0}  # fmt: skip
    failures: List[str] = []
    sampler = Sampler(daemon_pid, 0.25).start()
    await asyncio.sleep(0.3)
    baseline = sampler.sample()
    stop = asyncio.Event()

    async def watcher() -> None:
        w = await Wire.open(path)
        rid = 1
        try:
            while not stop.is_set():
                h = await w.health_check(10)
                r = await asyncio.wait_for(
                    w.send_request(rid, http_frame(rid, "GET", sink + "/small"), False), 20
                )
                if not h.healthy or r.error_class != 0 or response_payload(r)["status_code"] != 200:
                    failures.append(f"watcher: {h} / {r}")
                stats["watch_ok"] += 1
                rid += 1
                await asyncio.sleep(0.05)
        finally:
            await w.close()

    async def worker(index: int) -> None:
        gen = Hostile(seed * 1000 + index, sink)
        rng = random.Random(seed * 7919 + index)
        while stats["frames_decoded"] < total:
            # A batch of frames that keep the stream in sync, up to and including the
            # first fatal one (nothing after it, so the runtime reads all we send), or
            # else maybe a tail that breaks the framing.
            server = ServerConnection()
            events: List[Any] = []
            parts: List[bytes] = []
            for _ in range(rng.randint(1, 60)):
                parts.append(gen.item())
                events += server.receive_data(parts[-1])
                if server.closed:
                    break
            in_sync = True
            if not server.closed and rng.random() < 0.5:
                parts.append(gen.tail())
                events += server.receive_data(parts[-1])
                in_sync = not server.closed
            data = b"".join(parts)
            want = count(events)
            stats["frames_sent"] += len(parts)
            stats["frames_decoded"] += want["frames"]
            for mark in (1, 2, 3):  # RSS at each quarter: a leak keeps growing
                if f"q{mark}" not in stats and stats["frames_decoded"] >= total * mark / 4:
                    stats[f"q{mark}"] = sampler.sample()[0]
            stats["bytes"] += len(data)
            stats["connections"] += 1
            w = await Wire.open(path, strict=False)
            try:
                reset = False
                try:
                    for i in range(0, len(data), 1 << 16):  # as a client would, in pieces
                        w.writer.write(data[i : i + (1 << 16)])
                        await w.writer.drain()
                except ConnectionError:
                    reset = True  # the runtime hung up while we were still sending
                if want["fatal"]:
                    await asyncio.wait_for(w.eof.wait(), 30)
                    got = answers_of(w)
                    last = w.terminal.get(0, [None])[-1]
                    answered = last is not None and "closing the connection" in (
                        last.error_message or "")  # fmt: skip
                    # Requests still in flight at the fatal frame are dropped with the
                    # connection. A tail that broke the framing may leave bytes unread in
                    # the runtime's socket: then the close resets ours, answer and all.
                    ok = got <= want["answers"] and (answered or not in_sync)
                    stats["fatal_endings"] += 1
                    stats["reset_while_sending"] += reset or not answered
                else:
                    end = time.monotonic() + 30
                    while (answers_of(w) < want["answers"] or len(w.health) < want["health"]) \
                            and time.monotonic() < end and not w.eof.is_set():  # fmt: skip
                        await asyncio.sleep(0.005)
                    got = answers_of(w)
                    ok = (not reset and got == want["answers"]
                          and len(w.health) == want["health"])  # fmt: skip
                if not ok or w.problems:
                    failures.append(f"worker {index}: expected {want} (in sync: {in_sync}), got "
                                    f"{got} answers, {len(w.health)} health, reset {reset}, "
                                    f"problems {w.problems[:3]}")  # fmt: skip
            finally:
                await w.close()

    watch = asyncio.ensure_future(watcher())
    t0 = time.monotonic()
    try:
        await asyncio.gather(*(worker(i) for i in range(PARALLEL)))
    finally:
        stop.set()
        elapsed = time.monotonic() - t0
        await asyncio.wait_for(watch, 30)
        await asyncio.sleep(1.0)  # connections closed by us are gone from the daemon by now
        after = sampler.sample()
        await sampler.stop()
    stats.update(seconds=round(elapsed, 1), failures=failures, baseline=baseline, after=after,
                 peak_rss_mb=round(sampler.peak_rss_mb, 1), peak_fds=sampler.peak_fds)  # fmt: skip
    return stats


def test_hostile_frames_never_hurt_the_runtime(
    tmp_path: Path, upstream: Upstream, figures: Callable[..., None]
) -> None:
    total = optional_int("VASTAR_FUZZ_FRAMES") or size(10_000, 100_000)
    config = {
        "limits": {"max_connections": 256, "idle_timeout_s": 60, "frame_timeout_s": 30},
        "retry": {"max_attempts": 1},
        "tenants": {
            "default": {"allowed_hosts": [f"127.0.0.1:{upstream.port}"], "max_concurrent": 5000}
        },
    }
    with Daemon(tmp_path, config, log_level="WARNING") as d:
        assert d.proc is not None
        stats = asyncio.run(fuzz(d.socket_path, upstream.base, total, 4242, d.proc.pid))
        assert d.proc.poll() is None, "the runtime died"
        log = d.log()
        assert d.terminate() == 0
    failures = stats.pop("failures")
    assert not failures, failures[:10]
    assert stats["frames_decoded"] >= total
    assert stats["watch_ok"] > 10, stats  # the watcher was served all along
    base_rss, base_fds = stats["baseline"]
    after_rss, after_fds = stats["after"]
    grown_mb = (after_rss - base_rss) / 1024
    # Bounded memory: what the hostile frames took at most (eight connections each
    # holding up to one 10 MiB frame and its decoded copy), what they left behind (the
    # allocator keeps some of the big buffers' memory: 30-35 MB here, the same after
    # 100,000 frames as after 300,000), and no growth from the first quarter of the run
    # to the third (sampled mid-run, so within the in-flight frames' noise).
    quarters = [stats.get(f"q{i}", 0) / 1024 for i in (1, 2, 3)]
    assert stats["peak_rss_mb"] < base_rss / 1024 + 400, stats
    assert grown_mb < 96, stats
    assert quarters[2] - quarters[0] < 48, quarters
    assert after_fds <= base_fds + 16, stats  # every connection's descriptor was closed
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    figures("fuzz-runtime", frames=stats["frames_decoded"], items_sent=stats["frames_sent"],
            connections=stats["connections"], fatal_endings=stats["fatal_endings"],
            answer_lost_to_reset=stats["reset_while_sending"],
            mb_sent=round(stats["bytes"] / 1e6, 1), seconds=stats["seconds"],
            rss_mb_before=round(base_rss / 1024, 1), rss_mb_after=round(after_rss / 1024, 1),
            peak_rss_mb=stats["peak_rss_mb"], fds_before=base_fds, fds_after=after_fds,
            peak_fds=stats["peak_fds"], watcher_round_trips=stats["watch_ok"],
            rss_mb_quarters=[round(stats.get(f"q{i}", 0) / 1024, 1) for i in (1, 2, 3)])  # fmt: skip
