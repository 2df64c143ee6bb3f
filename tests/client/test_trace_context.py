"""W3C trace context in the ExecuteRequest KeyValue list (protocol/tracecontext.py).

Both clients, both twins (the ``implementation`` fixture), against the fake runtime:
with a span current the request carries ``traceparent`` (and ``tracestate``) beside
``vastar-ext`` / ``vastar-token``; without one, or without opentelemetry, nothing is
added; the opentelemetry lookup happens once.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from vastar_fast import AsyncRuntimeClient, HTTPRequest, RuntimeClient, RuntimeConfig
from vastar_fast.protocol import _client_py, tracecontext
from vastar_fast.protocol.frames import TOKEN_ENV

from .fake_runtime import FakeRuntime, ok

try:
    from vastar_fast.protocol import _codec_c
except ImportError:  # not built: the compiled run is skipped by the fixture anyway
    _codec_c = None  # type: ignore[assignment]

TRACER = TracerProvider().get_tracer("tests")  # a private provider: no global state


def _reset_lookups() -> None:
    tracecontext._reset()
    _client_py._trace_reset()
    if _codec_c is not None:
        _codec_c._trace_reset()


@pytest.fixture(autouse=True)
def fresh_lookup() -> Iterator[None]:
    _reset_lookups()
    yield
    _reset_lookups()


def traceparent_of(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def entries(rt: FakeRuntime) -> List[List[Tuple[str, str]]]:
    return [list(e.frame.headers) for e in rt.requests()]


def sync_requests(rt: FakeRuntime) -> None:
    """A plain request and a streaming one."""
    with RuntimeClient(RuntimeConfig(socket_path=rt.socket_path)) as client:
        client.execute_http(HTTPRequest("GET", "http://x/plain"))
        with client.stream_http(HTTPRequest("GET", "http://x/stream")) as resp:
            resp.read()


async def async_requests(rt: FakeRuntime) -> None:
    async with AsyncRuntimeClient(RuntimeConfig(socket_path=rt.socket_path)) as client:
        await client.execute_http(HTTPRequest("GET", "http://x/plain"))
        async with client.stream_http(HTTPRequest("GET", "http://x/stream")) as resp:
            await resp.read()


def answer(peer: Any, event: Any) -> None:
    peer.send(ok(event))


def test_no_current_span_adds_nothing() -> None:
    with FakeRuntime(answer) as rt:
        sync_requests(rt)
        asyncio.run(async_requests(rt))
    assert entries(rt) == [[], [("vastar-ext", "stream")]] * 2


def test_the_current_span_goes_out_as_traceparent_from_both_clients() -> None:
    with FakeRuntime(answer) as rt:
        with TRACER.start_as_current_span("caller") as span:
            sync_requests(rt)
        sent_sync = traceparent_of(span)

        async def traced() -> str:
            with TRACER.start_as_current_span("async caller") as aspan:
                await async_requests(rt)
            return traceparent_of(aspan)

        sent_async = asyncio.run(traced())
        sync_requests(rt)  # after the span ended: nothing again
    assert entries(rt) == [
        [("traceparent", sent_sync)],
        [("vastar-ext", "stream"), ("traceparent", sent_sync)],
        [("traceparent", sent_async)],
        [("vastar-ext", "stream"), ("traceparent", sent_async)],
        [],
        [("vastar-ext", "stream")],
    ]


def test_tracestate_and_token_travel_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t" * 20)
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    with FakeRuntime(answer) as rt:
        with trace.use_span(NonRecordingSpan(parent)):
            sync_requests(rt)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ts = "vendor=v1,other=x"
    assert entries(rt) == [
        [("vastar-token", "t" * 20), ("traceparent", tp), ("tracestate", ts)],
        [
            ("vastar-ext", "stream"),
            ("vastar-token", "t" * 20),
            ("traceparent", tp),
            ("tracestate", ts),
        ],
    ]


def test_an_invalid_span_adds_nothing() -> None:
    with FakeRuntime(answer) as rt:
        with trace.use_span(trace.INVALID_SPAN), trace.NoOpTracer().start_as_current_span("x"):
            sync_requests(rt)
    assert entries(rt) == [[], [("vastar-ext", "stream")]]


def test_opentelemetry_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[int] = []
    real = tracecontext.context_getter

    def counting() -> Any:
        calls.append(1)
        return real()

    for module in (_client_py, _codec_c):
        if module is not None:
            name = "context_getter" if module is _client_py else "_context_getter"
            monkeypatch.setattr(module, name, counting)
    with FakeRuntime(answer) as rt:
        for _ in range(3):
            sync_requests(rt)
    assert len(calls) == 1
    assert len(entries(rt)) == 6


def test_without_opentelemetry_requests_go_out_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an interpreter without opentelemetry-api sees: the import fails.
    hidden: Dict[str, Any] = {k: v for k, v in sys.modules.items() if k.startswith("opentelemetry")}
    for name in hidden:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with FakeRuntime(answer) as rt:
        sync_requests(rt)
        asyncio.run(async_requests(rt))
    for name, module in hidden.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert tracecontext._loaded and tracecontext._getter is None
    assert entries(rt) == [[], [("vastar-ext", "stream")]] * 2


def test_a_failing_propagator_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def inject(self, carrier: Any, context: Any = None) -> None:
            raise RuntimeError("broken propagator")

    monkeypatch.setattr(tracecontext, "_propagator", Broken())
    with FakeRuntime(answer) as rt:
        with TRACER.start_as_current_span("caller"):
            sync_requests(rt)
    assert entries(rt) == [[], [("vastar-ext", "stream")]]
    assert "broken propagator" in caplog.text
