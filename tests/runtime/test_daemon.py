"""End-to-end behaviour of the daemon (a real subprocess) against real local upstreams.

Timing assertions use generous bounds only: "well before the slow upstream finished".
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.request

import pytest

from vastar_fast.client.sync import RuntimeClient
from vastar_fast.errors import ConnectorException
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import (
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from vastar_fast.types import ErrorClass, HTTPRequest, RuntimeConfig

from .helpers import Daemon, Raw, credits, payload, stream_events
from .upstream import Upstream, free_port


def client(d: Daemon, **kw: object) -> RuntimeClient:
    return RuntimeClient(RuntimeConfig(socket_path=d.socket_path, tenant_id="tests", **kw))  # type: ignore[arg-type]


def fails(c: RuntimeClient, req: HTTPRequest) -> ConnectorException:
    with pytest.raises(ConnectorException) as info:
        c.execute_http(req)
    return info.value


# ------------------------------------------------------------------ basics
def test_socket_is_private(daemon: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o600
    assert "vastar runtime ready" in daemon.stdout()


def test_get_and_post_with_headers_and_body(daemon: Daemon, upstream: Upstream) -> None:
    with client(daemon) as c:
        r = c.execute_http(HTTPRequest("GET", upstream.base + "/small"))
        assert r.status_code == 200 and r.body == b"hello, world!"
        assert r.error_class == ErrorClass.SUCCESS
        r = c.execute_http(
            HTTPRequest(
                "POST", upstream.base + "/echo",
                headers={"Content-Type": "application/json", "X-Test": "1"},
                body='{"a": "é"}',
            )
        )  # fmt: skip
    assert r.status_code == 200
    echoed = json.loads(r.body)
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"a": "é"}'
    assert echoed["headers"]["X-Test"] == "1"
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert "User-Agent" not in echoed["headers"]  # as the released runtime: no UA added
    # released shape: lower-cased names, repeated headers joined with ", "
    assert r.headers["x-multi"] == "a, b"
    assert r.headers["x-mixed-case"] == "Yes"
    assert all(k == k.lower() for k in r.headers)


def test_released_payload_shape(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/small")
        resp = raw.response(rid)
    assert resp.error_class == 0 and resp.error_message is None and resp.duration_us > 0
    obj = json.loads(resp.payload)
    assert list(obj) == ["body", "headers", "is_streaming", "status_code"]
    assert obj["body"] == "hello, world!" and obj["status_code"] == 200
    assert obj["is_streaming"] is False
    assert obj["headers"]["content-type"].startswith("text/plain")
    assert not credits(raw.events)  # never opted in: no CreditUpdate


@pytest.mark.parametrize("code", [404, 429, 500, 503])
def test_http_statuses_pass_through(daemon: Daemon, upstream: Upstream, code: int) -> None:
    with client(daemon) as c:
        r = c.execute_http(HTTPRequest("GET", f"{upstream.base}/status/{code}"))
    assert r.status_code == code and r.error_class == ErrorClass.SUCCESS
    assert r.body == f"status {code}".encode()


def test_tcp_listener(daemon: Daemon, upstream: Upstream) -> None:
    assert daemon.tcp_port
    cfg = RuntimeConfig(use_tcp=True, tcp_port=daemon.tcp_port)
    with RuntimeClient(cfg) as c:
        assert c.execute_http(HTTPRequest("GET", upstream.base + "/small")).body == b"hello, world!"


# ------------------------------------------------------------------ error classes
def test_connect_refused_is_transient(daemon: Daemon) -> None:
    port = free_port()
    with client(daemon) as c:
        exc = fails(c, HTTPRequest("POST", f"http://127.0.0.1:{port}/x", body="{}"))
    assert exc.error_class == ErrorClass.TRANSIENT
    assert "cannot connect" in exc.message
    # a connect failure is safe to retry for any method, POST included
    assert "after 3 attempts" in exc.message


@pytest.mark.parametrize(
    "method, url, needle",
    [
        ("GET", "ftp://127.0.0.1/x", "scheme"),
        ("FOO", "http://127.0.0.1/x", "unsupported HTTP method"),
        ("GET", "not a url", "scheme"),
        ("GET", "http:///nohost", "host"),
    ],
)
def test_invalid_requests(daemon: Daemon, method: str, url: str, needle: str) -> None:
    with client(daemon) as c:
        exc = fails(c, HTTPRequest(method, url))
    assert exc.error_class == ErrorClass.INVALID_REQUEST, exc
    assert needle in exc.message


def test_bad_json_payload_and_unknown_connector(daemon: Daemon) -> None:
    deadline = int(time.time() * 1000) + 10000
    bad_json = codec.encode_execute_request(7, "tests", None, None, "http", "request",
                                            deadline, b"{not json")  # fmt: skip
    no_url = codec.encode_execute_request(8, "tests", None, None, "http", "request",
                                          deadline, b'{"method": "GET"}')  # fmt: skip
    unknown = codec.encode_execute_request(9, "tests", None, None, "smtp", "send",
                                           deadline, b"{}")  # fmt: skip
    with Raw(daemon.socket_path) as raw:
        raw.send(bad_json + no_url + unknown)
        r7, r8, r9 = raw.response(7), raw.response(8), raw.response(9)
    assert r7.error_class == r8.error_class == r9.error_class == ErrorClass.INVALID_REQUEST
    assert "not valid JSON" in (r7.error_message or "")
    assert "'url'" in (r8.error_message or "")
    assert "unknown connector 'smtp'" in (r9.error_message or "")


def test_deadline_gives_timeout_and_cancels_upstream(daemon: Daemon, upstream: Upstream) -> None:
    with client(daemon) as c:
        t0 = time.monotonic()
        exc = fails(
            c, HTTPRequest("GET", upstream.base + "/slow?delay=6&key=deadline", timeout_ms=500)
        )
        elapsed = time.monotonic() - t0
    assert exc.error_class == ErrorClass.TIMEOUT
    assert "deadline" in exc.message
    assert elapsed < 4.0  # the upstream would take 6 s
    assert _wait(lambda: upstream.cancelled["deadline"] == 1)  # upstream request abandoned


def test_deadline_already_passed(daemon: Daemon, upstream: Upstream) -> None:
    frame = codec.encode_http_request_frame(
        5, "tests", None, None, int(time.time() * 1000) - 5000, "GET", upstream.base + "/small",
        None, None,
    )  # fmt: skip
    with Raw(daemon.socket_path) as raw:
        raw.send(frame)
        r = raw.response(5)
    assert r.error_class == ErrorClass.TIMEOUT and "already passed" in (r.error_message or "")


def test_zero_deadline_means_default(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/slow?delay=0.3", timeout_ms=0)
        assert payload(raw.response(rid))["body"] == "slow 0.3"


# ------------------------------------------------------------------ concurrency
def test_fast_request_overtakes_slow_one(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        slow = raw.http("GET", upstream.base + "/slow?delay=2")
        fast = raw.http("GET", upstream.base + "/small")
        assert raw.wait(lambda ev: len([e for e in ev if isinstance(e, ResponseReceived)]) >= 1)
        first = raw.responses()[0]
        assert first.request_id == fast
        assert payload(raw.response(slow))["body"] == "slow 2.0"


def test_thousand_requests_in_flight_on_one_connection(daemon: Daemon, upstream: Upstream) -> None:
    n = 1000
    with Raw(daemon.socket_path) as raw:
        frames = []
        rids = []
        for i in range(n):
            rid, frame = raw.frame_http("GET", f"{upstream.base}/slow?delay=0.5&key=k{i % 7}")
            rids.append(rid)
            frames.append(frame)
        raw.send(b"".join(frames))
        assert raw.wait(lambda ev: len(ev) >= n, timeout=60), len(raw.events)
        got = {e.request_id: e for e in raw.responses()}
    assert set(got) == set(rids)
    assert all(e.error_class == 0 for e in got.values()), {
        e.error_message for e in got.values() if e.error_class
    }


def test_health_check(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        h = raw.health()
        assert h.healthy and h.message == "ok"
        assert h.available_credits == 1100
        # asking for health is not an opt-in: no unsolicited CreditUpdate
        assert not credits(raw.events)
        assert raw.events[-1] == h
        # an opted-in request is: its CreditUpdate comes before anything else for it
        rid = raw.http("GET", upstream.base + "/small", stream=True)
        raw.response(rid)
        cu = credits(raw.events)
        assert cu and cu[0].total_credits == 1100 and cu[0].credit_delta == 1100
        raw.http("GET", upstream.base + "/slow?delay=1.5")
        raw.http("GET", upstream.base + "/slow?delay=1.5")
        time.sleep(0.3)
        h = raw.health()
        assert h.available_credits == 1098
        assert h.active_requests >= 2


def test_cancel_request(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/slow?delay=8&key=cancel", stream=True)
        assert _wait(lambda: upstream.hits["cancel"] == 1)
        t0 = time.monotonic()
        raw.send(raw.conn.send_cancel(rid))
        raw.send(raw.conn.send_cancel(424242))  # unknown ids are ignored
        r = raw.response(rid)
        assert time.monotonic() - t0 < 4.0
        assert r.error_class == ErrorClass.PERMANENT
        assert r.error_message == "cancelled by client"
        assert _wait(lambda: upstream.cancelled["cancel"] == 1)
        assert len([e for e in raw.events if getattr(e, "request_id", None) == rid]) == 1


# ------------------------------------------------------------------ streaming
def test_streaming_extension_forwards_chunks_as_they_arrive(
    daemon: Daemon, upstream: Upstream
) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/sse?gap=1.0&key=s1", stream=True)
        assert raw.wait(lambda ev: any(isinstance(e, StreamDataReceived) for e in ev))
        got_first = time.perf_counter()
        second = [t for name, t in upstream.events if name == "s1:second"]
        assert not second or second[0] > got_first  # chunk 1 arrived before chunk 2 was sent
        raw.response(rid)
        evs = stream_events(raw.events, rid)
    assert isinstance(evs[0], StreamStarted)
    assert evs[0].status_code == 200 and evs[0].is_streaming
    assert evs[0].headers["content-type"] == "text/event-stream"
    data = b"".join(e.data for e in evs if isinstance(e, StreamDataReceived))
    assert data == b"data: one\n\ndata: two\n\n"
    last = evs[-1]
    assert isinstance(last, ResponseReceived)
    assert payload(last)["body"] == "" and payload(last)["is_streaming"] is True
    assert credits(raw.events)[0].total_credits == 1100


def test_stream_http_client_and_unextended_buffering(daemon: Daemon, upstream: Upstream) -> None:
    with client(daemon) as c:
        with c.stream_http(HTTPRequest("GET", upstream.base + "/sse?gap=0.3")) as s:
            assert s.streamed and s.status_code == 200
            assert s.read() == b"data: one\n\ndata: two\n\n"
        r = c.execute_http(HTTPRequest("GET", upstream.base + "/sse?gap=0.1"))
        assert r.body == b"data: one\n\ndata: two\n\n"
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/sse?gap=0.1")
        obj = payload(raw.response(rid))
        assert obj["is_streaming"] is True and obj["body"] == "data: one\n\ndata: two\n\n"
        assert not any(isinstance(e, (StreamStarted, StreamDataReceived)) for e in raw.events)


def test_stream_of_a_failed_connect_has_no_stream_start(daemon: Daemon) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", f"http://127.0.0.1:{free_port()}/", stream=True)
        r = raw.response(rid)
        assert r.error_class == ErrorClass.TRANSIENT
        assert not any(isinstance(e, StreamStarted) for e in raw.events)


# ------------------------------------------------------------------ retries
def test_idempotent_requests_are_retried(daemon: Daemon, flaky: object) -> None:
    base = flaky.base  # type: ignore[attr-defined]
    hits = flaky.hits  # type: ignore[attr-defined]
    with client(daemon) as c:
        r = c.execute_http(HTTPRequest("GET", f"{base}/g1/2"))  # two drops, then ok
        assert r.status_code == 200 and r.body == b"ok"
        assert hits["g1"] == 3
        exc = fails(c, HTTPRequest("PUT", f"{base}/g2/9", body="x"))
        assert exc.error_class == ErrorClass.TRANSIENT and "after 3 attempts" in exc.message
        assert hits["g2"] == 3  # retry.max_attempts
        exc = fails(c, HTTPRequest("POST", f"{base}/p1/1", body="x"))
        assert exc.error_class == ErrorClass.TRANSIENT
        assert hits["p1"] == 1  # POST reached the upstream: never retried


# ------------------------------------------------------------------ policy
def test_policy_denial_is_permanent(daemon: Daemon, upstream: Upstream) -> None:
    with client(daemon) as c:
        exc = fails(c, HTTPRequest("GET", upstream.base + "/small", tenant_id="restricted"))
    assert exc.error_class == ErrorClass.PERMANENT
    assert "policy denies tenant 'restricted'" in exc.message
    assert "tenants.restricted.allowed_hosts" in exc.message


def test_tenant_quota_is_rate_limited(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        slow = raw.http("GET", upstream.base + "/slow?delay=1.5", tenant="tiny")
        time.sleep(0.2)
        over = raw.http("GET", upstream.base + "/small", tenant="tiny")
        r = raw.response(over, timeout=1.0)
        assert r.error_class == ErrorClass.RATE_LIMITED
        assert "tenants.tiny.max_concurrent" in (r.error_message or "")
        assert raw.response(slow).error_class == 0
        again = raw.http("GET", upstream.base + "/small", tenant="tiny")
        assert raw.response(again).error_class == 0


def test_oversized_request_and_response_are_permanent(daemon: Daemon, upstream: Upstream) -> None:
    with client(daemon) as c:
        exc = fails(c, HTTPRequest("POST", upstream.base + "/echo", body="z" * 500,
                                   tenant_id="tiny"))  # fmt: skip
        assert exc.error_class == ErrorClass.PERMANENT and "max_request_bytes" in exc.message
        exc = fails(c, HTTPRequest("GET", upstream.base + "/big?n=5000", tenant_id="tiny"))
        assert exc.error_class == ErrorClass.PERMANENT and "max_response_bytes" in exc.message
        exc = fails(c, HTTPRequest("GET", upstream.base + "/bigchunked?n=5000", tenant_id="tiny"))
        assert exc.error_class == ErrorClass.PERMANENT and "max_response_bytes" in exc.message
        assert c.execute_http(HTTPRequest("GET", upstream.base + "/big?n=900",
                                          tenant_id="tiny")).body == b"x" * 900  # fmt: skip
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/bigchunked?n=5000", tenant="tiny", stream=True)
        r = raw.response(rid)
        assert r.error_class == ErrorClass.PERMANENT and "max_response_bytes" in (
            r.error_message or ""
        )


def test_response_never_exceeds_the_frame_cap(daemon: Daemon, upstream: Upstream) -> None:
    # 2 MB of control characters become 12 MB of JSON escapes: over the 10 MiB frame cap.
    with client(daemon) as c:
        exc = fails(c, HTTPRequest("GET", upstream.base + "/ctrl?n=2000000"))
        assert exc.error_class == ErrorClass.PERMANENT and "frame cap" in exc.message
        r = c.execute_http(HTTPRequest("GET", upstream.base + "/big?n=5000000"))
        assert len(r.body) == 5_000_000


# ------------------------------------------------------------------ bad frames
def test_bad_frame_length_answers_and_closes(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as bad, Raw(daemon.socket_path) as good:
        busy = good.http("GET", upstream.base + "/slow?delay=1.0&key=badframe")
        assert _wait(lambda: upstream.hits["badframe"] == 1)  # in flight on another connection
        bad.send(b"\xff\xff\xff\xf0\x00garbage")
        assert bad.wait(lambda ev: bool(ev), timeout=5)
        r = bad.responses()[0]
        assert r.request_id == 0 and r.error_class == ErrorClass.INVALID_REQUEST
        assert "frame length" in (r.error_message or "")
        assert bad.wait(lambda ev: False, timeout=5) is False and bad.eof
        assert payload(good.response(busy))["body"] == "slow 1.0"  # served throughout
        rid = good.http("GET", upstream.base + "/small")
        assert payload(good.response(rid))["body"] == "hello, world!"


def test_unparsable_flatbuffers(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as bad, Raw(daemon.socket_path) as good:
        bad.send(codec.encode_frame(0, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
        assert bad.wait(lambda ev: bool(ev), timeout=5)
        r = bad.responses()[0]
        assert r.request_id == 0 and r.error_class == ErrorClass.INVALID_REQUEST
        assert (r.error_message or "").startswith("Invalid FlatBuffers message")
        bad.wait(lambda ev: False, timeout=5)
        assert bad.eof
        rid = good.http("GET", upstream.base + "/small")
        assert good.response(rid).error_class == 0


def test_unknown_message_type_keeps_the_connection(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        raw.send(codec.encode_frame(42, b"\x00\x00\x00\x00"))
        assert raw.wait(lambda ev: bool(raw.responses()), timeout=5)
        r = raw.responses()[0]
        assert r.request_id == 0 and r.error_class == ErrorClass.INVALID_REQUEST
        assert "unknown message type 42" in (r.error_message or "")
        rid = raw.http("GET", upstream.base + "/small")
        assert raw.response(rid).error_class == 0


# ------------------------------------------------------------------ logs, metrics
def test_secrets_never_logged(daemon: Daemon, upstream: Upstream) -> None:
    secrets = ["sk-TOPSECRET-1", "apikey-SECRET-2", "tok-SECRET-3", "sess-SECRET-4"]
    with client(daemon) as c:
        r = c.execute_http(
            HTTPRequest(
                "GET", upstream.base + f"/echo?api_key={secrets[2]}&page=2",
                headers={"Authorization": f"Bearer {secrets[0]}", "X-Api-Key": secrets[1],
                         "X-Session-Token": secrets[3], "X-Plain": "visible-value"},
            )
        )  # fmt: skip
        rid = r.request_id
    assert json.loads(r.body)["headers"]["Authorization"] == f"Bearer {secrets[0]}"
    assert _wait(lambda: f"request {rid} done" in daemon.log())
    log = daemon.log()
    assert f"request {rid} tenant='tests'" in log and "visible-value" in log  # DEBUG is on
    for secret in secrets:
        assert secret not in log
    assert "INFO" not in "\n".join(line for line in log.splitlines() if str(rid) in line)


def test_prometheus_metrics(daemon: Daemon, upstream: Upstream) -> None:
    port = daemon.info["metrics_port"]
    with client(daemon) as c:
        c.execute_http(HTTPRequest("GET", upstream.base + "/small"))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'vastar_runtime_requests_total{error_class="success",tenant="tests"}' in text
    assert "vastar_runtime_request_seconds_bucket" in text
    assert "vastar_runtime_in_flight" in text


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    from .upstream import wait_until

    return wait_until(predicate, timeout)  # type: ignore[arg-type]


def test_deadline_mid_stream_ends_with_timeout(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/sse?gap=5&key=s2", stream=True, timeout_ms=800)
        t0 = time.monotonic()
        r = raw.response(rid)
        assert time.monotonic() - t0 < 4.0
        evs = stream_events(raw.events, rid)
    assert isinstance(evs[0], StreamStarted)
    assert [e.data for e in evs if isinstance(e, StreamDataReceived)] == [b"data: one\n\n"]
    assert r.error_class == ErrorClass.TIMEOUT and "before the upstream finished" in (
        r.error_message or ""
    )


def test_header_injection_is_an_invalid_request(daemon: Daemon, upstream: Upstream) -> None:
    with Raw(daemon.socket_path) as raw:
        rid = raw.http("GET", upstream.base + "/small", headers={"X-Bad": "a\r\nInjected: 1"})
        r = raw.response(rid)
    assert r.error_class == ErrorClass.INVALID_REQUEST, r
