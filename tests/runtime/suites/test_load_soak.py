"""Load and soak: 1,000 concurrent streams through one runtime; a 10-minute soak with
the runtime's RSS and open file descriptors flat.

The load test runs in CI at full size (1,000 streams). The soak is marked ``slow`` and
runs only with ``VASTAR_SUITES=full`` (``VASTAR_SOAK_S`` sets its length, default 600 s):
a mixed load of buffered and streamed requests, early stream closes, cancellations,
deadlines, injected upstream faults, connection churn and now and then a hostile
connection, with the runtime's RSS and descriptors sampled every 5 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from fuzzing import Hostile
from vastar_fast import AsyncRuntimeClient, ConnectorException, HTTPRequest
from vastar_fast.types import RuntimeConfig

from ..helpers import Daemon, Raw
from ..upstream import wait_until
from .conftest import FULL, optional_int, simulator
from .wire import Sampler, Wire

STREAMS = 1000
CLIENTS = 4


@pytest.fixture
def descriptors() -> Iterator[None]:
    """Room for a thousand upstream sockets in the children (they inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if want < 4 * STREAMS:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {STREAMS} streams")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def chat(url: str, i: int, stream: bool, **headers: str) -> HTTPRequest:
    body = json.dumps({"model": "gpt-4", "stream": stream,
                       "messages": [{"role": "user", "content": f"stream {i}"}]})  # fmt: skip
    return HTTPRequest("POST", url, headers={"Content-Type": "application/json", **headers},
                       body=body)  # fmt: skip


def test_a_thousand_concurrent_streams(tmp_path: Path, services: List[Any], descriptors: None,
                                       figures: Callable[..., None]) -> None:  # fmt: skip
    tokens = 30
    sim = simulator(tmp_path / "sim", "--answer-tokens", str(tokens), ttft_ms=2000,
                    token_delay_ms=30)  # fmt: skip
    services.append(sim)
    url = sim.url + "/v1/chat/completions"
    config = {"limits": {"credits_per_connection": 1024, "max_connections": 2048},
              "http": {"pool_limit": 2048, "per_host_limit": 2048},
              "tenants": {"default": {"max_concurrent": 5000}}}  # fmt: skip
    with Daemon(tmp_path / "rt", config, log_level="WARNING") as d:
        assert d.proc is not None
        pid = d.proc.pid

        async def main() -> Dict[str, Any]:
            cfg = RuntimeConfig(socket_path=d.socket_path, timeout_ms=120000)
            clients = [AsyncRuntimeClient(cfg) for _ in range(CLIENTS)]
            for c in clients:
                await c.connect()
            sampler = Sampler(pid, 0.2).start()
            peak = 0

            async def one(i: int) -> List[bytes]:
                async with clients[i % CLIENTS].stream_http(chat(url, i, True)) as s:
                    assert s.status_code == 200
                    return [c async for c in s]

            t0 = time.monotonic()
            tasks = [asyncio.ensure_future(one(i)) for i in range(STREAMS)]
            with Raw(d.socket_path) as raw:  # the runtime's own count of requests in flight
                while not all(t.done() for t in tasks) and time.monotonic() - t0 < 120:
                    active = (await asyncio.to_thread(raw.health)).active_requests
                    peak = max(peak, active)
                    if peak == STREAMS:
                        break
                    await asyncio.sleep(0.05)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 180)
            elapsed = time.monotonic() - t0
            await sampler.stop()
            for c in clients:
                await c.close()
            return {"results": results, "peak": peak, "seconds": elapsed,
                    "rss": sampler.peak_rss_mb, "fds": sampler.peak_fds}  # fmt: skip

        out = asyncio.run(asyncio.wait_for(main(), 300))
        assert d.proc.poll() is None
    assert out["peak"] == STREAMS, out["peak"]  # all in flight at once
    chunks = 0
    for i, pieces in enumerate(out["results"]):
        text = b"".join(pieces).decode()
        events = [json.loads(line[6:]) for line in text.split("\n\n")
                  if line.startswith("data: {")]  # fmt: skip
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                          if e.get("choices"))  # fmt: skip
        assert text.endswith("data: [DONE]\n\n"), (i, text[-200:])
        assert events[-1]["choices"][0]["finish_reason"] == "stop" or any(
            e.get("choices") and e["choices"][0].get("finish_reason") == "stop" for e in events
        )
        assert content, i
        chunks += len(pieces)
    figures("load", concurrent_streams=out["peak"], seconds=round(out["seconds"], 1),
            chunks=chunks, peak_rss_mb=round(out["rss"], 1), peak_fds=out["fds"])  # fmt: skip


