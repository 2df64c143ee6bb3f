"""The asyncio client against the real daemon: many requests multiplexed on one
connection, each answered with its own body, and a slow one overtaken by fast ones."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from vastar_fast import AsyncRuntimeClient, HTTPRequest, RuntimeConfig

from .helpers import Daemon
from .upstream import Upstream


def test_500_concurrent_requests_on_one_connection(tmp_path: Path, upstream: Upstream) -> None:
    # its own daemon: the health check's active_requests counts every connection's requests
    with Daemon(tmp_path, {"limits": {"credits_per_connection": 1024}}, log_level="WARNING") as d:
        _five_hundred(d, upstream)


def _five_hundred(daemon: Daemon, upstream: Upstream) -> None:
    async def main() -> None:
        config = RuntimeConfig(socket_path=daemon.socket_path, tenant_id="tests")
        async with AsyncRuntimeClient(config) as client:
            requests = [
                HTTPRequest("POST", upstream.base + "/echo", body=f"request {i}".encode())
                for i in range(500)
            ]
            responses = await asyncio.gather(*(client.execute_http(r) for r in requests))
            health = await client.health_check()
        assert [json.loads(r.body)["body"] for r in responses] == [
            f"request {i}" for i in range(500)
        ]
        assert len({r.request_id for r in responses}) == 500
        assert all(r.status_code == 200 for r in responses)
        assert health.supported and health.healthy and health.active_requests == 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_fast_requests_overtake_a_slow_one(daemon: Daemon, upstream: Upstream) -> None:
    async def main() -> None:
        config = RuntimeConfig(socket_path=daemon.socket_path, tenant_id="tests")
        async with AsyncRuntimeClient(config) as client:
            finished: list = []

            async def run(name: str, url: str) -> None:
                await client.execute_http(HTTPRequest("GET", url))
                finished.append((name, time.monotonic()))

            slow = asyncio.ensure_future(run("slow", upstream.base + "/slow?delay=1.5&key=o"))
            await asyncio.sleep(0.05)  # the slow request is in flight first
            await asyncio.gather(*(run(f"fast{i}", upstream.base + "/small") for i in range(20)))
            assert not slow.done()  # all 20 fast answers came while the slow one waits
            await slow
        assert [name for name, _ in finished][-1] == "slow"

    asyncio.run(asyncio.wait_for(main(), 30))
