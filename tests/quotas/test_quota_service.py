"""The quota service against a real Redis, in process: admission, waiting in order,
refusals, reconciliation, provider headers, the heartbeat count, and every
on_backend_failure mode with Redis stopped and brought back."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import pytest

from redis_support import RedisServer
from vastar_fast.runtime.config import settings_from_mapping
from vastar_fast.runtime.metrics import Metrics
from vastar_fast.runtime.quotas import QuotaService, Ticket
from vastar_fast.runtime.shaping import parse_target

URL = "https://api.example.com/v1/chat/completions"


class Exchange:
    """What the pipeline's Exchange offers the quota service: go() and quota_refused()."""

    def __init__(self) -> None:
        self.went: List[float] = []
        self.refused: Optional[str] = None

    def go(self) -> None:
        self.went.append(time.monotonic())

    def quota_refused(self, message: str) -> None:
        self.refused = message


class Recorder(Metrics):
    def __init__(self) -> None:
        self.decisions: List[Tuple[str, str]] = []
        self.degraded: List[bool] = []

    def quota_decision(self, quota: str, decision: str) -> None:
        self.decisions.append((quota, decision))

    def quota_degraded(self, degraded: bool) -> None:
        self.degraded.append(degraded)


def settings(url: str, prefix: str, **quota: Any) -> Any:
    shared = {"redis_url": url, "key_prefix": prefix, "heartbeat_s": 0.2, "retry_s": 0.2,
              "breaker_failures": 1, "timeout_ms": 200}  # fmt: skip
    shared.update(quota.pop("shared", {}))
    q = {"hosts": ["api.example.com"], "window_s": 1, "bucket_ms": 20, "guard_ms": 0}
    q.update(quota)
    return settings_from_mapping({"shared_state": shared, "quotas": {"q": q}})


def body(max_tokens: int) -> bytes:
    return json.dumps({"model": "m", "max_tokens": max_tokens}).encode()


