#!/usr/bin/env python3
"""The fleet quotas' benchmark: runtimes sharing one Redis against one upstream.

Starts, on loopback only: ``redis-server`` (127.0.0.1, a free port; no persistence), the
recording upstream (:mod:`.fleet_upstream`, in its own process), ``--runtimes``
``vastar runtime`` daemons (each ``--workers`` processes) with one quota on the upstream,
and ``--clients`` client threads per runtime, each sending chat completions one after
the other (``max_tokens`` drawn from 20-180) with a long deadline. The upstream answers
after ``latency`` ms, which is chosen so that the clients offer ``--offered`` times the
quota's requests. Then, from the upstream's own arrival times:

* ``quota``: the most requests and tokens seen in any ``window_s`` interval (every
  arrival starts one) against the limits, and the share of the quota used in each whole
  window after the first;
* ``tokens``: the same with the token limit binding (completions of 1 to ``max_tokens``
  tokens, so the estimates reserve more than is used until the answers reconcile: the
  share of the quota lost is about the requests in flight times what their estimates
  exceed their use by, which is why the estimate's ``prompt_bytes_per_token`` matters;
  ``--prompt-bytes-per-token``, 4 by default);
* ``redis-kill``: Redis killed (SIGKILL) in the third window and started again (empty)
  in the fourth, ``on_backend_failure: local_share``: failed requests, the windows, and
  how long after Redis came back every runtime counted in it again (their
  ``vastar_runtime_quota_degraded`` metric);
* ``runtime-kill``: one runtime killed (SIGKILL) in the third window while its requests
  are at the upstream: the windows after it (its reservations stay counted);
* ``latency``: the same fleet with the quota far from binding and an upstream that
  answers at once, interleaved with runs without quotas: the latency a quota adds per
  request (p50, p99; medians of the runs), with Redis on loopback TCP.

Usage::

    python -m vastar_fast.benchmarks.fleet_bench [--quick] [--json FILE]
        [--scenarios quota,tokens,redis-kill,runtime-kill,latency]

Needs Debian's ``redis-server`` and the ``redis`` extra. Exit status 1 when a goal is
missed (at most the quota in every window, >= 90 % used, no failed request with Redis
killed, counting resumed within 5 s, p50 <= 0.5 ms and p99 <= 2 ms added).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vastar_fast.services import (
    ServiceProcess,
    free_port,
    http_ready,
    make_tmpdir,
    redis_service,
    runtime_service,
)

__all__ = ["FleetSpec", "analyse", "main", "run_fleet"]

Arrival = List[Any]  # [monotonic time, tokens, status, tag]


@dataclass
class FleetSpec:
    """One fleet run."""

    runtimes: int = 3
    workers: int = 1
    clients: int = 4
    window_s: float = 5.0
    requests: Optional[int] = 60
    tokens: Optional[int] = 20_000
    windows: int = 6
    """How long the clients send, in windows."""
    latency_ms: float = 333.0
    mode: str = "local_share"
    bucket_ms: Optional[float] = None
    guard_ms: float = 50.0
    prompt_bytes_per_token: float = 4.0
    """The quota's estimate of the prompt (``quotas.<name>.prompt_bytes_per_token``): 4,
    as for English text; the fleet upstream counts the messages' JSON / 4 (floored),
    which the whole body / 4 always exceeds, so the estimate still never falls short."""
    deadline_ms: int = 60_000
    quotas: bool = True
    requests_per_client: Optional[int] = None
    """Stop each client after this many requests (the latency runs) instead of a time."""
    interval_ms: float = 0.0
    """Each client sends a request every ``interval_ms`` (0: as soon as the last ends)."""
    events: List[Tuple[float, str]] = field(default_factory=list)
    """(seconds after the start, "kill-redis" / "start-redis" / "kill-runtime:N")."""
    log_level: str = "WARNING"


@dataclass
class FleetResult:
    spec: FleetSpec
    start: float
    end: float
    arrivals: List[Arrival]
    records: List[Tuple[float, float, str, str]]
    """(sent, answered, outcome, tag) per request: the HTTP status or error:CLASS."""
    event_times: Dict[str, float]
    resumed_after_s: Optional[float] = None


def _metric(port: int, name: str) -> Optional[float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
    return float(found.group(1)) if found else None


def _client(socket_path: str, url: str, tag: str, seed: int, spec: FleetSpec,
            stop: threading.Event, records: List[Tuple[float, float, str, str]]) -> None:  # fmt: skip
    from vastar_fast import ConnectorException, HTTPRequest, RuntimeClient, RuntimeConfig

    rng = random.Random(seed)
    sent = 0
    interval = spec.interval_ms / 1000.0
    next_at = time.monotonic() + rng.random() * interval
    with RuntimeClient(RuntimeConfig(socket_path=socket_path, timeout_ms=spec.deadline_ms)) as c:
        while not stop.is_set():
            if spec.requests_per_client is not None and sent >= spec.requests_per_client:
                return
            sent += 1
            if interval:
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                next_at += interval
            body = json.dumps({
                "model": "gpt-4o-mini",
                "max_tokens": rng.randint(20, 180),
                "messages": [{"role": "user", "content": f"question {rng.randint(1, 10**6)}"}],
            })  # fmt: skip
            t0 = time.monotonic()
            try:
                resp = c.execute_http(HTTPRequest(
                    "POST", url, headers={"content-type": "application/json", "x-tag": tag},
                    body=body))  # fmt: skip
                outcome = str(resp.status_code)
            except ConnectorException as exc:
                outcome = f"error:{exc.get_error_class_name()}"
                if stop.is_set():
                    return
            records.append((t0, time.monotonic(), outcome, tag))


def run_fleet(spec: FleetSpec, directory: Optional[str] = None) -> FleetResult:
    """Start everything, run the clients (and the events), stop everything."""
    tmp = directory or make_tmpdir("vastar-fleet-")
    redis_port = free_port()
    redis = redis_service(tmp, port=redis_port)
    up_port = free_port()
    upstream = ServiceProcess(
        "fleet-upstream",
        [sys.executable, "-m", "vastar_fast.benchmarks.fleet_upstream", "--port", str(up_port),
         "--latency-ms", f"{spec.latency_ms:g}"],
        log_path=os.path.join(tmp, "upstream.log"),
        ready=http_ready("127.0.0.1", up_port, "/health"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
    config: Dict[str, Any] = {
        "log_level": spec.log_level,
        "metrics_port": 0,
        "limits": {"shutdown_grace_s": 2},
    }
    if spec.quotas:
        quota: Dict[str, Any] = {
            "hosts": [f"127.0.0.1:{up_port}"],
            "window_s": spec.window_s,
            "guard_ms": spec.guard_ms,
            "on_backend_failure": spec.mode,
            "prompt_bytes_per_token": spec.prompt_bytes_per_token,
        }
        if spec.requests is not None:
            quota["requests"] = spec.requests
        if spec.tokens is not None:
            quota["tokens"] = spec.tokens
        if spec.bucket_ms is not None:
            quota["bucket_ms"] = spec.bucket_ms
        config["shared_state"] = {"redis_url": redis.url, "heartbeat_s": 0.5, "retry_s": 0.5,
                                  "timeout_ms": 100}  # fmt: skip
        config["quotas"] = {"fleet": quota}
    config_path = os.path.join(tmp, "runtime.json")  # JSON is YAML
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    runtimes: List[ServiceProcess] = []
    threads: List[Tuple[threading.Thread, threading.Event]] = []
    records: List[Tuple[float, float, str, str]] = []
    event_times: Dict[str, float] = {}
    resumed: Optional[float] = None
    try:
        redis.start()
        upstream.start()
        for i in range(spec.runtimes):
            rt = runtime_service(tmp, name=f"rt{i}", config_path=config_path,
                                 workers=spec.workers, log_level=spec.log_level,
                                 startup_timeout_s=60)  # fmt: skip
            rt.start()
            runtimes.append(rt)
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{up_port}/_arrivals", method="DELETE"),
            timeout=5).close()  # fmt: skip
        time.sleep(0.6)  # a heartbeat: every runtime counted in
        start = time.monotonic()
        for i, rt in enumerate(runtimes):
            stop = threading.Event()
            for j in range(spec.clients):
                assert rt.socket_path is not None
                th = threading.Thread(target=_client, args=(rt.socket_path, url, f"rt{i}",
                                      i * 1000 + j, spec, stop, records), daemon=True)  # fmt: skip
                th.start()
                threads.append((th, stop))
        end = start + spec.windows * spec.window_s
        for at, what in sorted(spec.events):
            while time.monotonic() < start + at:
                time.sleep(0.005)
            event_times[what] = time.monotonic()
            if what == "kill-redis":
                redis.kill()
                redis.stop(0.5)
                redis = redis_service(tmp, port=redis_port)  # the same port, empty
            elif what == "start-redis":
                redis.start()
                resumed = _wait_resumed(runtimes, time.monotonic() + 30)
            elif what.startswith("kill-runtime:"):
                index = int(what.split(":")[1])
                _until_holding(up_port, f"rt{index}", spec.latency_ms / 2000.0,
                               time.monotonic() + spec.window_s)  # fmt: skip
                event_times[what] = time.monotonic()
                for _th, stop in threads[index * spec.clients : (index + 1) * spec.clients]:
                    stop.set()
                runtimes[index].kill()
        if spec.requests_per_client is None:
            while time.monotonic() < end:
                time.sleep(0.01)
            for _, stop in threads:
                stop.set()
        for th, _ in threads:
            th.join(spec.deadline_ms / 1000 + 30)
        end = min(end, time.monotonic())
        with urllib.request.urlopen(f"http://127.0.0.1:{up_port}/_arrivals", timeout=10) as r:
            arrivals = json.loads(r.read())
    finally:
        for rt in runtimes:
            rt.stop(5)
        upstream.stop()
        redis.stop()
        if directory is None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = FleetResult(spec, start, end, arrivals, records, event_times, resumed)
    if resumed is not None:
        result.resumed_after_s = resumed - event_times["start-redis"]
    return result


def _until_holding(port: int, tag: str, recent_s: float, deadline: float) -> None:
    """Wait until a request of ``tag`` reached the upstream less than ``recent_s`` ago
    (it is being answered: its runtime holds its reservation)."""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_arrivals", timeout=5) as r:
            mine = [a[0] for a in json.loads(r.read()) if a[3] == tag]
        if mine and time.monotonic() - mine[-1] < recent_s:
            return
        time.sleep(0.002)


def _wait_resumed(runtimes: Sequence[ServiceProcess], deadline: float) -> Optional[float]:
    """When every live runtime's quotas count in Redis again (degraded metric 0)."""
    while time.monotonic() < deadline:
        degraded = []
        for rt in runtimes:
            if not rt.alive():
                continue
            port = rt.info.get("metrics_port")
            if isinstance(port, int):
                degraded.append(_metric(port, "vastar_runtime_quota_degraded"))
        if degraded and all(d == 0 for d in degraded):
            return time.monotonic()
        time.sleep(0.05)
    return None


