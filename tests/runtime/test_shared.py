"""Shared state of the worker processes: atomic cells, tenant counts, breakers.

Each test runs on both twins of the cells (CPU atomics, and a lock around each
operation), in one process and across forked processes.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from types import ModuleType
from typing import Callable, Iterator, List

import pytest

from vastar_fast.runtime import _atomics_py, shared
from vastar_fast.runtime.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen, Breakers
from vastar_fast.runtime.shared import SharedState

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need fork (Unix)")


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("vastar_fast.runtime._atomics_c")
    except ImportError:
        pytest.skip("vastar_fast.runtime._atomics_c is not built (python setup.py build_ext)")


@pytest.fixture(params=["pure", "compiled"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    mod = _atomics_py if request.param == "pure" else _compiled()
    monkeypatch.setattr(shared, "Cells", mod.Cells)
    monkeypatch.setattr(sys.modules["vastar_fast.runtime.breaker"], "Cells", mod.Cells)
    yield request.param


def test_cells_semantics(twin: str) -> None:
    c = shared.Cells(bytearray(32))
    assert len(c) == 4 and c.load(0) == 0
    c.store(1, -5)
    assert c.load(1) == -5 and c.add(1, 7) == 2 and c.load(1) == 2
    assert c.cas(1, 2, 40) is True and c.load(1) == 40
    assert c.cas(1, 2, 50) is False and c.load(1) == 40
    c.store(3, 2**62)
    assert c.load(3) == 2**62
    with pytest.raises(IndexError):
        c.load(4)
    with pytest.raises(IndexError):
        c.store(-1, 0)
    with pytest.raises(ValueError):
        shared.Cells(bytearray(12))


def test_tenant_limits_and_release(twin: str) -> None:
    s = SharedState(tenant_slots=16, breaker_slots=1)
    a, b = s.tenant_key("a"), s.tenant_key("b")
    slots = [s.tenant_acquire(a, 3) for _ in range(3)]
    assert all(x >= 0 for x in slots) and len(set(slots)) == 1
    assert s.tenant_acquire(a, 3) == -1 and s.tenant_count(a) == 3
    assert s.tenant_acquire(b, 1) >= 0 and s.tenant_acquire(b, 1) == -1  # its own count
    s.tenant_release(slots[0])
    assert s.tenant_count(a) == 2 and s.tenant_acquire(a, 3) == slots[0]
    assert s.tenant_acquire(a, 0) == -1  # a limit of 0 admits nothing


def test_idle_slots_are_reused_and_a_full_table_refuses(twin: str) -> None:
    s = SharedState(tenant_slots=4, breaker_slots=1)
    keys = [s.tenant_key(f"t{i}") for i in range(6)]
    held = [s.tenant_acquire(k, 5) for k in keys[:4]]
    assert sorted(held) == [0, 1, 2, 3]  # every slot busy
    assert s.tenant_acquire(keys[4], 5) == -2  # no room: refused, not let through uncounted
    s.tenant_release(held[2])  # that tenant is idle now: its slot may be taken over
    taken = s.tenant_acquire(keys[4], 5)
    assert taken == held[2] and s.tenant_count(keys[4]) == 1
    assert s.tenant_count(keys[2]) == 0
    # the tenant that lost its idle slot finds another when one frees up
    s.tenant_release(held[0])
    assert s.tenant_acquire(keys[2], 5) == held[0]


def _in_children(n: int, body: Callable[[int], int]) -> List[int]:
    """Run ``body(i)`` in ``n`` forked children; their exit codes."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                code = body(i)
            finally:
                os._exit(code)
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


def test_tenant_limit_holds_across_processes(twin: str) -> None:
    s = SharedState(shared=True, tenant_slots=64, breaker_slots=1)
    key = s.tenant_key("busy")
    limit = 3

    def hammer(_: int) -> int:
        over = 0
        admitted = 0
        deadline = time.monotonic() + 10
        while admitted < 2000 and time.monotonic() < deadline:
            slot = s.tenant_acquire(key, limit)
            if slot >= 0:
                admitted += 1
                if s.tenant_count(key) > limit:
                    over += 1
                s.tenant_release(slot)
        return 0 if over == 0 and admitted > 0 else 3

    assert _in_children(4, hammer) == [0, 0, 0, 0]
    assert s.tenant_count(key) == 0  # every acquire was released: nothing leaked


def test_shared_breaker_opens_everywhere_and_admits_one_probe(twin: str) -> None:
    s = SharedState(shared=True, tenant_slots=1, breaker_slots=16)
    changes: List[str] = []
    breakers = Breakers(2, 0.3, shared=s, on_change=lambda h, st: changes.append(st))
    here = breakers.get("http://h:1")
    here.record_failure()
    here.record_failure()
    assert here.state == OPEN and changes == [OPEN]

    def sees_open(_: int) -> int:
        other = Breakers(2, 0.3, shared=s).get("http://h:1")  # another process's view
        try:
            other.check()
        except BreakerOpen as exc:
            return 0 if "is open after 2 consecutive" in exc.message else 4
        return 5

    assert _in_children(2, sees_open) == [0, 0]
    time.sleep(0.35)
    start = time.monotonic() + 0.2

    def race_for_the_probe(_: int) -> int:
        b = Breakers(2, 0.3, shared=s).get("http://h:1")
        while time.monotonic() < start:
            pass
        try:
            return 10 if b.check() else 11
        except BreakerOpen:
            return 12

    codes = _in_children(4, race_for_the_probe)
    assert sorted(codes) == [10, 12, 12, 12], codes  # exactly one probe among the processes
    assert here.state == HALF_OPEN and here.probing
    here.record_success()
    assert here.state == CLOSED and here.failures == 0


def test_breaker_beyond_the_table_is_local(twin: str) -> None:
    s = SharedState(tenant_slots=1, breaker_slots=1)
    breakers = Breakers(1, 1.0, shared=s)
    first = breakers.get("http://a:1")
    second = breakers.get("http://b:1")  # no shared slot left: a breaker of its own
    first.record_failure()
    assert first.state == OPEN and second.state == CLOSED
    assert isinstance(second, Breaker)
