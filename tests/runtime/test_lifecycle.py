"""Daemons with their own configuration: shutdown, socket handling, credits, breaker,
the in-process RuntimeServer and the CLI's configuration errors."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from vastar_fast.client.sync import RuntimeClient
from vastar_fast.errors import ConnectorException
from vastar_fast.protocol.connection import HealthReceived
from vastar_fast.runtime import RuntimeServer, RuntimeSettings
from vastar_fast.types import ErrorClass, HTTPRequest, RuntimeConfig

from .helpers import Daemon, Raw, child_env, credits, payload
from .upstream import FlakyUpstream, Upstream, free_port, wait_until


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, upstream: Upstream) -> None:
    d = Daemon(tmp_path, {"limits": {"shutdown_grace_s": 10}}).start()
    try:
        with Raw(d.socket_path) as raw:
            rids = [raw.http("GET", upstream.base + "/slow?delay=1.0") for _ in range(3)]
            assert wait_until(lambda: raw.health().active_requests == 3, 5)
            d.proc.send_signal(15)  # type: ignore[union-attr]
            assert wait_until(lambda: not os.path.exists(d.socket_path), 5)  # stops accepting
            for rid in rids:
                assert payload(raw.response(rid))["body"] == "slow 1.0"
        assert d.proc.wait(20) == 0  # type: ignore[union-attr]
    finally:
        d.kill()
    assert not os.path.exists(d.socket_path)
    assert "runtime stopped" in d.log()


def test_sigterm_grace_period_abandons_the_rest(tmp_path: Path, upstream: Upstream) -> None:
    d = Daemon(tmp_path, {"limits": {"shutdown_grace_s": 0.5}}).start()
    try:
        with Raw(d.socket_path) as raw:
            rid = raw.http("GET", upstream.base + "/slow?delay=30&key=grace")
            assert wait_until(lambda: upstream.hits["grace"] == 1, 5)
            t0 = time.monotonic()
            d.proc.send_signal(15)  # type: ignore[union-attr]
            r = raw.response(rid, timeout=10)
            assert r.error_class == ErrorClass.TRANSIENT and "shut down" in (r.error_message or "")
            assert time.monotonic() - t0 < 8
        assert d.proc.wait(20) == 0  # type: ignore[union-attr]
    finally:
        d.kill()
    assert not os.path.exists(d.socket_path)


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "rt.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody accepts on: a dead daemon's
    stale.close()
    with Daemon(tmp_path / "a", socket_path=path) as d:
        assert Raw(path).health().healthy
        second = Daemon(tmp_path / "b", socket_path=path)
        with pytest.raises(RuntimeError) as info:
            second.start()
        assert second.proc is not None and second.proc.returncode == 2
        assert "already listening" in str(info.value)
        assert Raw(path).health().healthy  # the first one is untouched
        assert d.proc is not None and d.proc.poll() is None


def test_credits_exceeded_is_rate_limited_at_once(tmp_path: Path, upstream: Upstream) -> None:
    with Daemon(tmp_path, {"limits": {"credits_per_connection": 4}}) as d:
        with Raw(d.socket_path) as raw:
            slow = [raw.http("GET", upstream.base + "/slow?delay=2", stream=True) for _ in range(4)]
            t0 = time.monotonic()
            extra = [raw.http("GET", upstream.base + "/small") for _ in range(2)]
            for rid in extra:
                r = raw.response(rid, timeout=1.5)
                assert r.error_class == ErrorClass.RATE_LIMITED
                assert "limits.credits_per_connection" in (r.error_message or "")
            assert time.monotonic() - t0 < 1.5  # not stalled behind the slow ones
            cu = credits(raw.events)
            assert cu and cu[0].total_credits == 4  # announced to the opted-in connection
            for rid in slow:
                assert raw.response(rid).error_class == 0
            assert raw.response(raw.http("GET", upstream.base + "/small")).error_class == 0
        # A released-style client (never opts in) gets the same limit, and no CreditUpdate.
        with Raw(d.socket_path) as raw:
            [raw.http("GET", upstream.base + "/slow?delay=1.5") for _ in range(4)]
            r = raw.response(raw.http("GET", upstream.base + "/small"), timeout=1.0)
            assert r.error_class == ErrorClass.RATE_LIMITED
            assert not credits(raw.events)


def test_breaker_opens_fails_fast_then_recovers(tmp_path: Path) -> None:
    config = {
        "breaker": {"failure_threshold": 3, "reset_timeout_s": 1.0},
        "retry": {"max_attempts": 1},
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/small"
    with (
        Daemon(tmp_path, config) as d,
        RuntimeClient(RuntimeConfig(socket_path=d.socket_path)) as c,
    ):
        for _ in range(3):
            with pytest.raises(ConnectorException) as info:
                c.execute_http(HTTPRequest("GET", url))
            assert "cannot connect" in info.value.message
        with pytest.raises(ConnectorException) as info:
            c.execute_http(HTTPRequest("GET", url))
        assert info.value.error_class == ErrorClass.TRANSIENT
        assert "circuit breaker" in info.value.message and "probe" in info.value.message
        assert "again in" in info.value.message
        server = Upstream(port)  # the host comes back
        try:
            time.sleep(1.2)
            r = c.execute_http(HTTPRequest("GET", url))  # the half-open probe
            assert r.body == b"hello, world!"
            assert c.execute_http(HTTPRequest("GET", url)).status_code == 200  # closed again
        finally:
            server.close()
        assert f"circuit breaker for http://127.0.0.1:{port} opened" in d.log()


def test_runtime_server_in_a_thread(tmp_path: Path, upstream: Upstream) -> None:
    settings = RuntimeSettings()
    with RuntimeServer(str(tmp_path / "rt.sock"), tcp_port=0, settings=settings) as rt:
        assert rt.socket_path and os.path.exists(rt.socket_path)
        assert rt.tcp_port and rt.tcp_port > 0
        with RuntimeClient(RuntimeConfig(socket_path=rt.socket_path)) as c:
            assert c.execute_http(HTTPRequest("GET", upstream.base + "/small")).status_code == 200
        with RuntimeClient(RuntimeConfig(use_tcp=True, tcp_port=rt.tcp_port)) as c:
            assert c.health_check().healthy
        path = rt.socket_path
    assert not os.path.exists(path)
    with RuntimeServer() as rt:  # neither: a socket in a fresh temporary directory
        assert rt.socket_path and os.path.exists(rt.socket_path) and rt.tcp_port is None
        path = rt.socket_path
    assert not os.path.exists(os.path.dirname(path))


def test_runtime_server_reports_a_busy_socket(tmp_path: Path) -> None:
    with RuntimeServer(str(tmp_path / "x.sock")) as first:
        with pytest.raises(Exception, match="already listening"):
            RuntimeServer(first.socket_path).start()
        with Raw(first.socket_path) as raw:
            assert isinstance(raw.health(), HealthReceived)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vastar_fast.runtime", *args],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip


def test_cli_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tenants:\n  acme:\n    max_concurent: 5\n")
    r = _cli("--config", str(cfg), "--socket", str(tmp_path / "s"))
    assert r.returncode == 2 and "tenants.acme.max_concurent: unknown key" in r.stderr
    cfg.write_text("limits:\n  credits_per_connection: -1\n")
    r = _cli("--config", str(cfg), "--socket", str(tmp_path / "s"))
    assert r.returncode == 2 and "limits.credits_per_connection" in r.stderr
    r = _cli("--tcp", "localhost:notaport")
    assert r.returncode == 2 and "--tcp" in r.stderr


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Upstream, str]]:
    """An HTTPS upstream with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = Upstream(ssl_context=ctx)
    try:
        yield server, cert
    finally:
        server.close()