def analyse(arrivals: Sequence[Arrival], window_s: float, requests: Optional[int],
            tokens: Optional[int], start: float, end: float) -> Dict[str, Any]:  # fmt: skip
    """The most requests and tokens in any ``window_s`` interval of arrivals, and the
    share of the quota used in each whole window after the first (warm-up)."""
    ok = sorted((a for a in arrivals if a[2] != 429), key=lambda a: a[0])
    times = [a[0] for a in ok]
    toks = [a[1] for a in ok]
    max_r = max_t = 0
    j = 0
    running = 0
    for i in range(len(times)):  # windows [t_i, t_i + window_s)
        while j < len(times) and times[j] < times[i] + window_s:
            running += toks[j]
            j += 1
        max_r = max(max_r, j - i)
        max_t = max(max_t, running)
        running -= toks[i]
    used_r: List[float] = []
    used_t: List[float] = []
    k = 1
    while start + (k + 1) * window_s <= end + 1e-9:
        lo, hi = start + k * window_s, start + (k + 1) * window_s
        inside = [a for a in ok if lo <= a[0] < hi]
        if requests:
            used_r.append(len(inside) / requests)
        if tokens:
            used_t.append(sum(a[1] for a in inside) / tokens)
        k += 1
    return {
        "arrivals": len(ok),
        "max_requests_in_a_window": max_r,
        "max_tokens_in_a_window": max_t,
        "requests_limit": requests,
        "tokens_limit": tokens,
        "within_quota": (requests is None or max_r <= requests)
        and (tokens is None or max_t <= tokens),
        "requests_used_per_window": [round(u, 3) for u in used_r],
        "tokens_used_per_window": [round(u, 3) for u in used_t],
    }


