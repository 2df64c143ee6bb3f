"""Exactly once: every request through one runtime gets exactly one terminal answer of
the right class, under injected upstream faults.

N requests (10,000 with ``VASTAR_SUITES=full``, 2,000 per twin in CI) at 64 in flight
(8 connections x 8) go through one ``vastar runtime`` to ``vastar simulator``'s
Responses API, half buffered, half streamed (the streaming extension), each tagged
with its request id in ``metadata``. 10% of them meet a fault:

* half the requests carry ``x-simulator-fault`` chosen by this test (10% faults, of
  every kind, stalls included: those have a short deadline), so each one's expected
  class is known;
* the other half carry none and meet the simulator's own ``--fault-rate 0.1 --seed``
  draws (every kind but stall); each answer is checked against the fault the simulator
  says it injected (the ``x-simulator-fault`` response header), and the counts against
  the simulator's ``/health`` fault counters.

At the frame level (:class:`~.wire.Wire`, no client logic in between) every request id
must get exactly one terminal ExecuteResponse, on its own connection, stream frames only
between its StreamStart and that answer, and nothing may arrive for an id nobody sent.
Every complete body must carry its own request's tag, so no answer went to another id.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from vastar_fast.types import ErrorClass

from ..helpers import Daemon
from .conftest import simulator, size
from .wire import Wire, http_frame, response_payload

CONNECTIONS, PER_CONNECTION = 8, 8  # 64 in flight
FAULT_RATE = 0.1
KINDS = ("rate_limit", "server_error", "overloaded", "disconnect", "stall", "malformed",
         "truncate", "duplicate", "latency_spike")  # fmt: skip
RANDOM_KINDS = tuple(k for k in KINDS if k != "stall")  # a random stall would need a short deadline
STATUS = {"rate_limit": 429, "server_error": 500, "overloaded": 503}
DEADLINE_MS = 30000
STALL_DEADLINE_MS = 800

SUCCESS, TRANSIENT, TIMEOUT = 0, int(ErrorClass.TRANSIENT), int(ErrorClass.TIMEOUT)


def expected_class(kind: Optional[str]) -> int:
    return {"disconnect": TRANSIENT, "stall": TIMEOUT}.get(kind or "", SUCCESS)


def sse_events(text: str) -> List[Optional[Dict[str, Any]]]:
    """The JSON of each ``data:`` line (None where it is not JSON: a malformed chunk)."""
    out: List[Optional[Dict[str, Any]]] = []
    for line in text.splitlines():
        if line.startswith("data:"):
            try:
                out.append(json.loads(line[5:]))
            except ValueError:
                out.append(None)
    return out


def tag_of_stream(events: List[Optional[Dict[str, Any]]]) -> Optional[str]:
    for ev in events:
        if ev and ev.get("type") == "response.created":
            return str(ev["response"]["metadata"].get("rid"))
    return None


def check_answer(rid: int, stream: bool, kind: Optional[str], wire: Wire) -> Optional[str]:
    """Why the answer of ``rid`` is not what fault ``kind`` should give (None: it is)."""
    (r,) = wire.terminal[rid]
    want = expected_class(kind)
    if r.error_class != want:
        return f"error_class {r.error_class} ({r.error_message}), expected {want} for {kind}"
    message = r.error_message or ""
    if kind == "stall" and "before the upstream" not in message:
        return f"stall: {message!r} is not the deadline passing mid-answer"
    if kind == "disconnect" and "broke off the response" not in message:
        return f"disconnect: {message!r} is not the upstream breaking off"
    starts = wire.starts.get(rid, [])
    if stream:
        if len(starts) != 1:
            return f"{len(starts)} StreamStarts"
        status, headers = starts[0].status_code, dict(starts[0].headers)
        text = b"".join(wire.chunks.get(rid, [])).decode("utf-8", "replace")
    elif want == SUCCESS:
        p = response_payload(r)
        status, headers, text = p["status_code"], p["headers"], p["body"]
    else:
        return None  # a buffered request that failed: the class is all there is
    if headers.get("x-simulator-fault") != kind:
        return f"answer says fault {headers.get('x-simulator-fault')!r}, expected {kind!r}"
    if kind in STATUS:
        return None if status == STATUS[kind] else f"status {status} for {kind}"
    if status != 200:
        return f"status {status} for {kind}"
    if not stream:
        try:
            doc = json.loads(text)
        except ValueError:
            return None if kind in ("malformed", "truncate") else "body is not JSON"
        if kind in ("malformed", "truncate"):
            return f"{kind}: a whole JSON body"
        tag = str(doc.get("metadata", {}).get("rid"))
        return None if tag == str(rid) else f"body of request {tag} delivered to {rid}"
    events = sse_events(text)
    tag = tag_of_stream(events)
    if tag != str(rid):
        return f"stream of request {tag} delivered to {rid}"
    completed = any(ev and ev.get("type") == "response.completed" for ev in events)
    if kind == "malformed":
        return None if None in events else "malformed: every chunk was JSON"
    if kind in ("truncate", "disconnect", "stall"):
        return "stream completed despite the fault" if completed else None
    return None if completed else f"stream did not complete ({kind})"


Plan = List[Tuple[int, bool, Optional[str], Callable[[], bytes]]]


async def drive(path: str, plan: Plan) -> Tuple[List[Wire], Dict[int, Wire], float]:
    wires = [await Wire.open(path) for _ in range(CONNECTIONS)]
    owner: Dict[int, Wire] = {}
    queue = list(reversed(plan))

    async def worker(wire: Wire) -> None:
        while queue:
            rid, stream, _, frame = queue.pop()
            owner[rid] = wire
            await wire.send_request(rid, frame(), stream)  # its deadline counts from now

    t0 = time.monotonic()
    workers = [worker(wires[i % CONNECTIONS]) for i in range(CONNECTIONS * PER_CONNECTION)]
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60 + len(plan) / 20)
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)  # anything late (a second answer) arrives by now
    for w in wires:
        h = await w.health_check()
        assert h.active_requests == 0, h
    for w in wires:
        await w.close()
    return wires, owner, elapsed


def test_every_request_gets_exactly_one_answer_of_the_right_class(
    tmp_path: Path, services: List[Any], figures: Callable[..., None]
) -> None:
    n = size(2_000, 10_000)
    seed = 20260101
    sim = simulator(
        tmp_path / "sim", "--answer-tokens", "8", "--tokens-per-chunk", "2",
        "--fault-rate", str(FAULT_RATE), "--seed", str(seed),
        "--fault-kinds", ",".join(RANDOM_KINDS), "--fault-after-chunks", "2",
        "--spike-ms", "30", "--stall-max-s", "60",
        ttft_ms=1, token_delay_ms=0.3,
    )  # fmt: skip
    services.append(sim)
    config = {
        "limits": {"credits_per_connection": 1024, "shutdown_grace_s": 5},
        # Faults must reach the client as they are: no breaker opening on disconnects.
        "breaker": {"failure_threshold": 1_000_000},
        "tenants": {"default": {"max_concurrent": 5000}},
    }
    rng = random.Random(seed)
    plan: Plan = []
    explicit: Dict[int, Optional[str]] = {}
    for i in range(n):
        rid = 1 + i
        stream = i % 2 == 1
        headers = {"Content-Type": "application/json"}
        kind: Optional[str] = None
        timeout_ms = DEADLINE_MS
        if i % 4 < 2:  # explicit: this test chooses the fault
            kind = rng.choice(KINDS) if rng.random() < FAULT_RATE else None
            headers["x-simulator-fault"] = kind or "none"
            explicit[rid] = kind
            if kind == "stall":
                timeout_ms = STALL_DEADLINE_MS
        body = json.dumps({"model": "gpt-4.1", "input": "Tell me about request tags.",
                           "metadata": {"rid": str(rid)}, "stream": stream})  # fmt: skip
        frame = functools.partial(http_frame, rid, "POST", f"{sim.url}/v1/responses",
                                  headers, body, stream=stream, timeout_ms=timeout_ms)  # fmt: skip
        plan.append((rid, stream, kind, frame))

    with Daemon(tmp_path / "rt", config, log_level="WARNING") as d:
        wires, owner, elapsed = asyncio.run(drive(d.socket_path, plan))
        assert d.proc is not None and d.proc.poll() is None
    with urllib.request.urlopen(f"{sim.url}/health", timeout=10) as resp:
        health = json.loads(resp.read())

    # 1. the frames: exactly one terminal answer per id, on its own connection
    answers = Counter({rid: len(w.terminal.get(rid, ())) for w in wires for rid in w.sent})
    lost = sum(1 for c in answers.values() if c == 0)
    duplicated = sum(1 for c in answers.values() if c > 1)
    strays = sum(1 for w in wires for rid in w.terminal if rid not in w.sent)
    problems = [p for w in wires for p in w.violations()]
    assert not problems, (lost, duplicated, strays, problems[:20])
    assert len(answers) == n

    # 2. the right class for every request whose fault this test chose
    outcomes: Counter[str] = Counter()
    wrong: List[str] = []
    for rid, stream, kind, _ in plan:
        wire = owner[rid]
        cls = wire.terminal[rid][0].error_class
        outcomes[ErrorClass(cls).name] += 1
        if rid in explicit:
            why = check_answer(rid, stream, kind, wire)
            if why:
                wrong.append(f"request {rid} ({'stream' if stream else 'buffered'}): {why}")
    misdelivered = sum(1 for w in wrong if "delivered to" in w)
    assert not wrong, (misdelivered, wrong[:20])

    # 3. the others: each answer is what the fault the simulator names should give, and
    # the faults seen add up to the simulator's own counters
    seen: Counter[str] = Counter()
    for rid, stream, _, _ in plan:
        if rid in explicit:
            continue
        wire = owner[rid]
        r = wire.terminal[rid][0]
        starts = wire.starts.get(rid)
        if r.error_class == SUCCESS:
            headers = dict(starts[0].headers) if starts else response_payload(r)["headers"]
            kind = headers.get("x-simulator-fault")
        elif r.error_class == TRANSIENT:
            kind = "disconnect"  # a buffered one shows no header: checked by the count below
        else:
            wrong.append(f"request {rid}: {ErrorClass(r.error_class).name}: {r.error_message}")
            continue
        seen[kind or "none"] += 1
        why = check_answer(rid, stream, kind, wire)
        if why:
            wrong.append(f"request {rid} ({'stream' if stream else 'buffered'}, random): {why}")
    assert not wrong, wrong[:20]
    chosen = Counter(k for k in explicit.values() if k)
    drawn = {k: health["faults"][k] - chosen[k] for k in KINDS}
    assert {k: seen[k] for k in KINDS} == drawn, (seen, drawn, health["faults"], chosen)
    assert health["requests"] == n  # each request reached the upstream once: no retries
    faults = sum(health["faults"].values())
    assert 0.05 * n < faults < 0.15 * n, faults  # the 10% the suite promises

    figures("exactly-once", requests=n, concurrency=CONNECTIONS * PER_CONNECTION,
            seconds=round(elapsed, 1), outcomes=dict(outcomes), faults_injected=faults,
            faults=dict(health["faults"]), explicit=len(explicit),
            lost=lost, duplicated=duplicated, stray=strays,
            misdelivered=misdelivered)  # fmt: skip
