"""A fleet: three runtime daemons sharing one Redis, three client threads each, against
an upstream that records when every request arrived (and its tokens); windows of 2 s.

The clients offer several times the quota. Whatever the timing of this machine, no
``window_s`` interval of arrivals may hold more than the quota's requests or tokens --
also after one runtime is killed (SIGKILL) while it holds reservations -- and no request
of the surviving runtimes may fail. The performance goals (how much of the quota is
used, the latency added) live in the benchmark
(``python -m vastar_fast.benchmarks.fleet_bench``), not here.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import pytest

from vastar_fast.benchmarks.fleet_bench import FleetSpec, run_fleet
from vastar_fast.services import redis_server_path

WINDOW_S = 2.0
REQUESTS = 24
TOKENS = 3000


def most_in_a_window(arrivals: Sequence[List[Any]], window_s: float) -> Tuple[int, int]:
    """The most requests and tokens among arrivals in any [t, t + window_s) that starts
    at an arrival (where a maximum always starts)."""
    ok = sorted((a for a in arrivals if a[2] != 429), key=lambda a: a[0])
    most_r = most_t = 0
    for i, first in enumerate(ok):
        inside = [a for a in ok[i:] if a[0] < first[0] + window_s]
        most_r = max(most_r, len(inside))
        most_t = max(most_t, sum(a[1] for a in inside))
    return most_r, most_t


def test_windows_are_counted_by_hand() -> None:
    arrivals = [[0.0, 10, 200, ""], [0.5, 20, 200, ""], [1.9, 5, 200, ""], [2.0, 99, 200, ""],
                [2.1, 1, 429, ""], [3.95, 7, 200, ""]]  # fmt: skip
    assert most_in_a_window(arrivals, 2.0) == (3, 124)  # [0, 2) or [0.5, 2.5); [0.5, 2.5)


@pytest.fixture
def needs_redis_server(implementation: Optional[str]) -> None:
    if redis_server_path() is None:
        pytest.skip("the fleet test needs Debian's redis-server (apt-get install "
                    "redis-server; .ci/run installs it)")  # fmt: skip


def test_a_fleet_keeps_every_window_within_the_quota(needs_redis_server: None) -> None:
    spec = FleetSpec(
        runtimes=3, clients=3, window_s=WINDOW_S, windows=3, requests=REQUESTS, tokens=TOKENS,
        latency_ms=150.0,  # 9 clients could send ~58 requests a second; the quota allows 12
        bucket_ms=20, guard_ms=50, prompt_bytes_per_token=1.0, deadline_ms=30_000,
        events=[(1.5 * WINDOW_S, "kill-runtime:2")],
    )  # fmt: skip
    result = run_fleet(spec)
    arrivals = [a for a in result.arrivals if a[2] == 200]
    tags = {a[3] for a in arrivals}
    assert tags == {"rt0", "rt1", "rt2"}  # every runtime spent from the one quota
    most_r, most_t = most_in_a_window(result.arrivals, WINDOW_S)
    assert most_r <= REQUESTS, f"{most_r} requests in one {WINDOW_S} s window"
    assert most_t <= TOKENS, f"{most_t} tokens in one {WINDOW_S} s window"
    assert len(arrivals) > REQUESTS  # more than one window's worth went through
    survivors = [r for r in result.records if r[3] != "rt2"]
    outcomes = {r[2] for r in survivors}
    assert outcomes == {"200"}, f"the surviving runtimes' requests ended {outcomes}"
    # the killed runtime held reservations: its requests were at the upstream unanswered
    killed_at = result.event_times["kill-runtime:2"]
    sent = [a[0] for a in arrivals if a[3] == "rt2" and a[0] <= killed_at]
    answered = [r for r in result.records if r[3] == "rt2" and r[2] == "200"
                and r[1] <= killed_at]  # fmt: skip
    assert len(sent) > len(answered)
