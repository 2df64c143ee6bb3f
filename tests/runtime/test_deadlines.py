"""The runtime's deadlines on one shared timer (pipeline.Deadlines) and its count of
requests in flight (pipeline.InFlight), both twins."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any, List

import pytest

from .helpers import runtime_twin


@pytest.fixture(params=["pure", "compiled"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return runtime_twin(request.param, "pipeline")


class FakeExchange:
    def __init__(self, log: List[Any], name: str) -> None:
        self.log = log
        self.name = name
        self.deadline_slot = -1

    def cancel(self, reason: str) -> None:
        self.log.append((self.name, reason))

    def __hash__(self) -> int:
        return id(self)


def test_due_requests_are_cancelled_and_finished_ones_are_not(mod: ModuleType) -> None:
    async def main() -> List[Any]:
        loop = asyncio.get_running_loop()
        deadlines = mod.Deadlines(loop)
        log: List[Any] = []
        now = loop.time()
        a, b, c = (FakeExchange(log, n) for n in "abc")
        sa = deadlines.add(a, now + 0.05)
        sb = deadlines.add(b, now + 0.05)
        deadlines.add(c, now + 0.30)
        deadlines.discard(b, sb)  # b finished in time
        await asyncio.sleep(0.05 + 2 * mod.DEADLINE_TICK_S + 0.05)
        first = list(log)
        await asyncio.sleep(0.3)
        deadlines.close()
        return [first, list(log), sa]

    first, final, _ = asyncio.run(main())
    assert first == [("a", "deadline")]
    assert final == [("a", "deadline"), ("c", "deadline")]


def test_daemon_deadlines_fire_on_time(tmp_path: Any) -> None:
    """Through the daemon: a 300 ms deadline gives TIMEOUT soon after 300 ms, and a
    thousand requests that finish in time leave no timer work behind."""
    import time

    from vastar_fast.types import ErrorClass

    from .helpers import Daemon, Raw
    from .upstream import ScriptedUpstream, ok

    up = ScriptedUpstream({"/hang": lambda r: ["hang"], "/ok": lambda r: [ok(b"y")]})
    try:
        with Daemon(tmp_path, log_level="WARNING") as d, Raw(d.socket_path) as raw:
            for _ in range(200):
                assert raw.response(raw.http("GET", up.base + "/ok")).error_class == 0
            t0 = time.monotonic()
            r = raw.response(raw.http("GET", up.base + "/hang", timeout_ms=300))
            took = time.monotonic() - t0
    finally:
        up.close()
    assert r.error_class == ErrorClass.TIMEOUT
    assert 0.29 <= took < 3.0, took  # not before the deadline; the upper bound is loose


class FakeMetrics:
    def __init__(self) -> None:
        self.calls: List[Any] = []

    def in_flight(self, delta: int) -> None:
        self.calls.append(("in_flight", delta))

    def observe(self, tenant: str, error_class: int, seconds: float) -> None:
        self.calls.append(("observe", tenant, error_class, seconds))


def test_inflight_counts_and_wakes_the_drain_only_when_stopping(mod: ModuleType) -> None:
    counts = mod.InFlight()
    woken: List[int] = []
    counts.on_idle = lambda: woken.append(counts.count)
    counts.started()
    counts.started()
    counts.finished("t", 0, 0.5)
    counts.finished("t", 0, 0.5)
    assert counts.count == 0 and woken == []  # not stopping: nobody waits for idle
    counts.started()
    counts.stopping = True
    counts.finished("t", 2, 0.25)
    assert woken == [0]
    metrics = FakeMetrics()
    counts.metrics = metrics
    counts.started()
    counts.finished("acme", 5, 1.5)
    assert metrics.calls == [("in_flight", 1), ("in_flight", -1), ("observe", "acme", 5, 1.5)]