# ---------------------------------------------------------------------- the soak
async def _soak_load(path: str, url: str, until: float, seed: int,
                     counts: Counter[str]) -> None:  # fmt: skip
    """Mixed traffic until ``until`` (loop time); counts what happened."""
    rng = random.Random(seed)
    cfg = RuntimeConfig(socket_path=path, timeout_ms=10000)

    async def worker(index: int) -> None:
        local = random.Random(seed * 100 + index)
        client = AsyncRuntimeClient(cfg)
        done = 0
        while time.monotonic() < until:
            pick = local.randrange(100)
            i = local.randrange(1 << 30)
            req = chat(url, i, pick >= 40)
            try:
                if pick < 40:  # buffered
                    r = await client.execute_http(req)
                    counts[f"buffered {r.status_code}"] += 1
                elif pick < 75:  # streamed to the end
                    async with client.stream_http(req) as s:
                        n = len([c async for c in s])
                    counts["streamed"] += 1 if n else 0
                elif pick < 85:  # stream left after its first chunk
                    async with client.stream_http(req) as s:
                        async for _ in s:
                            break
                    counts["stream closed early"] += 1
                elif pick < 92:  # a cancelled request
                    task = asyncio.ensure_future(client.execute_http(req))
                    await asyncio.sleep(local.random() * 0.05)
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                    counts["cancelled"] += 1
                elif pick < 97:  # a deadline that passes (a stalled upstream)
                    req = chat(url, i, False, **{"x-simulator-fault": "stall"})
                    req.timeout_ms = 200
                    try:
                        await client.execute_http(req)
                    except ConnectorException as exc:
                        counts[f"stall {exc.error_class.name}"] += 1
                else:
                    h = await client.health_check()
                    counts["health"] += 1 if h.healthy else 0
            except ConnectorException as exc:  # injected faults that fail a request
                counts[f"failed {exc.error_class.name}"] += 1
            done += 1
            if done % 200 == 0:  # connection churn
                await client.close()
                client = AsyncRuntimeClient(cfg)
        await client.close()

    async def hostile() -> None:
        gen = Hostile(seed)
        while time.monotonic() < until:
            w = await Wire.open(path, strict=False)
            try:
                w.writer.write(b"".join(gen.item() for _ in range(rng.randint(1, 30))) + gen.tail())
                await asyncio.wait_for(w.eof.wait(), 5)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            finally:
                await w.close()
            counts["hostile connections"] += 1
            await asyncio.sleep(1.0)

    await asyncio.gather(hostile(), *(worker(i) for i in range(32)))


SOAK_S = optional_int("VASTAR_SOAK_S") or 600


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 300)  # above pytest-timeout's 300 s default
@pytest.mark.skipif(not FULL, reason="the soak runs with VASTAR_SUITES=full (10 minutes)")
def test_soak_keeps_rss_and_descriptors_flat(tmp_path: Path, services: List[Any],
                                             figures: Callable[..., None]) -> None:  # fmt: skip
    seconds = SOAK_S
    sim = simulator(tmp_path / "sim", "--answer-tokens", "40", "--tokens-per-chunk", "4",
                    "--fault-rate", "0.05", "--seed", "11", "--fault-kinds",
                    "rate_limit,server_error,disconnect,malformed,truncate,duplicate,overloaded",
                    "--stall-max-s", "5", ttft_ms=5, token_delay_ms=2)  # fmt: skip
    services.append(sim)
    config = {"breaker": {"failure_threshold": 1_000_000},
              "tenants": {"default": {"max_concurrent": 5000}}}  # fmt: skip
    counts: Counter[str] = Counter()
    with Daemon(tmp_path / "rt", config, log_level="WARNING") as d:
        assert d.proc is not None

        async def main() -> Sampler:
            sampler = Sampler(d.proc.pid, 5.0).start()  # type: ignore[union-attr]
            await _soak_load(d.socket_path, sim.url + "/v1/chat/completions",
                             time.monotonic() + seconds, 5, counts)  # fmt: skip
            await asyncio.sleep(2)
            sampler.sample()
            await sampler.stop()
            return sampler

        sampler = asyncio.run(main())
        assert d.proc.poll() is None, "the runtime died"
        with Raw(d.socket_path) as raw:
            assert wait_until(lambda: raw.health().active_requests == 0, 15)
        assert d.terminate() == 0
    samples = sampler.samples
    t0 = samples[0][0]
    warm = [s for s in samples if s[0] - t0 >= 60]  # after a minute of warm-up
    first = [s for s in warm if s[0] - warm[0][0] < 60]
    last = [s for s in warm if samples[-1][0] - s[0] < 60]
    rss_first = statistics.median(s[1] for s in first) / 1024
    rss_last = statistics.median(s[1] for s in last) / 1024
    fds_first, fds_last = max(s[2] for s in first), max(s[2] for s in last)
    total = sum(counts.values())
    figures("soak", seconds=seconds, operations=total, outcomes=dict(counts),
            peak_rss_mb=round(sampler.peak_rss_mb, 1), rss_mb_first_minute=round(rss_first, 1),
            rss_mb_last_minute=round(rss_last, 1), peak_fds=sampler.peak_fds,
            fds_first_minute=fds_first, fds_last_minute=fds_last,
            samples=len(samples))  # fmt: skip
    assert total > seconds * 10, counts  # the load really ran
    assert rss_last - rss_first < 16, (rss_first, rss_last)  # flat: no growth with time
    assert fds_last <= fds_first + 8, (fds_first, fds_last)