def test_tls_verified_by_default_ca_file_and_explicit_opt_out(
    tmp_path: Path, tls_upstream: Tuple[Upstream, str]
) -> None:
    server, cert = tls_upstream
    config = {
        "tenants": {
            "default": {},
            "pinned": {"ca_file": cert},
            "insecure": {"tls_verify": False},
        }
    }
    url = server.base + "/small"
    with Daemon(tmp_path, config) as d, Raw(d.socket_path) as raw:
        r = raw.response(raw.http("GET", url, tenant="someone"))
        assert r.error_class == ErrorClass.PERMANENT
        assert "certificate verification failed" in (r.error_message or "")
        assert "ca_file" in (r.error_message or "")
        assert payload(raw.response(raw.http("GET", url, tenant="pinned")))["status_code"] == 200
        assert payload(raw.response(raw.http("GET", url, tenant="insecure")))["status_code"] == 200


def test_breaker_is_per_host_and_half_open_admits_one_probe(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = {
        "breaker": {"failure_threshold": 2, "reset_timeout_s": 1.0},
        "retry": {"max_attempts": 1},
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Daemon(tmp_path, config) as d, Raw(d.socket_path) as raw:
        for _ in range(2):
            r = raw.response(raw.http("GET", base + "/small"))
            assert r.error_class == ErrorClass.TRANSIENT and "cannot connect" in (
                r.error_message or ""
            )
        opened = time.monotonic()
        r = raw.response(raw.http("GET", base + "/small"))
        message = r.error_message or ""
        assert r.error_class == ErrorClass.TRANSIENT and "is open" in message, message
        match = re.search(r"probe the host again in ([0-9.]+)s", message)
        assert match and 0 < float(match.group(1)) <= 1.0, message
        # Another host's breaker is closed: it is served as usual.
        other = raw.response(raw.http("GET", upstream.base + "/small"))
        assert payload(other)["status_code"] == 200
        server = Upstream(port)  # the host comes back
        try:
            time.sleep(max(0.0, opened + 1.1 - time.monotonic()))
            probe = raw.http("GET", base + "/slow?delay=1.0&key=probe")
            assert wait_until(lambda: server.hits["probe"] == 1, 5)
            t0 = time.monotonic()
            r = raw.response(raw.http("GET", base + "/small"), timeout=5)
            assert time.monotonic() - t0 < 0.5  # failed fast, not queued behind the probe
            message = r.error_message or ""
            assert r.error_class == ErrorClass.TRANSIENT
            assert "half-open" in message and "probe request is in flight" in message, message
            assert payload(raw.response(probe))["body"] == "slow 1.0"  # the probe succeeded
            r = raw.response(raw.http("GET", base + "/small"))  # closed again
            assert payload(r)["status_code"] == 200
        finally:
            server.close()
        log = d.log()
        assert f"circuit breaker for {base} opened" in log
        assert f"circuit breaker for {base} is half-open" in log
        assert f"circuit breaker for {base} is closed" in log


def test_retries_back_off_with_jitter_and_stop_before_the_deadline(
    tmp_path: Path, flaky: FlakyUpstream
) -> None:
    base_s, cap_s, deadline_ms = 0.02, 0.16, 1200
    config = {
        "breaker": {"failure_threshold": 1000},
        "retry": {"max_attempts": 100, "base_delay_ms": 20, "max_delay_ms": 160},
    }
    with Daemon(tmp_path, config) as d, Raw(d.socket_path) as raw:
        t0 = time.monotonic()
        rid = raw.http("GET", f"{flaky.base}/jit/100000", timeout_ms=deadline_ms)
        r = raw.response(rid, timeout=10)
        elapsed = time.monotonic() - t0
    message = r.error_message or ""
    assert r.error_class == ErrorClass.TRANSIENT, message  # gave up, did not time out
    match = re.search(r"gave up after (\d+) attempts", message)
    assert match, message
    attempts = int(match.group(1))
    assert attempts == flaky.hits["jit"]
    assert 2 <= attempts < 100  # stopped by the deadline, not by max_attempts
    # It gave up before the deadline rather than sleeping past it (the margin is for a
    # loaded machine; the policy itself is timed exactly in test_retry_policy_* below).
    assert elapsed < deadline_ms / 1000 + 1.0
    times = flaky.times["jit"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap < cap_s + 1.0 for gap in gaps), gaps  # no gap beyond the cap (loosely)
    assert base_s < cap_s


def test_retry_policy_backs_off_exponentially_with_full_jitter() -> None:
    """The policy's numbers, exactly: no clock, no machine load."""
    import random

    from vastar_fast.runtime.config import RetrySettings
    from vastar_fast.runtime.retry import RetryPolicy
    from vastar_fast.runtime.upstream import UpstreamFailure

    policy = RetryPolicy(RetrySettings(max_attempts=100, base_delay_ms=20, max_delay_ms=160))
    failure = UpstreamFailure(ErrorClass.TRANSIENT, "x", True, True)
    random.seed(7)
    delays = [policy.delay(a, failure, "POST", 0.0, 1e9) for a in range(1, 60)]
    caps = [min(0.16, 0.02 * 2 ** (a - 1)) for a in range(1, 60)]
    assert all(d is not None and 0 <= d <= c for d, c in zip(delays, caps))
    ratios = [d / c for d, c in zip(delays, caps)]  # type: ignore[operator]
    assert max(ratios) - min(ratios) > 0.5  # full jitter, not a fixed schedule
    # never past the deadline, never for permanent failures, never past max_attempts
    assert policy.delay(1, failure, "POST", 10.0, 10.001) is None
    permanent = UpstreamFailure(ErrorClass.PERMANENT, "x", True, False)
    assert policy.delay(1, permanent, "GET", 0.0, 1e9) is None
    assert policy.delay(100, failure, "GET", 0.0, 1e9) is None
    # a failure after the request left is retried for idempotent methods only
    sent = UpstreamFailure(ErrorClass.TRANSIENT, "x", False, True)
    assert policy.delay(1, sent, "POST", 0.0, 1e9) is None
    assert policy.delay(1, sent, "PUT", 0.0, 1e9) is not None
