"""Trace context through the runtime, and its OpenTelemetry spans (runtime/tracing.py).

Continuation (no ``--otel``): the daemon forwards the caller's ``traceparent`` /
``tracestate`` from the ExecuteRequest KeyValue list to the upstream. Spans: an
in-process runtime records through the OpenTelemetry SDK's in-memory exporter, so one
trace can be followed from the caller's span through the runtime's request and attempt
spans to the upstream request's ``traceparent``; ``--otel`` in a subprocess exports
OTLP/HTTP to a local receiver. Every test runs on both twins.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from vastar_fast import (
    AsyncRuntimeClient,
    ConnectorException,
    ErrorClass,
    HTTPRequest,
    RuntimeClient,
    RuntimeConfig,
)
from vastar_fast.protocol import codec
from vastar_fast.runtime import RuntimeServer
from vastar_fast.runtime.config import ConfigError, settings_from_mapping
from vastar_fast.runtime.tracing import (
    RuntimeTracer,
    _Answer,
    check_otel_available,
    genai_request_attributes,
    valid_traceparent,
)
from vastar_fast.simulator import SimulatorServer, SimulatorSettings

from .helpers import Daemon, Raw, payload
from .upstream import ScriptedUpstream, ok, wait_until

PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1")]),
)
PARENT_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def tp_of(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parent_id_of(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


class Script(ScriptedUpstream):
    """The scripted upstream with the paths these tests use."""

    def __init__(self) -> None:
        self.flaky_seen = 0
        super().__init__(
            {
                "/a": lambda r: [ok(b"answer a")],
                "/flaky": self._flaky,
                "/redirect": lambda r: [
                    b"HTTP/1.1 302 Found\r\nLocation: /a\r\nContent-Length: 0\r\n\r\n"
                ],
            }
        )

    def _flaky(self, request: Dict[str, Any]) -> List[Any]:
        self.flaky_seen += 1
        return ["abort"] if self.flaky_seen == 1 else [ok(b"second time")]

    def traceparents(self, path: str) -> List[Optional[str]]:
        return [r["headers"].get("traceparent") for r in self.requests if r["path"] == path]


@pytest.fixture
def upstream() -> Iterator[Script]:
    server = Script()
    try:
        yield server
    finally:
        server.close()


# ---------------------------------------------------------------- continuation (daemon)
@pytest.fixture(scope="module")
def plain_daemon(tmp_path_factory: pytest.TempPathFactory, implementation: Any) -> Iterator[Daemon]:
    """A daemon without --otel."""
    with Daemon(tmp_path_factory.mktemp("trace-rt"), {"retry": {"max_attempts": 1}}) as d:
        yield d


def test_the_daemon_forwards_the_callers_trace_context(
    plain_daemon: Daemon, upstream: Script
) -> None:
    config = RuntimeConfig(socket_path=plain_daemon.socket_path)
    url = upstream.base + "/a"
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    with RuntimeClient(config) as client, trace.use_span(NonRecordingSpan(PARENT)):
        client.execute_http(HTTPRequest("GET", url))
        with client.stream_http(HTTPRequest("GET", url)) as resp:
            assert resp.read() == b"answer a"
        # the caller's own HTTP-level trace headers give way to the frame's entry
        client.execute_http(
            HTTPRequest("GET", url, headers={"TraceParent": other, "TRACESTATE": "x=y"})
        )
    seen = [r["headers"] for r in upstream.requests]
    assert [(h.get("traceparent"), h.get("tracestate")) for h in seen] == [
        (PARENT_TP, "vendor=v1")
    ] * 3
    assert all(r["head"].count(b"raceparent") == 1 for r in upstream.requests)


def test_the_daemon_leaves_untraced_requests_alone(plain_daemon: Daemon, upstream: Script) -> None:
    config = RuntimeConfig(socket_path=plain_daemon.socket_path)
    mine = "00-11111111111111111111111111111111-2222222222222222-01"
    with RuntimeClient(config) as client:
        client.execute_http(HTTPRequest("GET", upstream.base + "/a"))
        client.execute_http(HTTPRequest("GET", upstream.base + "/a", headers={"traceparent": mine}))
    assert upstream.traceparents("/a") == [None, mine]


@pytest.mark.parametrize(
    "value",
    [
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 is exact
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Evil: 1",
    ],
)
def test_an_invalid_traceparent_entry_is_not_forwarded(
    plain_daemon: Daemon, upstream: Script, value: str
) -> None:
    assert not valid_traceparent(value)
    raw = Raw(plain_daemon.socket_path)
    try:
        deadline = int(time.time() * 1000) + 10000
        frame = codec.encode_http_request_frame(
            77, "t", "w", None, deadline, "GET", upstream.base + "/a", None, "",
            (("traceparent", value), ("tracestate", "a=b")),
        )  # fmt: skip
        raw.send(frame)
        answer = payload(raw.response(77))
    finally:
        raw.sock.close()
    assert (answer["status_code"], answer["body"]) == (200, "answer a")
    assert upstream.requests[-1]["headers"].get("traceparent") is None
    assert upstream.requests[-1]["headers"].get("tracestate") is None


def test_valid_traceparents_of_later_versions_pass() -> None:
    assert valid_traceparent(PARENT_TP)
    assert valid_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later")
    assert valid_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


# ---------------------------------------------------------------- spans (in process)
class Traced:
    """An in-process runtime recording into an in-memory exporter, and a tracer for the
    caller that records into the same one."""

    def __init__(self, tmp: Path, config: Optional[Dict[str, Any]] = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.caller = self.provider.get_tracer("tests")
        settings = settings_from_mapping(
            config or {"retry": {"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 5}}
        )
        self.server = RuntimeServer(str(tmp / "rt.sock"), settings=settings)
        self.server.start()
        self.server.runtime.tracer = RuntimeTracer(self.provider)
        self.config = RuntimeConfig(socket_path=self.server.socket_path)

    def spans(self, count: int) -> List[ReadableSpan]:
        """The finished spans once there are ``count`` (the runtime ends its spans right
        after writing the answer)."""
        assert wait_until(lambda: len(self.exporter.get_finished_spans()) >= count, 10.0), (
            self.exporter.get_finished_spans()
        )
        spans = list(self.exporter.get_finished_spans())
        assert len(spans) == count, [s.name for s in spans]
        return spans

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def traced(tmp_path: Path, implementation: Any) -> Iterator[Traced]:
    t = Traced(tmp_path)
    try:
        yield t
    finally:
        t.close()


def by_kind(spans: List[ReadableSpan], kind: SpanKind) -> List[ReadableSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_time or 0)


def test_one_trace_from_the_callers_span_through_the_runtime_to_the_upstream(
    traced: Traced, upstream: Script
) -> None:
    with RuntimeClient(traced.config) as client:
        with traced.caller.start_as_current_span("caller") as caller:
            resp = client.execute_http(HTTPRequest("GET", upstream.base + "/a"))
    assert resp.body == b"answer a"
    spans = traced.spans(3)
    (request,) = by_kind(spans, SpanKind.SERVER)
    (attempt,) = by_kind(spans, SpanKind.CLIENT)
    (mine,) = by_kind(spans, SpanKind.INTERNAL)
    trace_id = caller.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert mine.context.span_id == caller.get_span_context().span_id
    assert request.parent is not None and request.parent.span_id == mine.context.span_id
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    (sent,) = upstream.traceparents("/a")
    assert sent == tp_of(attempt.context)
    assert request.name == "vastar GET" and attempt.name == "GET"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["vastar.attempts"] == 1
    assert request.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["url.full"] == upstream.base + "/a"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.status.is_ok and request.status.is_ok


def test_the_asyncio_clients_streams_are_traced_too(traced: Traced, upstream: Script) -> None:
    async def go() -> Tuple[int, bytes]:
        async with AsyncRuntimeClient(traced.config) as client:
            with traced.caller.start_as_current_span("async caller") as caller:
                async with client.stream_http(HTTPRequest("GET", upstream.base + "/a")) as r:
                    body = await r.read()
            return caller.get_span_context().trace_id, body

    trace_id, body = asyncio.run(go())
    assert body == b"answer a"
    spans = traced.spans(3)
    assert {s.context.trace_id for s in spans} == {trace_id}
    (request,) = by_kind(spans, SpanKind.SERVER)
    assert request.attributes["vastar.stream"] is True
    (attempt,) = by_kind(spans, SpanKind.CLIENT)
    assert upstream.traceparents("/a") == [tp_of(attempt.context)]


def test_every_upstream_attempt_has_its_span(traced: Traced, upstream: Script) -> None:
    with RuntimeClient(traced.config) as client:
        with traced.caller.start_as_current_span("caller"):
            resp = client.execute_http(HTTPRequest("GET", upstream.base + "/flaky"))
    assert resp.body == b"second time"
    spans = traced.spans(4)
    (request,) = by_kind(spans, SpanKind.SERVER)
    first, second = by_kind(spans, SpanKind.CLIENT)
    assert first.parent.span_id == second.parent.span_id == request.context.span_id  # type: ignore[union-attr]
    assert not first.status.is_ok and first.attributes["error.type"] == "TRANSIENT"
    assert "http.request.resend_count" not in first.attributes
    assert second.status.is_ok and second.attributes["http.request.resend_count"] == 1
    assert second.attributes["http.response.status_code"] == 200
    assert request.attributes["vastar.attempts"] == 2
    assert upstream.traceparents("/flaky") == [tp_of(first.context), tp_of(second.context)]


def test_a_redirect_hop_is_an_attempt_of_its_own(traced: Traced, upstream: Script) -> None:
    with RuntimeClient(traced.config) as client:
        resp = client.execute_http(HTTPRequest("GET", upstream.base + "/redirect"))
    assert resp.body == b"answer a"
    spans = traced.spans(3)
    hop, final = by_kind(spans, SpanKind.CLIENT)
    assert hop.attributes["http.response.status_code"] == 302
    assert final.attributes["http.response.status_code"] == 200
    assert final.attributes["url.full"] == upstream.base + "/a"
    assert upstream.traceparents("/redirect") == [tp_of(hop.context)]
    assert upstream.traceparents("/a") == [tp_of(final.context)]


def test_without_a_caller_the_runtime_starts_the_trace_or_continues_the_http_one(
    traced: Traced, upstream: Script
) -> None:
    with RuntimeClient(traced.config) as client:
        client.execute_http(HTTPRequest("GET", upstream.base + "/a"))
    spans = traced.spans(2)
    (request,) = by_kind(spans, SpanKind.SERVER)
    (attempt,) = by_kind(spans, SpanKind.CLIENT)
    assert request.parent is None
    assert upstream.traceparents("/a") == [tp_of(attempt.context)]
    traced.exporter.clear()
    with RuntimeClient(traced.config) as client:  # the HTTP request's own header
        client.execute_http(
            HTTPRequest("GET", upstream.base + "/a", headers={"Traceparent": PARENT_TP})
        )
    spans = traced.spans(2)
    (request,) = by_kind(spans, SpanKind.SERVER)
    assert request.context.trace_id == PARENT.trace_id
    assert request.parent is not None and request.parent.span_id == PARENT.span_id
    (attempt,) = by_kind(spans, SpanKind.CLIENT)
    assert upstream.traceparents("/a")[-1] == tp_of(attempt.context)


def test_a_refused_request_records_why(tmp_path: Path, implementation: Any) -> None:
    t = Traced(tmp_path, {"tenants": {"default": {"allowed_hosts": ["only.example.com"]}}})
    try:
        with RuntimeClient(t.config) as client:
            with pytest.raises(ConnectorException) as info:
                client.execute_http(HTTPRequest("GET", "http://127.0.0.1:9/x"))
        assert info.value.error_class == ErrorClass.PERMANENT
        (request,) = t.spans(1)
        assert request.kind == SpanKind.SERVER and not request.status.is_ok
        assert request.attributes["error.type"] == "PERMANENT"
        assert request.status.description == info.value.message
        assert request.attributes["vastar.attempts"] == 0
    finally:
        t.close()


# ---------------------------------------------------------------- GenAI attributes
@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorSettings.fast(seed=3)) as sim:
        yield sim


CHAT = {
    "model": "gpt-4o",
    "max_tokens": 12,
    "temperature": 0.5,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


def _chat(
    traced: Traced, url: str, body: Dict[str, Any], headers: Dict[str, str], extended: bool
) -> bytes:
    """The answer's body, forwarded as it arrives (extended) or buffered."""
    request = HTTPRequest(
        "POST", url, headers={"content-type": "application/json", **headers}, body=json.dumps(body)
    )
    with RuntimeClient(traced.config) as client:
        if not extended:
            response = client.execute_http(request)
            assert response.status_code == 200
            return response.body
        with client.stream_http(request) as resp:
            assert resp.status_code == 200 and resp.streamed
            return resp.read()


