"""``vastar runtime --workers N``: connections spread over workers, shared limits and
breakers, SIGTERM draining every worker, dead workers replaced, metrics summed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from vastar_fast.runtime.workers import RESPAWN_LIMIT, default_workers, usable_cpus
from vastar_fast.types import ErrorClass

from .helpers import Daemon, Raw, child_env, payload
from .upstream import ScriptedUpstream, free_port, ok, wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need fork (Unix)")

SCRIPT = {
    "/peer": lambda r: [ok(str(r["conn"]).encode())],
    "/slow": lambda r: [0.6, ok(b"slow")],
}


@pytest.fixture(scope="module")
def upstream(implementation: Optional[str]) -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(SCRIPT)
    try:
        yield server
    finally:
        server.close()


def workers_of(pid: int) -> List[int]:
    """The live child processes of the supervisor."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != b"Z":
                out.append(int(entry))
    return sorted(out)


def test_default_and_invalid_worker_counts(tmp_path: Path) -> None:
    assert default_workers() == max(1, usable_cpus() // 2)
    for bad in ("0", "x", "999"):
        proc = subprocess.run(
            [sys.executable, "-m", "vastar_fast.runtime", "--socket", str(tmp_path / "s"),
             "--workers", bad], capture_output=True, text=True, timeout=60, env=child_env(),
        )  # fmt: skip
        assert proc.returncode == 2 and "--workers" in proc.stderr, proc.stderr


def test_connections_spread_over_workers(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with Daemon(tmp_path, {"http": {"per_host_limit": 1}}, log_level="WARNING",
                extra=["--workers", "2"]) as d:  # fmt: skip
        assert len(d.info["workers"]) == 2 and workers_of(d.info["pid"]) == d.info["workers"]
        before = len(upstream.peers)
        conns = [Raw(d.socket_path) for _ in range(24)]
        try:
            for raw in conns:
                assert payload(raw.response(raw.http("GET", upstream.base + "/peer")))
        finally:
            for raw in conns:
                raw.close()
    # per_host_limit 1 and sequential requests: one upstream connection per worker that
    # served some of the 24 client connections
    assert len(upstream.peers) - before == 2


def test_tenant_limit_and_breaker_are_shared_by_workers(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    config = {
        "tenants": {"default": {}, "pair": {"max_concurrent": 2}},
        "breaker": {"failure_threshold": 2, "reset_timeout_s": 30},
        "retry": {"max_attempts": 1},
    }
    with Daemon(tmp_path, config, log_level="WARNING", extra=["--workers", "2"]) as d:
        conns = [Raw(d.socket_path) for _ in range(10)]
        try:
            rids = [raw.http("GET", upstream.base + "/slow", tenant="pair") for raw in conns]
            answers = [raw.response(rid, timeout=20) for raw, rid in zip(conns, rids)]
            ok_count = sum(1 for a in answers if a.error_class == 0)
            limited = [a for a in answers if a.error_class == ErrorClass.RATE_LIMITED]
            assert ok_count == 2 and len(limited) == 8, answers
            assert "tenants.pair.max_concurrent" in (limited[0].error_message or "")
            dead = f"http://127.0.0.1:{free_port()}/x"
            for raw in conns[:2]:
                r = raw.response(raw.http("GET", dead))
                assert "cannot connect" in (r.error_message or "")
            for raw in conns:  # open for every connection, whichever worker serves it
                r = raw.response(raw.http("GET", dead))
                assert "circuit breaker" in (r.error_message or "") and "is open" in (
                    r.error_message or ""
                ), r.error_message
        finally:
            for raw in conns:
                raw.close()


def test_sigterm_drains_every_worker(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    d = Daemon(tmp_path, log_level="INFO", extra=["--workers", "2"]).start()
    try:
        pids = d.info["workers"]
        conns = [Raw(d.socket_path) for _ in range(8)]
        rids = [raw.http("GET", upstream.base + "/slow") for raw in conns]
        time.sleep(0.2)  # the requests are in flight at the upstream
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        answers = [raw.response(rid, timeout=20) for raw, rid in zip(conns, rids)]
        assert [payload(a)["body"] for a in answers] == ["slow"] * 8
        assert d.proc.wait(20) == 0
        assert not os.path.exists(d.socket_path)
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), 10)
        for raw in conns:
            raw.close()
    finally:
        d.kill()


def test_killed_worker_is_replaced(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with Daemon(tmp_path, log_level="INFO", extra=["--workers", "2"]) as d:
        sup = d.info["pid"]
        first = workers_of(sup)
        os.kill(first[0], signal.SIGKILL)
        assert wait_until(lambda: len(workers_of(sup)) == 2 and first[0] not in workers_of(sup),
                          15)  # fmt: skip
        assert wait_until(lambda: "starting a new one" in d.log(), 5)
        for _ in range(6):  # new connections are served (by either worker)
            with Raw(d.socket_path) as raw:
                assert payload(raw.response(raw.http("GET", upstream.base + "/peer")))


def test_workers_that_keep_dying_stop_the_runtime(tmp_path: Path) -> None:
    d = Daemon(tmp_path, log_level="INFO", extra=["--workers", "2"]).start()
    try:
        sup = d.info["pid"]
        for _ in range(RESPAWN_LIMIT):
            live = workers_of(sup)
            if d.proc is not None and d.proc.poll() is not None:
                break
            assert wait_until(lambda: len(workers_of(sup)) == 2, 15)
            os.kill(workers_of(sup)[0], signal.SIGKILL)
            time.sleep(0.3)
            del live
        assert d.proc is not None and d.proc.wait(30) == 1
        assert f"died {RESPAWN_LIMIT} times" in d.log(), d.log()
        assert not os.path.exists(d.socket_path)
    finally:
        d.kill()


def test_metrics_are_summed_over_workers(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with Daemon(tmp_path, {"metrics_port": 0}, log_level="WARNING",
                extra=["--workers", "2"]) as d:  # fmt: skip
        conns = [Raw(d.socket_path) for _ in range(12)]
        try:
            for raw in conns:
                payload(raw.response(raw.http("GET", upstream.base + "/peer", tenant="m")))
        finally:
            for raw in conns:
                raw.close()
        port = d.info["metrics_port"]
        assert port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    line = [x for x in text.decode().splitlines()
            if x.startswith('vastar_runtime_requests_total{') and 'tenant="m"' in x]  # fmt: skip
    assert line and float(line[0].rsplit(" ", 1)[1]) == 12.0, line
