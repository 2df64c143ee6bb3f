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
locks), and takes its clock as an argument so tests can drive it.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker", "BreakerOpen", "Breakers"]

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


class Breaker:
    """The breaker of one upstream host."""

    __slots__ = (
        "_clock",
        "_on_change",
        "failures",
        "host",
        "opened_at",
        "probing",
        "reset_timeout",
        "state",
        "threshold",
    )

    def __init__(
        self,
        host: str,
        threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        self.host = host
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(self.host, state)

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        return max(0.0, self.opened_at + self.reset_timeout - self._clock())

    def check(self) -> bool:
        """Admit a call or raise BreakerOpen. Returns True when the call is the probe."""
        state = self.state
        if state == CLOSED:
            return False
        if state == OPEN:
            wait = self.retry_in()
            if wait > 0:
                raise BreakerOpen(
                    self.host,
                    f"circuit breaker for {self.host} is open after {self.failures} consecutive "
                    f"connection failures; failing fast, it will probe the host again in "
                    f"{wait:.1f}s. Retry after that, or check that the upstream is reachable",
                )
            self._set(HALF_OPEN)
            self.probing = False
        if self.probing:
            raise BreakerOpen(
                self.host,
                f"circuit breaker for {self.host} is half-open and a probe request is in "
                "flight; failing fast until it succeeds. Retry in a moment",
            )
        self.probing = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self.probing = False
        self._set(CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self._clock()
            self._set(OPEN)

    def release_probe(self) -> None:
        """The probe ended without telling us about the host (cancelled, deadline)."""
        self.probing = False


class Breakers:
    """Breakers created on first use, one per host key (``scheme://host:port``)."""

    def __init__(
        self,
        threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change
        self._by_host: Dict[str, Breaker] = {}

    def get(self, host: str) -> Breaker:
        breaker = self._by_host.get(host)
        if breaker is None:
            breaker = Breaker(
                host, self.threshold, self.reset_timeout, self._clock, self._on_change
            )
            self._by_host[host] = breaker
        return breaker

    def states(self) -> Dict[str, str]:
        return {host: b.state for host, b in self._by_host.items()}