BOTH_WAYS = pytest.mark.parametrize(
    "stream, extended", [(False, False), (False, True), (True, False), (True, True)]
)


def _sse_json(body: bytes) -> List[Dict[str, Any]]:
    return [
        json.loads(line[5:])
        for line in body.decode().splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]


@BOTH_WAYS
def test_an_openai_chat_completion_gets_genai_attributes(
    traced: Traced, simulator: SimulatorServer, stream: bool, extended: bool
) -> None:
    body = dict(CHAT, stream=stream)
    if stream:
        body["stream_options"] = {"include_usage": True}
    raw = _chat(traced, simulator.base_url + "/v1/chat/completions", body, {}, extended)
    answer = _sse_json(raw)[-1] if stream else json.loads(raw)
    (attempt,) = by_kind(traced.spans(2), SpanKind.CLIENT)
    attrs = dict(attempt.attributes or {})
    assert attempt.name == "chat gpt-4o"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.request.max_tokens"] == 12
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.id"] == answer["id"]
    assert attrs["gen_ai.response.model"] == answer["model"]
    assert attrs["gen_ai.usage.input_tokens"] == answer["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


@BOTH_WAYS
def test_an_anthropic_message_gets_genai_attributes(
    traced: Traced, simulator: SimulatorServer, stream: bool, extended: bool
) -> None:
    body = dict(CHAT, model="claude-sonnet-4-5", stream=stream)
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    raw = _chat(traced, simulator.base_url + "/v1/messages", body, headers, extended)
    if stream:
        events = _sse_json(raw)
        start = events[0]["message"]
        expect = (start["id"], start["model"], start["usage"]["input_tokens"],
                  events[-2]["usage"]["output_tokens"], events[-2]["delta"]["stop_reason"])  # fmt: skip
    else:
        msg = json.loads(raw)
        expect = (msg["id"], msg["model"], msg["usage"]["input_tokens"],
                  msg["usage"]["output_tokens"], msg["stop_reason"])  # fmt: skip
    (attempt,) = by_kind(traced.spans(2), SpanKind.CLIENT)
    attrs = dict(attempt.attributes or {})
    assert attempt.name == "chat claude-sonnet-4-5"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    got = (attrs["gen_ai.response.id"], attrs["gen_ai.response.model"],
           attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"],
           attrs["gen_ai.response.finish_reasons"][0])  # fmt: skip
    assert got == expect


def test_other_requests_get_no_genai_attributes(traced: Traced, simulator: SimulatorServer) -> None:
    with RuntimeClient(traced.config) as client:
        client.execute_http(HTTPRequest("GET", simulator.base_url + "/v1/models"))
    (attempt,) = by_kind(traced.spans(2), SpanKind.CLIENT)
    assert attempt.name == "GET"
    assert not [k for k in attempt.attributes or {} if k.startswith("gen_ai.")]


def test_genai_request_attributes_read_only_what_is_there() -> None:
    assert genai_request_attributes("openai", "not json") is None
    assert genai_request_attributes("openai", '{"input": "x"}') is None
    attrs = genai_request_attributes(
        "openai",
        json.dumps({"model": "m", "messages": [], "max_completion_tokens": 5, "top_p": 1,
                    "stop": "END", "n": 2, "temperature": True, "seed": "x"}),
    )  # fmt: skip
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 5,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.stop_sequences": ["END"],
    }