class Fleet:
    """Quota services (one per simulated runtime worker) on one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.services: List[QuotaService] = []

    async def add(self, config: Any) -> QuotaService:
        service = QuotaService(config, self.loop, Recorder())
        await service.start()
        self.services.append(service)
        return service

    def ticket(self, service: QuotaService, tokens: int = 0, deadline_s: float = 10.0,
               headers: Optional[Dict[str, str]] = None) -> Tuple[Ticket, Exchange]:  # fmt: skip
        ex = Exchange()
        t = service.ticket(ex, parse_target(URL), "POST", headers or {},
                           body(tokens) if tokens else b"", self.loop.time() + deadline_s)  # fmt: skip
        assert t is not None
        return t, ex

    async def close(self) -> None:
        for service in self.services:
            await service.close()


def run(test: Callable[[Fleet], Awaitable[None]]) -> None:
    async def main() -> None:
        fleet = Fleet(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(test(fleet), 60)
        finally:
            await fleet.close()

    asyncio.run(main())


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


# ---------------------------------------------------------------- with Redis up
def test_admits_within_the_limit_and_queues_the_rest_in_order(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async def test(fleet: Fleet) -> None:
        a = await fleet.add(settings(redis_server.url, redis_prefix, requests=3))
        b = await fleet.add(settings(redis_server.url, redis_prefix, requests=3))
        pairs = [fleet.ticket(a if i % 2 else b) for i in range(6)]
        for t, _ in pairs:
            t.admit()
        exs = [ex for _, ex in pairs]
        assert await until(lambda: sum(len(e.went) for e in exs) == 3)
        first = min(e.went[0] for e in exs if e.went)
        assert await until(lambda: all(e.went for e in exs))
        later = sorted(e.went[0] for e in exs)[3:]
        assert all(t >= first + 0.95 for t in later)  # not before a window has passed
        for worker in (a, b):  # each worker's waiting requests went in their order
            waited = [ex.went[0] for t, ex in pairs
                      if t.service is worker and ex.went[0] >= first + 0.95]  # fmt: skip
            assert waited == sorted(waited)
        assert redis_server.totals(redis_prefix)[0] <= 3

    run(test)


def test_refuses_when_the_turn_comes_after_the_deadline(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, requests=1, window_s=5,
                                       bucket_ms=50))  # fmt: skip
        t1, e1 = fleet.ticket(svc)
        t1.admit()
        assert await until(lambda: bool(e1.went))
        t2, e2 = fleet.ticket(svc, deadline_s=0.5)
        t2.admit()
        assert await until(lambda: e2.refused is not None)
        assert not e2.went
        assert "quota 'q'" in e2.refused
        assert "1 requests per 5 s (quotas.q.requests)" in e2.refused
        assert "frees up in" in e2.refused
        wait = float(e2.refused.split("frees up in ")[1].split(" s")[0])
        assert 3.5 < wait <= 5.1

    run(test)


def test_reconciliation_returns_unused_tokens(redis_server: RedisServer,
                                              redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, tokens=1000, window_s=30,
                                       bucket_ms=100))  # fmt: skip
        t1, e1 = fleet.ticket(svc, tokens=600)
        t1.admit()
        assert await until(lambda: bool(e1.went))
        cost = t1.cost_t
        assert cost == 600 + len(body(600))
        assert redis_server.totals(redis_prefix)[1] == cost
        t2, e2 = fleet.ticket(svc, tokens=600, deadline_s=20)
        t2.admit()
        await asyncio.sleep(0.3)
        assert not e2.went  # 1200 > 1000: it waits
        t1.done(200, b'{"usage": {"prompt_tokens": 30, "completion_tokens": 70}}')
        assert await until(lambda: bool(e2.went), 5)  # freed by the reconciliation
        assert await until(lambda: redis_server.totals(redis_prefix)[1] == 100 + t2.cost_t)
        t2.done(503, b'{"error": "overloaded"}')  # an error answer costs no tokens
        assert await until(lambda: redis_server.totals(redis_prefix) == [2, 100])

    run(test)


def test_a_request_larger_than_the_window_is_refused_at_once(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, tokens=100))
        calls = redis_server.script_calls()
        t, ex = fleet.ticket(svc, tokens=500)
        t.admit()
        assert (
            ex.refused is not None and "more than quota 'q' allows in a whole window" in ex.refused
        )
        assert redis_server.script_calls() == calls

    run(test)


def test_a_connection_that_never_carried_the_request_costs_nothing(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, requests=5, tokens=9999,
                                       window_s=30, bucket_ms=100))  # fmt: skip
        t, ex = fleet.ticket(svc, tokens=10)
        t.admit()
        assert await until(lambda ex=ex: bool(ex.went))
        assert redis_server.totals(redis_prefix) == [1, t.cost_t]
        t.failed(connect=True)
        assert await until(lambda: redis_server.totals(redis_prefix) == [0, 0])
        t.admit()  # the retry is charged again
        assert await until(lambda: len(ex.went) == 2)
        t.failed(connect=False)  # it may have reached the provider: the estimate stays
        t.close()
        await asyncio.sleep(0.2)
        assert redis_server.totals(redis_prefix) == [1, t.cost_t]

    run(test)


def test_a_provider_429_blocks_the_quota_fleet_wide(redis_server: RedisServer,
                                                    redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        a = await fleet.add(settings(redis_server.url, redis_prefix, requests=100, window_s=30,
                                     bucket_ms=100))  # fmt: skip
        b = await fleet.add(settings(redis_server.url, redis_prefix, requests=100, window_s=30,
                                     bucket_ms=100))  # fmt: skip
        t, ex = fleet.ticket(a)
        t.admit()
        assert await until(lambda ex=ex: bool(ex.went))
        t.head(429, [(b"Retry-After-Ms", b"1500"), (b"Retry-After", b"2")])
        t.done(429, b'{"error": {"message": "rate limited"}}')
        assert await until(
            lambda: any(v.get("blk", 0) > 0 for v in redis_server.counters(redis_prefix).values())
        )
        short, e_short = fleet.ticket(b, deadline_s=0.5)
        short.admit()
        assert await until(lambda: e_short.refused is not None)
        assert "answered 429" in e_short.refused and "retry-after" in e_short.refused
        start = time.monotonic()
        later, e_later = fleet.ticket(b, deadline_s=10)
        later.admit()
        assert await until(lambda: bool(e_later.went))
        assert e_later.went[0] - start >= 0.9  # the rest of the 1.5 s block

    run(test)


def test_remaining_headers_can_only_lower_what_is_left(redis_server: RedisServer,
                                                       redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, requests=100,
                                       tokens=10_000, window_s=30, bucket_ms=100))  # fmt: skip
        t, ex = fleet.ticket(svc, tokens=10)
        t.admit()
        assert await until(lambda ex=ex: bool(ex.went))
        t.head(200, [(b"x-ratelimit-remaining-requests", b"10"),
                     (b"x-ratelimit-remaining-tokens", b"9000"),
                     (b"x-ratelimit-reset-requests", b"20s")])  # fmt: skip
        assert await until(lambda: redis_server.totals(redis_prefix)[0] == 90)
        assert redis_server.totals(redis_prefix)[1] == 1000
        t.done(200, b'{"usage": {"total_tokens": 5}}')
        t2, ex2 = fleet.ticket(svc, tokens=10)
        t2.admit()
        assert await until(lambda: bool(ex2.went))
        # the first answer's reconciliation has reached Redis (it follows the answer)
        assert await until(lambda: not any(b.settles or b.settle_timer
                                           for b in svc._buckets.values())
                           and not svc.backend._inflight)  # fmt: skip
        before = redis_server.totals(redis_prefix)
        t2.head(200, [(b"x-ratelimit-remaining-requests", b"95"),
                      (b"x-ratelimit-remaining-tokens", b"9999")])  # fmt: skip
        await asyncio.sleep(0.2)
        assert redis_server.totals(redis_prefix) == before  # more left: nothing changes

    run(test)


def test_the_heartbeat_counts_live_workers(redis_server: RedisServer, redis_prefix: str) -> None:
    async def test(fleet: Fleet) -> None:
        config = settings(redis_server.url, redis_prefix, requests=10)
        services = [await fleet.add(config) for _ in range(3)]
        assert await until(lambda: all(s.live == 3 for s in services))
        await services[0].close()
        fleet.services.remove(services[0])
        assert await until(lambda: all(s.live == 2 for s in services[1:]))

    run(test)


def test_hosts_without_a_quota_get_no_ticket(redis_server: RedisServer,
                                             redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(
            settings(
                redis_server.url,
                redis_prefix,
                requests=10,
                api_keys=[],
                hosts=["*.example.com", "10.0.0.1:8080"],
            )
        )
        ex = Exchange()
        assert svc.ticket(ex, parse_target("https://example.org/x"), "GET", {}, b"", 1e9) is None
        assert svc.ticket(ex, parse_target("http://10.0.0.1:8081/x"), "GET", {}, b"", 1e9) is None
        assert svc.ticket(ex, parse_target("http://10.0.0.1:8080/x"), "GET", {}, b"", 1e9)
        assert svc.ticket(ex, parse_target("https://API.example.com/x"), "GET", {}, b"", 1e9)

    run(test)


def test_quotas_by_api_key(redis_server: RedisServer, redis_prefix: str) -> None:
    import hashlib

    digest = hashlib.sha256(b"sk-one").hexdigest()

    async def test(fleet: Fleet) -> None:
        config = settings(redis_server.url, redis_prefix, requests=1, window_s=30, bucket_ms=100,
                          per_key=True)  # fmt: skip
        svc = await fleet.add(config)
        for key in ("sk-one", "sk-two"):  # each key has the whole budget
            t, ex = fleet.ticket(svc, headers={"Authorization": f"Bearer {key}"})
            t.admit()
            assert await until(lambda ex=ex: bool(ex.went))
        keys = list(redis_server.counters(redis_prefix))
        assert len(keys) == 2 and any(k.endswith(digest[:32]) for k in keys)
        assert not any("sk-" in k for k in keys)  # never the raw key
        t, ex = fleet.ticket(svc, headers={"Authorization": "Bearer sk-one"}, deadline_s=0.3)
        t.admit()
        assert await until(lambda: ex.refused is not None)
        assert "for this API key" in ex.refused and "sk-one" not in ex.refused
        # api_keys: the quota covers only the listed keys
        only = settings(redis_server.url, redis_prefix + "k:", requests=1, api_keys=[digest])
        svc2 = await fleet.add(only)
        target = parse_target(URL)
        assert svc2.ticket(Exchange(), target, "POST", {"x-api-key": "sk-two"}, b"", 1e9) is None
        assert svc2.ticket(Exchange(), target, "POST", {"x-api-key": "sk-one"}, b"", 1e9)

    run(test)


# ---------------------------------------------------------------- with Redis down
@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, "own").start()
    try:
        yield server
    finally:
        server.stop()


def test_open_and_closed_modes_decide_at_once_without_redis(own_redis: RedisServer,
                                                            redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        opened = await fleet.add(settings(own_redis.url, redis_prefix, requests=2,
                                          on_backend_failure="open"))  # fmt: skip
        closed = await fleet.add(settings(own_redis.url, redis_prefix + "c:", requests=2,
                                          on_backend_failure="closed"))  # fmt: skip
        own_redis.stop()
        start = time.monotonic()
        for _ in range(5):  # beyond the limit: open lets everything through
            t, ex = fleet.ticket(opened)
            t.admit()
            assert await until(lambda ex=ex: bool(ex.went), 2)
        t, ex = fleet.ticket(closed)
        t.admit()
        assert await until(lambda: ex.refused is not None, 2)
        assert "cannot be reached" in ex.refused and "on_backend_failure: closed" in ex.refused
        assert time.monotonic() - start < 3  # the Redis deadline is 0.2 s: nothing hangs
        assert ("q", "open") in opened.metrics.decisions  # type: ignore[attr-defined]
        assert True in opened.metrics.degraded  # type: ignore[attr-defined]

    run(test)


def test_local_share_keeps_the_fleet_within_the_quota(own_redis: RedisServer,
                                                      redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        config = settings(own_redis.url, redis_prefix, requests=10, window_s=30, bucket_ms=100)
        a = await fleet.add(config)
        b = await fleet.add(config)
        assert await until(lambda: a.live == 2 and b.live == 2)
        spent = []
        for svc, n in ((a, 4), (b, 4)):  # 8 of 10 spent through Redis
            for _ in range(n):
                t, ex = fleet.ticket(svc)
                t.admit()
                spent.append(ex)
        assert await until(lambda: all(ex.went for ex in spent))
        await asyncio.sleep(0.5)  # a heartbeat copies the fleet's counters
        own_redis.stop()
        local = []
        for svc in (a, b, a, b, a, b):
            t, ex = fleet.ticket(svc, deadline_s=1.0)
            t.admit()
            local.append(ex)
        assert await until(lambda: all(ex.went or ex.refused for ex in local), 5)
        went = [ex for ex in local if ex.went]
        assert len(went) == 2  # (10 - 8) / 2 live workers: one each
        refused = [ex.refused for ex in local if ex.refused]
        assert all("share while Redis cannot be reached" in m for m in refused)
        # Redis comes back empty (a restart): the first worker back restores the counters
        own_redis.start()
        assert await until(lambda: a.state == 0 and b.state == 0, 10)  # counting in Redis
        assert own_redis.totals(redis_prefix)[0] == 10
        t, ex = fleet.ticket(a, deadline_s=0.5)
        t.admit()
        assert await until(lambda: ex.refused is not None)
        assert "across the fleet" in ex.refused

    run(test)


def test_local_share_counts_what_each_worker_spent_itself(own_redis: RedisServer,
                                                          redis_prefix: str) -> None:  # fmt: skip
    """A worker's copy of the counters may lack what the others admitted just before
    Redis went away, so a share also counts what the worker itself admitted in the
    window: limit / live at most."""

    async def test(fleet: Fleet) -> None:
        config = settings(own_redis.url, redis_prefix, requests=10, window_s=30, bucket_ms=100)
        a = await fleet.add(config)
        b = await fleet.add(config)
        assert await until(lambda: a.live == 2 and b.live == 2)
        spent = []
        for svc, n in ((a, 6), (b, 2)):  # 8 of 10, unevenly
            for _ in range(n):
                t, ex = fleet.ticket(svc)
                t.admit()
                spent.append(ex)
        assert await until(lambda: all(ex.went for ex in spent))
        await asyncio.sleep(0.5)  # a heartbeat copies the fleet's counters
        own_redis.stop()
        local = {a: [], b: []}
        for svc in (a, b, a, b):
            t, ex = fleet.ticket(svc, deadline_s=1.0)
            t.admit()
            local[svc].append(ex)
        assert await until(lambda: all(ex.went or ex.refused
                                       for exs in local.values() for ex in exs), 5)  # fmt: skip
        assert not any(ex.went for ex in local[a])  # 6 spent of its 5: both refused
        assert sum(1 for ex in local[b] if ex.went) == 1  # (10 - 8) / 2

    run(test)


def test_local_share_without_history_divides_by_the_live_count(own_redis: RedisServer,
                                                               redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        config = settings(own_redis.url, redis_prefix, requests=9, window_s=30, bucket_ms=100)
        services = [await fleet.add(config) for _ in range(3)]
        assert await until(lambda: all(s.live == 3 for s in services))
        own_redis.stop()
        exs = []
        for svc in services:
            for _ in range(5):
                t, ex = fleet.ticket(svc, deadline_s=0.5)
                t.admit()
                exs.append(ex)
        assert await until(lambda: all(ex.went or ex.refused for ex in exs), 5)
        assert sum(1 for ex in exs if ex.went) == 9  # 3 each
        assert all(s.metrics.decisions.count(("q", "local")) == 3  # type: ignore[attr-defined]
                   for s in services)  # fmt: skip

    run(test)


# ---------------------------------------------------------------- the Redis client
def test_the_client_pipelines_reloads_scripts_and_bounds_every_call(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from vastar_fast.runtime.redisclient import BackendError, RedisBackend

    async def main() -> None:
        loop = asyncio.get_running_loop()
        backend = RedisBackend(redis_server.url, 0.5, loop)
        script = backend.script("return {ARGV[1], tonumber(ARGV[2]) + 1, KEYS[1]}")
        redis_server.client().script_flush()  # NOSCRIPT first: EVAL follows
        results: List[Any] = []
        for i in range(20):  # one connection, every call in flight at once
            backend.call(script, ["k"], [f"v{i}", i], lambda r, e: results.append((r, e)))
        assert await until(lambda: len(results) == 20)
        assert results == [([f"v{i}".encode(), i + 1, b"k"], None) for i in range(20)]
        assert await backend.run(script, ["k"], ["x", 1]) == [b"x", 2, b"k"]
        failing = backend.script("return redis.error_reply('ERR nope')")
        with pytest.raises(BackendError, match="nope"):
            await backend.run(failing, [], [])
        assert await backend.run(script, ["k"], ["y", 2]) == [b"y", 3, b"k"]  # still usable
        await backend.close()

        # a server that accepts and never answers: the deadline fails the calls in flight
        silent = await asyncio.start_unix_server(lambda r, w: None, str(tmp_path / "s.sock"))
        backend = RedisBackend(f"unix://{tmp_path / 's.sock'}", 0.2, loop)
        errors: List[Any] = []
        for _ in range(3):
            backend.call(script, ["k"], ["z", 0], lambda r, e: errors.append(e))
        assert await until(lambda: len(errors) == 3, 5)
        assert all(isinstance(e, BackendError) and "did not answer within 200 ms" in str(e)
                   for e in errors)  # fmt: skip
        await backend.close()
        silent.close()
        # nothing listening: a failed connection is an error, not a hang
        backend = RedisBackend(f"unix://{tmp_path / 'none.sock'}", 0.2, loop)
        with pytest.raises(BackendError, match="cannot connect"):
            await backend.run(script, [], ["a", 1])
        await backend.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_busy_worker_admits_from_leases_without_a_round_trip_each(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Far from the limits, a worker admitting often fetches allowances ahead (leases,
    charged in Redis) and admits most requests from them; what a lease does not use
    goes back when it ends, so Redis ends up counting exactly what was admitted."""

    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, requests=100_000,
                                       window_s=30, bucket_ms=100, guard_ms=200))  # fmt: skip
        calls = redis_server.script_calls()
        exs = []
        for _ in range(200):
            t, ex = fleet.ticket(svc)
            t.admit()
            exs.append(ex)
            await asyncio.sleep(0.002)
        assert await until(lambda: all(ex.went for ex in exs))
        decisions = svc.metrics.decisions  # type: ignore[attr-defined]
        leased = decisions.count(("q", "lease"))
        assert leased > 100
        assert leased + decisions.count(("q", "admitted")) == 200
        assert redis_server.script_calls() - calls < 200
        assert await until(lambda: redis_server.totals(redis_prefix)[0] == 200, 5)

    run(test)


def test_leases_never_let_more_than_the_limit_through(redis_server: RedisServer,
                                                      redis_prefix: str) -> None:  # fmt: skip
    async def test(fleet: Fleet) -> None:
        svc = await fleet.add(settings(redis_server.url, redis_prefix, requests=40,
                                       window_s=30, bucket_ms=100, guard_ms=200))  # fmt: skip
        exs = []
        for _ in range(40):
            t, ex = fleet.ticket(svc)
            t.admit()
            exs.append(ex)
            await asyncio.sleep(0.002)
        assert await until(lambda: all(ex.went for ex in exs))
        t, ex = fleet.ticket(svc, deadline_s=0.5)
        t.admit()
        assert await until(lambda: ex.refused is not None)
        assert redis_server.totals(redis_prefix)[0] == 40
        assert sum(len(ex.went) for ex in exs) == 40

    run(test)
