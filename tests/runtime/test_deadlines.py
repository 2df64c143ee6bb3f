"""The runtime's deadlines on one shared timer (pipeline.Deadlines) and its count of
requests in flight (pipeline.InFlight), both twins."""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any, List, Tuple

import pytest

from .helpers import runtime_twin


@pytest.fixture(params=["pure", "compiled"])
def real_mod(request: pytest.FixtureRequest) -> ModuleType:
    return runtime_twin(request.param, "pipeline")


@pytest.fixture
def mod(real_mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The twin with no reader of the thread's CPU times (so this machine's load does not
    decide whether the tests' loops poll); the contention tests set their own."""
    monkeypatch.setattr(real_mod, "thread_schedstat", lambda: None)
    return real_mod


async def until_idle(counts: Any) -> Tuple[int, float]:
    """Turn the loop until the poller stops (at most 5 s): the turns and seconds it took."""
    turns = 0
    t0 = time.perf_counter()
    while counts.polling and time.perf_counter() - t0 < 5:
        await asyncio.sleep(0)  # one loop turn; the poller queues itself again
        turns += 1
    return turns, time.perf_counter() - t0


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


def test_inflight_polls_for_its_window_after_a_request_event(mod: ModuleType) -> None:
    """poll_after: a request's start keeps a callback queued (so the loop's waits do not
    sleep) until the window after the last event has passed, then none; stopping ends it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.started()
        assert not counts.polling  # no window: never polls
        counts.finished("t", 0, 0.0)
        counts.poll_after(loop, 0.05)
        assert counts.spin_s == 0.05 and not counts.polling
        counts.started()
        assert counts.polling
        turns, polled_for = await until_idle(counts)
        assert not counts.polling
        assert 0.04 <= polled_for < 2.0 and turns > 10
        counts.finished("t", 0, 0.0)
        counts.started()
        assert counts.polling
        counts.stopping = True
        for _ in range(3):
            await asyncio.sleep(0)
        assert not counts.polling
        with pytest.raises(ValueError, match="0 or more seconds"):
            counts.poll_after(loop, -1.0)

    asyncio.run(main())


def test_inflight_stops_polling_after_the_kind_of_event_whose_gaps_are_long(
    mod: ModuleType,
) -> None:
    """Requests that answer at once but come far apart (a paced client): after two ends
    followed by gaps longer than the window, an end no longer polls; a start still does;
    one short gap after an end makes ends poll again."""

    async def settle(counts: Any) -> float:
        return (await until_idle(counts))[1]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.poll_after(loop, 0.05)
        for _ in range(2):  # each end is followed by a gap longer than the window
            counts.started()
            counts.finished("t", 0, 0.0)
            assert counts.polling
            assert await settle(counts) >= 0.04
            await asyncio.sleep(0.03)
        counts.started()  # the second long gap after an end
        assert counts.polling  # starts have been followed by short gaps: poll
        counts.finished("t", 0, 0.0)
        assert await settle(counts) < 0.03  # ends have not: the poller stops at once
        counts.started()  # at once this time: a short gap after an end
        counts.finished("t", 0, 0.0)
        assert counts.polling and await settle(counts) >= 0.04

    asyncio.run(main())


def test_inflight_yields_the_cpu_once_after_each_event(
    mod: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first polling turn after a request event yields the CPU (so a peer the event's
    write woke runs at once); later turns of the same window do not."""
    yields: List[float] = []
    monkeypatch.setattr(mod, "_sched_yield", lambda: yields.append(time.perf_counter()))

    async def main() -> int:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.poll_after(loop, 0.02)
        counts.started()
        counts.finished("t", 0, 0.0)  # two events before the first turn: one yield
        turns, _ = await until_idle(counts)
        assert not counts.polling
        assert len(yields) == 1 and turns > 5
        counts.started()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(yields) == 2
        return turns

    asyncio.run(main())


def test_inflight_polls_once_however_many_events(mod: ModuleType) -> None:
    """Many starts and ends inside one window queue one poller, not one each."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.poll_after(loop, 0.02)
        for _ in range(50):
            counts.started()
            counts.finished("t", 0, 0.0)
        return len(loop._ready)  # type: ignore[attr-defined]

    assert asyncio.run(main()) == 1


def test_inflight_polls_only_while_it_waits_on_one_peer(mod: ModuleType) -> None:
    """With a second request in flight the loop does not poll (their events wake it, and
    a busy machine's clients need the CPU): a second start stops a running poller, an end
    that leaves one in flight does not start one, and the last end does."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.poll_after(loop, 0.5)
        counts.started()
        assert counts.polling  # one in flight: waiting on its upstream
        counts.started()  # a second: the running poller ends at its next turn
        t0 = time.perf_counter()
        assert (await until_idle(counts))[0] <= 1
        assert time.perf_counter() - t0 < 0.25  # long before the 0.5 s window
        counts.finished("t", 0, 0.0)  # one still in flight: no poller
        assert not counts.polling
        counts.finished("t", 0, 0.0)  # none in flight: wait for the client's next one
        assert counts.polling
        counts.started()
        counts.started()
        counts.finished("t", 0, 0.0)
        assert (await until_idle(counts))[0] <= 1
        assert counts.count == 1

    asyncio.run(main())


def test_inflight_does_not_poll_while_the_cpus_are_contended(mod: ModuleType) -> None:
    """Where the loop thread, runnable at least CONTENTION_MIN_RUNNABLE of the time since
    the last reading, spent more than CONTENDED_WAIT of that waiting for a CPU, polling
    stops; a reading without that wait turns it back on, and so does one of a thread
    that mostly slept (its waits were for wake-ups); the times are read at most every
    CONTENTION_CHECK_S, not per event."""
    times = [0.0, 0.0]  # seconds on a CPU, seconds waiting for one
    readings: List[Tuple[float, float]] = []
    gap = mod.CONTENTION_CHECK_S + 0.01  # wall time between readings: 0.06 s or more

    def schedstat() -> Tuple[float, float]:
        readings.append((times[0], times[1]))
        return times[0], times[1]

    async def reading(ran: float, waited: float, start: bool) -> None:
        await asyncio.sleep(gap)
        times[0] += ran
        times[1] += waited
        n = len(readings)
        if start:
            counts.started()
        else:
            counts.finished("t", 0, 0.0)
        assert len(readings) == n + 1

    counts = mod.InFlight()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts.poll_after(loop, 0.5)
        counts.schedstat = schedstat
        counts.started()  # the first reading: where the times are counted from
        assert counts.polling and not counts.contended and len(readings) == 1
        counts.finished("t", 0, 0.0)
        counts.started()
        assert len(readings) == 1  # events inside CONTENTION_CHECK_S read nothing
        await reading(0.040, 0.010, start=False)  # 10 ms of 50 ms runnable: contended
        assert counts.contended
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not counts.polling
        counts.started()  # still contended (no reading yet): no poller
        assert not counts.polling
        await reading(0.050, 0.004, start=False)  # 4 ms of 54 ms: free again
        assert not counts.contended and counts.polling
        await reading(0.040, 0.010, start=True)
        assert counts.contended
        await asyncio.sleep(0)  # the running poller sees it at its next turn
        await asyncio.sleep(0)
        assert not counts.polling
        # runnable 4 ms of 60 ms or more, half of it waiting: a thread that mostly slept
        await reading(0.002, 0.002, start=False)
        assert not counts.contended and counts.polling
        await reading(0.0, 0.0, start=True)  # neither ran nor waited: not contended
        assert not counts.contended

    asyncio.run(main())


def test_inflight_goes_on_when_the_cpu_times_cannot_be_read(mod: ModuleType) -> None:
    """A reader that fails (the thread's file gone) does not fail the request event that
    read it: contention is no longer checked, and polling follows the other rules."""

    def gone() -> Tuple[float, float]:
        raise FileNotFoundError("/proc/1/task/2/schedstat")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = mod.InFlight()
        counts.poll_after(loop, 0.05)
        counts.schedstat = gone
        counts.started()
        assert counts.count == 1 and counts.polling
        assert counts.schedstat is None and not counts.contended
        counts.finished("t", 0, 0.0)
        assert counts.count == 0

    asyncio.run(main())


def test_thread_schedstat_reads_the_kernel_where_it_says(real_mod: ModuleType) -> None:
    """Linux with scheduler statistics: a reader of this thread's seconds on a CPU and
    waiting for one, never going back; elsewhere None (polling is then never
    contended)."""
    import os
    import threading

    reader = real_mod.thread_schedstat()
    if not os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat"):
        assert reader is None
        return
    assert reader is not None
    ran, waited = reader()
    sum(range(500_000))
    ran2, waited2 = reader()
    assert isinstance(ran, float) and isinstance(waited, float)
    assert 0.0 < ran < ran2 < 1e7 and 0.0 <= waited <= waited2