def test_the_answer_reader_copes_with_events_split_anywhere() -> None:
    events = [
        {"id": "c1", "model": "m", "choices": [{"delta": {"content": "x"}, "finish_reason": None}]},
        {"id": "c1", "model": "m", "choices": [{"delta": {}, "finish_reason": "length"}]},
        {"id": "c1", "model": "m", "choices": [], "usage": {"prompt_tokens": 3,
                                                              "completion_tokens": 4}},
    ]  # fmt: skip
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    stream += b"data: [DONE]\n\n"
    for step in (1, 7, len(stream)):
        answer = _Answer()
        for i in range(0, len(stream), step):
            answer.feed(stream[i : i + step])
        answer.close()
        assert answer.attrs == {
            "gen_ai.response.id": "c1",
            "gen_ai.response.model": "m",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 4,
        }
        assert answer.finish_reasons == ["length"]
    neither = _Answer()
    neither.feed(b"plain text, not JSON")
    neither.close()
    assert neither.attrs == {} and neither.finish_reasons == []


# ---------------------------------------------------------------- --otel (subprocess)
class OTLPReceiver:
    """An OTLP/HTTP traces endpoint on loopback that keeps what it receives."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        received: List[Any] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                message = ExportTraceServiceRequest()
                message.ParseFromString(data)
                received.append((self.path, message))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> List[Tuple[str, Any, Dict[str, Any]]]:
        """(service.name, span, its attributes) of everything received."""
        out = []
        for _, message in self.received:
            for rs in message.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {a.key: a.value for a in span.attributes}
                        out.append((resource.get("service.name"), span, attrs))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_otel_flag_exports_spans_over_otlp_http(
    tmp_path: Path, upstream: Script, implementation: Any
) -> None:
    receiver = OTLPReceiver()
    daemon = Daemon(tmp_path, {"retry": {"max_attempts": 1}}, log_level="INFO", extra=["--otel"])
    daemon.service.env = dict(
        daemon.service.env or {},
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{receiver.port}/v1/traces",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="rt-under-test",
    )
    try:
        with daemon:
            with RuntimeClient(RuntimeConfig(socket_path=daemon.socket_path)) as client:
                with trace.use_span(NonRecordingSpan(PARENT)):
                    client.execute_http(HTTPRequest("GET", upstream.base + "/a"))
            assert daemon.terminate() == 0  # the shutdown flushes what is left
        spans = receiver.spans()
    finally:
        receiver.close()
    assert sorted(s.name for _, s, _ in spans) == ["GET", "vastar GET"], daemon.log()
    assert {service for service, _, _ in spans} == {"rt-under-test"}
    request = next(s for _, s, _ in spans if s.name == "vastar GET")
    attempt = next(s for _, s, _ in spans if s.name == "GET")
    assert request.trace_id == attempt.trace_id == PARENT.trace_id.to_bytes(16, "big")
    assert request.parent_span_id == PARENT.span_id.to_bytes(8, "big")
    assert attempt.parent_span_id == request.span_id
    (sent,) = upstream.traceparents("/a")
    assert sent is not None and parent_id_of(sent) == int.from_bytes(attempt.span_id, "big")


def test_otel_without_the_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'vastar-fast\[otel\]'"):
        check_otel_available()


def test_unknown_exporters_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from vastar_fast.runtime.tracing import tracer_from_env

    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracer_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="OTLP protocol 'http/json'"):
        tracer_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    tracer = tracer_from_env({"OTEL_TRACES_EXPORTER": "none"})
    assert tracer.owned
    tracer.shutdown()


def test_tracing_otel_is_a_config_key_too() -> None:
    assert settings_from_mapping({"tracing": {"otel": True}}).tracing.otel is True
    assert settings_from_mapping(None).tracing.otel is False
    with pytest.raises(ConfigError, match=r"tracing\.exporter"):
        settings_from_mapping({"tracing": {"exporter": "otlp"}})
