"""Fleet quotas through real runtime daemons and a real Redis: charging and reconciling
from buffered and streamed answers, waiting and refusing, a provider 429 seen by another
runtime, Redis unreachable in each on_backend_failure mode and back again, and nothing
of it (not even an import of the quotas, the Redis client or redis) without quotas."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from redis_support import RedisServer
from vastar_fast.benchmarks.fleet_upstream import FleetUpstream
from vastar_fast.types import ErrorClass

from ..helpers import Daemon, Raw, child_env, stream_events
from ..upstream import wait_until


@pytest.fixture(scope="module")
def fleet_upstream(implementation: Optional[str]) -> Iterator[FleetUpstream]:
    server = FleetUpstream(latency_ms=5)
    try:
        yield server
    finally:
        server.close()


def quota_config(url: str, prefix: str, quotas: Dict[str, Dict[str, Any]],
                 **shared: Any) -> Dict[str, Any]:  # fmt: skip
    state = {"redis_url": url, "key_prefix": prefix, "heartbeat_s": 0.2, "retry_s": 0.2,
             "breaker_failures": 1, "timeout_ms": 200}  # fmt: skip
    state.update(shared)
    for q in quotas.values():
        q.setdefault("guard_ms", 0)
    return {"shared_state": state, "quotas": quotas, "limits": {"shutdown_grace_s": 2}}


def chat(max_tokens: int = 20, stream: bool = False, usage: bool = True) -> str:
    body: Dict[str, Any] = {"model": "m", "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": "hello there"}]}  # fmt: skip
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body)


def send(raw: Raw, url: str, body: str, timeout_ms: int = 20000, stream: bool = False,
         headers: Optional[Dict[str, str]] = None) -> Any:  # fmt: skip
    rid = raw.http("POST", url, headers={"content-type": "application/json", **(headers or {})},
                   body=body, timeout_ms=timeout_ms, stream=stream)  # fmt: skip
    return raw.response(rid, timeout=timeout_ms / 1000 + 10)


def test_charged_per_request_and_reconciled_from_the_answer(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, fleet_upstream: FleetUpstream
) -> None:
    up = fleet_upstream
    config = quota_config(redis_server.url, redis_prefix, {
        "up": {"hosts": [f"127.0.0.1:{up.port}"], "requests": 100, "tokens": 100_000,
               "window_s": 60, "bucket_ms": 100},
    }, heartbeat_s=30)  # fmt: skip
    url = up.base + "/v1/chat/completions"
    with Daemon(tmp_path / "d", config) as d, Raw(d.socket_path) as raw:
        before = len(up.arrivals())
        assert send(raw, url, chat()).error_class == 0  # buffered
        rid = raw.http("POST", url, headers={"content-type": "application/json"},
                       body=chat(stream=True), stream=True)  # fmt: skip
        raw.response(rid)
        events = stream_events(raw.events, rid)
        assert events[-1].error_class == 0 and len(events) > 2  # streamed
        used = [a[1] for a in up.arrivals()[before:]]
        assert len(used) == 2
        # reconciled after the answer went out (within a few ms, with the next call)
        assert wait_until(lambda: redis_server.totals(redis_prefix) == [2, sum(used)])
        # a stream without usage keeps its estimate (the body's bytes plus max_tokens)
        body = chat(max_tokens=30, stream=True, usage=False)
        rid = raw.http("POST", url, headers={"content-type": "application/json"}, body=body,
                       stream=True)  # fmt: skip
        raw.response(rid)
        assert wait_until(lambda: redis_server.totals(redis_prefix) ==
                          [3, sum(used) + len(body) + 30])  # fmt: skip
        # a host no quota names never reaches Redis
        calls = redis_server.script_calls()
        other = f"http://localhost:{up.port}/v1/chat/completions"
        for _ in range(3):
            assert send(raw, other, chat()).error_class == 0
        assert redis_server.script_calls() == calls


def test_over_quota_waits_for_its_turn_or_is_refused(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, fleet_upstream: FleetUpstream
) -> None:
    up = fleet_upstream
    config = quota_config(redis_server.url, redis_prefix, {
        "up": {"hosts": [f"127.0.0.1:{up.port}"], "requests": 2, "window_s": 1.5,
               "bucket_ms": 20},
    })  # fmt: skip
    url = up.base + "/v1/chat/completions"
    with Daemon(tmp_path / "d", config) as d, Raw(d.socket_path) as raw:
        before = len(up.arrivals())
        rids = [raw.http("POST", url, headers={"content-type": "application/json"},
                         body=chat(), timeout_ms=20000) for _ in range(3)]  # fmt: skip
        short = raw.http("POST", url, headers={"content-type": "application/json"},
                         body=chat(), timeout_ms=400)  # fmt: skip
        refused = raw.response(short, 10)
        assert all(raw.response(rid, 30).error_class == 0 for rid in rids)
        arrivals = [a[0] for a in up.arrivals()[before:]]
        assert len(arrivals) == 3
        assert arrivals[2] - arrivals[0] >= 1.45  # the third waited for the window
        assert refused.error_class == ErrorClass.RATE_LIMITED
        assert "quota 'up' is used up across the fleet" in refused.error_message
        assert "2 requests per 1.5 s (quotas.up.requests)" in refused.error_message
        assert "frees up in" in refused.error_message
        assert len(up.arrivals()) == before + 3


def test_a_provider_429_blocks_the_other_runtimes_too(
    tmp_path: Path, redis_server: RedisServer, redis_prefix: str, fleet_upstream: FleetUpstream
) -> None:
    up = fleet_upstream
    config = quota_config(redis_server.url, redis_prefix, {
        "up": {"hosts": [f"127.0.0.1:{up.port}"], "requests": 1000, "window_s": 60},
    })  # fmt: skip
    url = up.base + "/v1/chat/completions"
    with Daemon(tmp_path / "a", config) as a, Daemon(tmp_path / "b", config) as b, \
            Raw(a.socket_path) as ra, Raw(b.socket_path) as rb:  # fmt: skip
        got = send(ra, url, chat(), headers={"x-status": "429", "x-retry-after-ms": "1500"})
        assert got.error_class == 0 and json.loads(got.payload)["status_code"] == 429
        blocked_at = time.monotonic()
        assert wait_until(
            lambda: any(v.get("blk", 0) > 0 for v in redis_server.counters(redis_prefix).values())
        )
        refused = send(rb, url, chat(), timeout_ms=500)
        assert refused.error_class == ErrorClass.RATE_LIMITED
        assert "answered 429" in refused.error_message
        before = len(up.arrivals())
        assert send(rb, url, chat(), timeout_ms=10000).error_class == 0
        arrival = up.arrivals()[before][0]
        assert arrival - blocked_at >= 1.3  # after the provider's retry-after


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, "own").start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_unreachable_each_mode_then_back(
    tmp_path: Path, own_redis: RedisServer, redis_prefix: str
) -> None:
    ups = [FleetUpstream() for _ in range(3)]
    try:
        modes = ("open", "closed", "local_share")
        config = quota_config(own_redis.url, redis_prefix, {
            mode: {"hosts": [f"127.0.0.1:{up.port}"], "requests": 4, "window_s": 30,
                   "bucket_ms": 100, "on_backend_failure": mode}
            for mode, up in zip(modes, ups)
        })  # fmt: skip
        urls = {mode: up.base + "/v1/chat/completions" for mode, up in zip(modes, ups)}
        with Daemon(tmp_path / "d", config) as d, Raw(d.socket_path) as raw:
            for mode in modes:
                assert send(raw, urls[mode], chat()).error_class == 0
            own_redis.stop()
            start = time.monotonic()
            answers = {mode: [send(raw, urls[mode], chat(), timeout_ms=3000) for _ in range(5)]
                       for mode in modes}  # fmt: skip
            # nothing hung: every answer came well before its 3 s deadline
            assert time.monotonic() - start < 12
            assert all(a.error_class != ErrorClass.TIMEOUT for v in answers.values() for a in v)
            assert [a.error_class for a in answers["open"]] == [0] * 5  # uncounted
            closed = answers["closed"]
            assert all(a.error_class == ErrorClass.RATE_LIMITED for a in closed)
            assert "on_backend_failure: closed" in closed[0].error_message
            local = [a.error_class for a in answers["local_share"]]
            assert local == [0, 0, 0] + [ErrorClass.RATE_LIMITED] * 2  # 1 + 3 = 4 in 30 s
            assert "share while Redis cannot be reached" in answers["local_share"][-1].error_message
            # Redis comes back (empty): the runtime restores the counters and counts there
            own_redis.start()
            assert wait_until(lambda: own_redis.totals(redis_prefix)[0] >= 4, 15)
            assert send(raw, urls["closed"], chat()).error_class == 0
            assert wait_until(lambda: own_redis.totals(redis_prefix)[0] >= 5, 5)
    finally:
        for up in ups:
            up.close()


def test_without_quotas_redis_is_never_imported(tmp_path: Path,
                                                fleet_upstream: FleetUpstream) -> None:  # fmt: skip
    code = f"""
import sys
from vastar_fast import HTTPRequest, RuntimeClient, RuntimeConfig
from vastar_fast.runtime.embed import RuntimeServer
with RuntimeServer(socket_path={str(tmp_path / "rt.sock")!r}) as server:
    with RuntimeClient(RuntimeConfig(socket_path=server.socket_path)) as client:
        resp = client.execute_http(HTTPRequest("POST", {fleet_upstream.base + "/v1/chat/completions"!r},
                                               body={chat()!r}))
        assert resp.status_code == 200, resp.status_code
quota_modules = ("redis", "hiredis", "vastar_fast.runtime.quotas",
                 "vastar_fast.runtime.redisclient")
print("imported:", sorted(m for m in sys.modules
                          if m in quota_modules or m.startswith("redis.")))
"""
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stdout, out.stdout