def _outcomes(records: Sequence[Tuple[float, float, str, str]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for _, _, outcome, _ in records:
        out[outcome] = out.get(outcome, 0) + 1
    return out


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- scenarios
def scenario_quota(base: FleetSpec, binding: str) -> Dict[str, Any]:
    spec = FleetSpec(**{**base.__dict__, "events": []})
    if binding == "tokens":
        spec.requests = None
        # what the requests-bound run's fleet uses per window, about: tokens bind now
        spec.tokens = base.tokens // 6 if base.tokens else 3000
    result = run_fleet(spec)
    stats = analyse(result.arrivals, spec.window_s, spec.requests, spec.tokens, result.start,
                    result.end)  # fmt: skip
    used = stats["requests_used_per_window"] if binding == "requests" else \
        stats["tokens_used_per_window"]  # fmt: skip
    offered = _offered(base)
    stats.update(
        scenario=binding,
        outcomes=_outcomes(result.records),
        min_used=min(used) if used else None,
        offered_x_quota=offered,
        goal_used_90=bool(used) and min(used) >= 0.9,
    )
    return stats


def _offered(spec: FleetSpec) -> Optional[float]:
    """The clients' unthrottled request rate over the quota's."""
    if spec.requests is None or spec.latency_ms <= 0:
        return None
    rate = spec.runtimes * spec.clients / (spec.latency_ms / 1000.0)
    return round(rate / (spec.requests / spec.window_s), 2)


def scenario_redis_kill(base: FleetSpec) -> Dict[str, Any]:
    w = base.window_s
    spec = FleetSpec(**{**base.__dict__, "events": [(2.3 * w, "kill-redis"),
                                                    (3.5 * w, "start-redis")]})  # fmt: skip
    result = run_fleet(spec)
    stats = analyse(result.arrivals, w, spec.requests, spec.tokens, result.start, result.end)
    outcomes = _outcomes(result.records)
    failed = sum(n for k, n in outcomes.items() if not k.startswith("2"))
    stats.update(
        scenario="redis-kill",
        outcomes=outcomes,
        failed=failed,
        redis_down_s=round(result.event_times["start-redis"] - result.event_times["kill-redis"], 2),
        resumed_after_s=None
        if result.resumed_after_s is None
        else round(result.resumed_after_s, 2),
        goal_no_failures=failed == 0,
        goal_resumed_5s=result.resumed_after_s is not None and result.resumed_after_s <= 5.0,
    )
    return stats


def scenario_runtime_kill(base: FleetSpec) -> Dict[str, Any]:
    w = base.window_s
    spec = FleetSpec(**{**base.__dict__, "events": [(2.5 * w, "kill-runtime:2")]})
    result = run_fleet(spec)
    stats = analyse(result.arrivals, w, spec.requests, spec.tokens, result.start, result.end)
    killed_at = result.event_times["kill-runtime:2"]
    # requests of the killed runtime that had reached the upstream and were unanswered
    answered = sorted(r[1] for r in result.records if r[3] == "rt2" and r[2].startswith("2"))
    at_upstream = [a[0] for a in result.arrivals if a[3] == "rt2" and a[0] <= killed_at]
    holding = len(at_upstream) - sum(1 for t in answered if t <= killed_at)
    stats.update(scenario="runtime-kill", outcomes=_outcomes(result.records),
                 killed_holding_reservations=max(0, holding))  # fmt: skip
    return stats


def scenario_latency(base: FleetSpec, runs: int, per_client: int,
                     interval_ms: float) -> Dict[str, Any]:  # fmt: skip
    """Interleaved runs with and without the quota; the latency of every request, each
    client sending one every ``interval_ms`` (a load the machine carries: at saturation
    latency measures the CPU per request times the clients, not the admission)."""
    p50: Dict[bool, List[float]] = {True: [], False: []}
    p99: Dict[bool, List[float]] = {True: [], False: []}
    for _ in range(runs):
        for quotas in (False, True):
            spec = FleetSpec(**{**base.__dict__, "events": [], "quotas": quotas,
                                "latency_ms": 0.0, "requests": 10**7, "tokens": 10**9,
                                "requests_per_client": per_client, "windows": 1000,
                                "interval_ms": interval_ms})  # fmt: skip
            result = run_fleet(spec)
            lat = [(b - a) * 1000 for a, b, outcome, _ in result.records if outcome == "200"]
            lat = lat[len(lat) // 10 :]  # the first tenth warms connections up
            p50[quotas].append(_pct(lat, 0.5))
            p99[quotas].append(_pct(lat, 0.99))
    added_p50 = statistics.median(p50[True]) - statistics.median(p50[False])
    added_p99 = statistics.median(p99[True]) - statistics.median(p99[False])
    return {
        "scenario": "latency",
        "runs": runs,
        "requests_per_run": per_client * base.clients * base.runtimes,
        "fleet_requests_per_s": round(base.clients * base.runtimes * 1000.0 / interval_ms, 1),
        "p50_ms_without": [round(v, 3) for v in p50[False]],
        "p50_ms_with": [round(v, 3) for v in p50[True]],
        "p99_ms_without": [round(v, 3) for v in p99[False]],
        "p99_ms_with": [round(v, 3) for v in p99[True]],
        "added_p50_ms": round(added_p50, 3),
        "added_p99_ms": round(added_p99, 3),
        "goal_p50": added_p50 <= 0.5,
        "goal_p99": added_p99 <= 2.0,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Fleet quotas: runtimes sharing one Redis.")
    p.add_argument("--quick", action="store_true", help="shorter windows and runs (a smoke run)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--scenarios", default="quota,tokens,redis-kill,runtime-kill,latency")
    p.add_argument("--runtimes", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="worker processes per runtime")
    p.add_argument("--clients", type=int, default=4, help="client threads per runtime")
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--requests", type=int, default=60, help="the quota's requests per window")
    p.add_argument("--offered", type=float, default=3.0, help="offered load / quota")
    p.add_argument(
        "--prompt-bytes-per-token",
        type=float,
        default=4.0,
        help="the quota's prompt estimate (1: the config's worst-case default)",
    )
    p.add_argument("--latency-runs", type=int, default=3)
    p.add_argument("--latency-requests", type=int, default=300, help="per client per run")
    p.add_argument("--latency-interval-ms", type=float, default=50.0,
                   help="each client's pace in the latency runs")  # fmt: skip
    args = p.parse_args(argv)
    window = 2.0 if args.quick else args.window_s
    requests = args.requests
    rate = requests / window
    latency_ms = args.runtimes * args.clients / (args.offered * rate) * 1000.0
    base = FleetSpec(runtimes=args.runtimes, workers=args.workers, clients=args.clients,
                     window_s=window, requests=requests, tokens=requests * 400,
                     windows=5 if args.quick else 6, latency_ms=latency_ms,
                     prompt_bytes_per_token=args.prompt_bytes_per_token)  # fmt: skip
    results: List[Dict[str, Any]] = []
    for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        print(f"--- {name}", flush=True)
        if name == "quota":
            out = scenario_quota(base, "requests")
        elif name == "tokens":
            out = scenario_quota(base, "tokens")
        elif name == "redis-kill":
            out = scenario_redis_kill(base)
        elif name == "runtime-kill":
            out = scenario_runtime_kill(base)
        elif name == "latency":
            out = scenario_latency(base, 1 if args.quick else args.latency_runs,
                                   50 if args.quick else args.latency_requests,
                                   args.latency_interval_ms)  # fmt: skip
        else:
            p.error(f"unknown scenario {name!r}")
        print(json.dumps(out, indent=1), flush=True)
        results.append(out)
    goals = {k: v for r in results for k, v in r.items() if k.startswith("goal_")}
    goals.update({f"within_quota[{r['scenario']}]": r["within_quota"]
                  for r in results if "within_quota" in r})  # fmt: skip
    doc = {
        "command": " ".join(
            ["python -m vastar_fast.benchmarks.fleet_bench", *(argv or sys.argv[1:])]
        ),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "spec": {**base.__dict__, "events": []},
        "results": results,
        "goals": goals,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    print("goals:", json.dumps(goals))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
