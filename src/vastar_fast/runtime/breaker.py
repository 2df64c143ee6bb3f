"""Per-upstream-host circuit breakers (closed -> open -> half-open -> closed).

Why not a library (re-evaluated against aiobreaker 1.2.0, pybreaker 1.4.1 and
purgatory 3.0.1): we need one breaker per host created on demand, failures classified
by the caller (a refused connection counts, an HTTP 500 or a client's own deadline does
not), exactly one probe in half-open state, and the time at which an open breaker will
probe again for the error message. None of the three admits a single probe: in
half-open state aiobreaker and purgatory let every concurrent call through (five
concurrent calls after the reset timeout: five upstream calls), so a host that has just
come back would take the whole backlog at once. pybreaker's async support goes through
Tornado and holds a threading lock around the call; purgatory's open error does not say
when it probes again and every call goes through its async message bus; aiobreaker has
no per-host factory. The state machine is small, runs on the event loop thread only (no
locks: compare-and-swap on its state word), and takes its clock as an argument so tests
can drive it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from vastar_fast.runtime.atomics import Cells

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = ["CLOSED", "HALF_OPEN", "MAX_BREAKERS", "OPEN", "Breaker", "BreakerOpen", "Breakers"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
"""Numbers for the Prometheus gauge."""


class BreakerOpen(Exception):
    """Raised by :meth:`Breaker.check` while the breaker refuses calls."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host
        self.message = message


MAX_BREAKERS = 10_000
"""Breakers kept per worker; beyond it, closed breakers without failures are dropped
(shared state stays in the shared table)."""

_CLOSED, _HALF_OPEN, _OPEN = 0, 1, 2
_NAMES = (CLOSED, HALF_OPEN, OPEN)
_PROBING = 4


@cython.cclass
class Breaker:
    """The breaker of one upstream host.

    Its state lives in three int64 cells (:mod:`.shared`): the host's key, a word
    ``failures << 3 | probing << 2 | state`` that only compare-and-swap changes, and the
    time it opened (ns of ``clock``). Given the cells of a :class:`.shared.SharedState`,
    every worker process sees and changes the same breaker; without, it has cells of its
    own. ``on_change(host, state)`` runs in the process that made the change.
    """

    host = cython.declare(str, visibility="public")
    threshold = cython.declare(cython.longlong, visibility="public")
    reset_timeout = cython.declare(cython.double, visibility="public")
    _clock: Any
    _on_change: Any
    _cells: Any
    _base: cython.Py_ssize_t

    def __init__(
        self,
        host: str,
        threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Optional[Callable[[str, str], None]] = None,
        cells: Optional[Any] = None,
        base: int = 0,
    ) -> None:
        self.host = host
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        if cells is None:
            cells, base = Cells(bytearray(24)), 0
        self._cells = cells
        self._base = base + 1  # the state word; the open time follows it

    # ---------------------------------------------------------------- reading
    @property
    def state(self) -> str:
        return _NAMES[self._cells.load(self._base) & 3]

    @property
    def failures(self) -> int:
        return int(self._cells.load(self._base) >> 3)

    @property
    def probing(self) -> bool:
        return bool(self._cells.load(self._base) & _PROBING)

    @property
    def opened_at(self) -> float:
        return float(self._cells.load(self._base + 1)) / 1e9

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        return max(0.0, self.opened_at + self.reset_timeout - self._clock())

    def _changed(self, state: str) -> None:
        if self._on_change is not None:
            self._on_change(self.host, state)

    # ---------------------------------------------------------------- the state machine
    def check(self) -> bool:
        """Admit a call or raise BreakerOpen. Returns True when the call is the probe."""
        cells, at = self._cells, self._base
        while True:
            word = cells.load(at)
            state = word & 3
            if state == _CLOSED:
                return False
            if state == _OPEN:
                wait = self.retry_in()
                if wait > 0:
                    raise BreakerOpen(
                        self.host,
                        f"circuit breaker for {self.host} is open after {word >> 3} "
                        f"consecutive connection failures; failing fast, it will probe the "
                        f"host again in {wait:.1f}s. Retry after that, or check that the "
                        "upstream is reachable",
                    )
                # half-open, and this caller is its single probe
                if cells.cas(at, word, (word >> 3 << 3) | _PROBING | _HALF_OPEN):
                    self._changed(HALF_OPEN)
                    return True
                continue
            if word & _PROBING:
                raise BreakerOpen(
                    self.host,
                    f"circuit breaker for {self.host} is half-open and a probe request is in "
                    "flight; failing fast until it succeeds. Retry in a moment",
                )
            if cells.cas(at, word, word | _PROBING):
                return True

    def record_success(self) -> None:
        cells, at = self._cells, self._base
        while True:
            word = cells.load(at)
            if word == 0:
                return  # closed, no failures, no probe: nothing to write (the usual case)
            if cells.cas(at, word, 0):
                if word & 3 != _CLOSED:
                    self._changed(CLOSED)
                return

    def record_failure(self) -> None:
        cells, at = self._cells, self._base
        while True:
            word = cells.load(at)
            failures = (word >> 3) + 1
            state = word & 3
            if state == _HALF_OPEN or failures >= self.threshold:
                cells.store(at + 1, int(self._clock() * 1e9))
                if cells.cas(at, word, failures << 3 | _OPEN):
                    if state != _OPEN:
                        self._changed(OPEN)
                    return
            elif cells.cas(at, word, failures << 3 | state):
                return

    def release_probe(self) -> None:
        """The probe ended without telling us about the host (cancelled, deadline)."""
        cells, at = self._cells, self._base
        while True:
            word = cells.load(at)
            if not word & _PROBING or cells.cas(at, word, word & ~_PROBING):
                return


@cython.cclass
class Breakers:
    """Breakers created on first use, one per host key (``scheme://host:port``); in the
    shared cells of ``shared`` when given (every worker sees the same breaker)."""

    threshold = cython.declare(cython.longlong, visibility="public")
    reset_timeout = cython.declare(cython.double, visibility="public")
    _clock: Any
    _on_change: Any
    _shared: Any
    _by_host: dict

    def __init__(
        self,
        threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Optional[Callable[[str, str], None]] = None,
        shared: Optional[Any] = None,
    ) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self._shared = shared
        self._by_host = {}

    def get(self, host: str) -> Breaker:
        found = self._by_host.get(host)
        if found is not None:
            return found
        cells, base = None, 0
        if self._shared is not None:
            slot = self._shared.breaker_slot(host)
            if slot >= 0:
                cells, base = self._shared.cells, slot
        breaker = Breaker(host, self.threshold, self.reset_timeout, self._clock,
                          self._on_change, cells, base)  # fmt: skip
        by_host = self._by_host
        if len(by_host) >= MAX_BREAKERS:
            # Hosts come from clients: forget the breakers that have nothing to remember.
            self._by_host = by_host = {
                h: b for h, b in by_host.items() if b.state != CLOSED or b.failures
            }
        by_host[host] = breaker
        return breaker

    def states(self) -> Dict[str, str]:
        return {host: b.state for host, b in self._by_host.items()}
