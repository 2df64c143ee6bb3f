"""Trace context through the runtime, and OpenTelemetry spans with ``--otel``.

Continuation (always on, no dependency): a request whose ExecuteRequest KeyValue list
carries a valid W3C ``traceparent`` (our clients add it when a span is current,
``protocol/tracecontext.py``) goes upstream with that ``traceparent`` (and its
``tracestate``) as HTTP headers, replacing any the HTTP request had. Without one the
request is not touched.

Spans (``--otel`` or ``tracing.otel: true``; the ``otel`` extra): one SERVER span per
request, a child of the caller's span (or of the HTTP request's own ``traceparent``
header, else a new trace), and one CLIENT span per upstream attempt (retries and
redirect hops each get one), whose context is the ``traceparent`` the upstream sees.
Chat completions (OpenAI ``/chat/completions``, Anthropic ``/v1/messages``) get the
GenAI semantic-convention attributes on their attempt spans: ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.*`` from the request body and
``gen_ai.response.*`` / ``gen_ai.usage.*`` from the answer (JSON or SSE). Spans go out
through opentelemetry-sdk's BatchSpanProcessor and the standard exporters, configured by
the ``OTEL_*`` environment variables (:func:`tracer_from_env`).

The pipeline calls this module from a few marked lines (``pipeline.py``): one call at
request start (:func:`begin_trace`), and, only when a :class:`RequestTrace` exists (spans
on), one per attempt, failure, body piece and at the end. Without ``--otel`` and without
a ``traceparent`` entry the request path pays one attribute test and a truth test of the
KeyValue list.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vastar_fast.protocol.tracecontext import TRACEPARENT, TRACESTATE
from vastar_fast.runtime.config import ConfigError, RuntimeSettings
from vastar_fast.runtime.redact import redact_url
from vastar_fast.types import ErrorClass

__all__ = [
    "RequestTrace",
    "RuntimeTracer",
    "begin_trace",
    "check_otel_available",
    "runtime_tracer",
    "tracer_from_env",
    "valid_traceparent",
]

log = logging.getLogger("vastar_fast.runtime")

SCOPE = "vastar_fast.runtime"
"""The instrumentation scope name of the runtime's spans."""

_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-[\x21-\x7e]*)?"
).fullmatch
_TRACESTATE_OK = re.compile(r"[\x20-\x7e]{1,512}").fullmatch
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_BODY_CAP = 4 * 1024 * 1024
"""Request and response bodies larger than this are not parsed for GenAI attributes."""
_ERROR_NAMES = {int(c): c.name for c in ErrorClass}
_OTEL_MISSING = (
    "OpenTelemetry spans (--otel / tracing.otel) need opentelemetry-sdk and the OTLP "
    "exporter: pip install 'vastar-fast[otel]'"
)


def valid_traceparent(value: str) -> bool:
    """A W3C ``traceparent`` this runtime forwards: version 00 exactly (55 characters) or
    a later version (at least those fields), non-zero ids, lower-case hex."""
    m = _TRACEPARENT(value)
    if m is None:
        return False
    version, trace_id, span_id, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return False
    return trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN


def _from_frame(frame_headers: Sequence[Tuple[str, str]]) -> Tuple[Optional[str], Optional[str]]:
    parent: Optional[str] = None
    state: Optional[str] = None
    for key, value in frame_headers:
        if key == TRACEPARENT:
            parent = value
        elif key == TRACESTATE:
            state = value
    if parent is None or not valid_traceparent(parent):
        return None, None
    if state is not None and not _TRACESTATE_OK(state):
        state = None  # unsendable as an HTTP header: forward the parent alone
    return parent, state


def _set_context(headers: Dict[str, str], parent: str, state: Optional[str]) -> None:
    """Replace the HTTP request's trace headers (any case) with these."""
    for name in [n for n in headers if n.lower() in (TRACEPARENT, TRACESTATE)]:
        del headers[name]
    headers[TRACEPARENT] = parent
    if state:
        headers[TRACESTATE] = state


def begin_trace(
    tracer: Optional[RuntimeTracer],
    frame_headers: Sequence[Tuple[str, str]],
    headers: Dict[str, str],
    method: str,
    url: str,
    body: str,
    tenant_id: str,
    request_id: int,
    stream: bool,
) -> Optional[RequestTrace]:
    """Request start (pipeline ``_prepare``, before the request bytes are built).

    Puts the caller's trace context into ``headers`` (the HTTP request's, a fresh dict
    per request) and, with spans on, starts the request span and returns its
    :class:`RequestTrace`; None otherwise."""
    parent, state = _from_frame(frame_headers) if frame_headers else (None, None)
    if tracer is None:
        if parent is not None:
            _set_context(headers, parent, state)
        return None
    try:
        return RequestTrace(tracer, parent, state, headers, method, url, body, tenant_id,
                            request_id, stream)  # fmt: skip
    except Exception:  # tracing must never fail a request
        log.exception("could not start the trace of request %d", request_id)
        if parent is not None:
            _set_context(headers, parent, state)
        return None


# ---------------------------------------------------------------- GenAI attributes
def _genai_kind(method: str, url: str) -> Optional[str]:
    """The provider of a chat-completion request (GenAI ``gen_ai.provider.name``)."""
    if method != "POST":
        return None
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        host = url.split("://", 1)[-1].split("/", 1)[0].lower()
        return "azure.ai.openai" if ".azure." in host or host.endswith(".azure.com") else "openai"
    if path.endswith("/v1/messages"):
        return "anthropic"
    return None


_REQUEST_FIELDS = (
    ("model", "gen_ai.request.model", str),
    ("max_tokens", "gen_ai.request.max_tokens", int),
    ("max_completion_tokens", "gen_ai.request.max_tokens", int),
    ("temperature", "gen_ai.request.temperature", float),
    ("top_p", "gen_ai.request.top_p", float),
    ("top_k", "gen_ai.request.top_k", float),
    ("frequency_penalty", "gen_ai.request.frequency_penalty", float),
    ("presence_penalty", "gen_ai.request.presence_penalty", float),
    ("seed", "gen_ai.request.seed", int),
    ("n", "gen_ai.request.choice.count", int),
)


def _typed(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        return None
    if kind is str:
        return value if isinstance(value, str) else None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) else None


def genai_request_attributes(provider: str, body: str) -> Optional[Dict[str, Any]]:
    """GenAI attributes of a chat request body, or None when it is not one."""
    if not body or len(body) > _BODY_CAP:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "messages" not in data:
        return None
    attrs: Dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider}
    for key, attr, kind in _REQUEST_FIELDS:
        value = _typed(data.get(key), kind)
        if value is not None:
            attrs[attr] = value
    stop = data.get("stop", data.get("stop_sequences"))
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = stop
    return attrs


class _Answer:
    """GenAI response attributes gathered from an answer's body as it passes: a JSON
    object (parsed at the end, up to 4 MiB) or SSE (each ``data:`` event that can carry
    one of them is parsed as it completes; the rest are only scanned)."""

    __slots__ = ("_buf", "_first", "_mode", "_size", "attrs", "finish_reasons")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._mode = 0  # 0: undecided, 1: JSON, 2: SSE, 3: neither (ignored)
        self._first = True
        self._size = 0
        self.attrs: Dict[str, Any] = {}
        self.finish_reasons: List[str] = []

    def feed(self, data: bytes) -> None:
        if self._mode == 3 or not data:
            return
        if self._mode == 0:
            head = data.lstrip()
            if not head:
                return
            self._mode = 1 if head[:1] == b"{" else 2 if head[:1] in b"de:" else 3
        if self._mode == 1:
            self._size += len(data)
            if self._size > _BODY_CAP:
                self._mode = 3
                self._buf = bytearray()
            else:
                self._buf += data
            return
        buf = self._buf
        buf += data
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > _BODY_CAP:
                self._mode = 3
                self._buf = bytearray()
            return
        lines = bytes(buf[:end]).split(b"\n")
        del buf[: end + 1]
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:])

    def _event(self, payload: bytes) -> None:
        if not (
            self._first
            or b'"usage"' in payload
            or b'"stop_reason"' in payload
            or (b'"finish_reason"' in payload and b'"finish_reason":null' not in payload
                and b'"finish_reason": null' not in payload)
        ):  # fmt: skip
            return
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if isinstance(data, dict):
            self._first = False
            self._take(data)

    def close(self) -> None:
        if self._mode == 1 and self._buf:
            try:
                data = json.loads(bytes(self._buf))
            except ValueError:
                data = None
            if isinstance(data, dict):
                self._take(data)
        elif self._mode == 2 and self._buf:
            line = bytes(self._buf).strip()
            if line.startswith(b"data:"):
                self._event(line[5:])
        self._buf = bytearray()

    def _take(self, data: Dict[str, Any]) -> None:
        """OpenAI chat.completion(.chunk) and Anthropic message / stream events."""
        attrs = self.attrs
        message = data.get("message") if data.get("type") == "message_start" else data
        if isinstance(message, dict):
            if isinstance(message.get("id"), str):
                attrs.setdefault("gen_ai.response.id", message["id"])
            if isinstance(message.get("model"), str):
                attrs.setdefault("gen_ai.response.model", message["model"])
            self._usage(message.get("usage"))
            if isinstance(message.get("stop_reason"), str):
                self.finish_reasons.append(message["stop_reason"])
        self._usage(data.get("usage") if message is not data else None)
        delta = data.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self.finish_reasons.append(delta["stop_reason"])
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                    self.finish_reasons.append(choice["finish_reason"])

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, attr in (
            ("prompt_tokens", "gen_ai.usage.input_tokens"),
            ("input_tokens", "gen_ai.usage.input_tokens"),
            ("completion_tokens", "gen_ai.usage.output_tokens"),
            ("output_tokens", "gen_ai.usage.output_tokens"),
        ):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                self.attrs[attr] = value


# ---------------------------------------------------------------- spans
class RuntimeTracer:
    """The runtime's OpenTelemetry tracer: ``Runtime.tracer`` when spans are on.

    ``tracer_provider``: an opentelemetry-sdk ``TracerProvider`` (None: the global one).
    ``owned``: shut the provider down (flushing its spans) when the runtime stops."""

    def __init__(self, tracer_provider: Any = None, owned: bool = False) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from vastar_fast import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.provider: Any = provider
        self.owned = owned
        self.tracer = provider.get_tracer(SCOPE, __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.trace = trace

    def shutdown(self) -> None:
        """Flush and stop the provider this tracer owns (runtime shutdown)."""
        if self.owned:
            try:
                self.provider.shutdown()
            except Exception:
                log.exception("flushing the OpenTelemetry spans failed")


class RequestTrace:
    """The spans of one request (spans on): the request span and the current attempt's."""

    def __init__(
        self,
        tracer: RuntimeTracer,
        parent: Optional[str],
        state: Optional[str],
        headers: Dict[str, str],
        method: str,
        url: str,
        body: str,
        tenant_id: str,
        request_id: int,
        stream: bool,
    ) -> None:
        otel = tracer.trace
        self._tracer = tracer
        carrier: Dict[str, str] = {}
        if parent is not None:
            carrier[TRACEPARENT] = parent
            if state:
                carrier[TRACESTATE] = state
        else:  # the HTTP request's own trace headers, when the caller set them
            for name, value in headers.items():
                lower = name.lower()
                if lower in (TRACEPARENT, TRACESTATE):
                    carrier[lower] = value
        context = tracer.propagator.extract(carrier) if carrier else None
        self._url = redact_url(url)
        self._method = method
        self._headers = headers
        provider = _genai_kind(method, url)
        self._genai = genai_request_attributes(provider, body) if provider else None
        self._answer: Optional[_Answer] = None
        attributes: Dict[str, Any] = {
            "http.request.method": method,
            "url.full": self._url,
            "vastar.tenant_id": tenant_id,
            "vastar.request_id": request_id,
            "vastar.stream": stream,
        }
        self.span = tracer.tracer.start_span(
            f"vastar {method}", context=context, kind=otel.SpanKind.SERVER, attributes=attributes
        )
        self._request_context = otel.set_span_in_context(self.span)
        self.attempt_span: Any = None
        self._attempts = 0
        self._set_upstream_context(self._request_context)

    def _set_upstream_context(self, context: Any) -> None:
        carrier: Dict[str, str] = {}
        self._tracer.propagator.inject(carrier, context=context)
        parent = carrier.get(TRACEPARENT)
        if parent is not None:
            _set_context(self._headers, parent, carrier.get(TRACESTATE))

    def attempt(
        self,
        status: int,
        method: str,
        target: Any,
        headers: Dict[str, str],
        body: bytes,
        limits: Any,
    ) -> bytes:
        """A new upstream attempt (pipeline ``_attempt``): ends the previous attempt's
        span if still open (a redirect hop: ``status`` is its answer's), starts this
        one's, and returns the request bytes carrying its ``traceparent``."""
        from vastar_fast.runtime.shaping import build_request

        try:
            self._start_attempt(status, method, target, headers)
        except Exception:  # tracing must never fail a request
            _report("starting an attempt span")
        return build_request(method, target, headers, body, limits.max_request_headers,
                             limits.max_header_bytes)  # fmt: skip

    def _start_attempt(
        self, status: int, method: str, target: Any, headers: Dict[str, str]
    ) -> None:
        self._end_attempt(None, None, status)
        otel = self._tracer.trace
        self._attempts += 1
        self._headers = headers
        attributes: Dict[str, Any] = {
            "http.request.method": method,
            "url.full": redact_url(target.url),
            "server.address": target.host,
            "server.port": target.port,
        }
        if self._attempts > 1:
            attributes["http.request.resend_count"] = self._attempts - 1
        name = method
        if self._genai is not None:
            attributes.update(self._genai)
            model = self._genai.get("gen_ai.request.model")
            name = f"chat {model}" if model else "chat"
        if self._attempts == 1:
            self.span.set_attributes({"server.address": target.host, "server.port": target.port})
        self.attempt_span = self._tracer.tracer.start_span(
            name, context=self._request_context, kind=otel.SpanKind.CLIENT, attributes=attributes
        )
        if self._genai is not None:
            self._answer = _Answer()
        self._set_upstream_context(otel.set_span_in_context(self.attempt_span))

    def failed(self, error_class: int, message: str) -> None:
        """The attempt failed without an answer (pipeline ``on_fail``)."""
        try:
            self._end_attempt(error_class, message)
        except Exception:
            _report("ending an attempt span")

    def body(self, data: bytes) -> None:
        """A piece of the answer's body (pipeline ``on_body`` / ``on_done``)."""
        answer = self._answer
        if answer is not None:
            try:
                answer.feed(data)
            except Exception:
                self._answer = None
                _report("reading an answer for its GenAI attributes")

    def _end_attempt(
        self, error_class: Optional[int], message: Optional[str], status: int = 0
    ) -> None:
        span = self.attempt_span
        if span is None:
            return
        self.attempt_span = None
        otel = self._tracer.trace
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(otel.Status(otel.StatusCode.ERROR))
        if error_class:
            span.set_attribute("error.type", _ERROR_NAMES.get(error_class, str(error_class)))
            span.set_status(otel.Status(otel.StatusCode.ERROR, message))
        answer = self._answer
        self._answer = None
        if answer is not None and status:
            answer.close()
            span.set_attributes(answer.attrs)
            if answer.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", answer.finish_reasons)
        span.end()

    def finish(self, error_class: int, status: int, frame: Optional[bytes]) -> None:
        """The request's end (pipeline ``_finish``): ends the open attempt span and the
        request span, with the error class and the answer's status."""
        try:
            self._finish(error_class, status, frame)
        except Exception:
            _report("ending a request span")

    def _finish(self, error_class: int, status: int, frame: Optional[bytes]) -> None:
        message: Optional[str] = None
        if error_class and frame is not None:
            message = _error_message(frame)
        self._end_attempt(error_class, message, status)
        span = self.span
        otel = self._tracer.trace
        span.set_attribute("vastar.attempts", self._attempts)
        if status:
            span.set_attribute("http.response.status_code", status)
        if error_class:
            span.set_attribute("error.type", _ERROR_NAMES.get(error_class, str(error_class)))
            span.set_status(otel.Status(otel.StatusCode.ERROR, message))
        elif status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(otel.Status(otel.StatusCode.ERROR))
        span.end()


_reported = False


def _report(what: str) -> None:
    """A tracing failure: logged with its traceback once, then at DEBUG; the request
    goes on untraced."""
    global _reported
    if _reported:
        log.debug("OpenTelemetry tracing failed %s", what, exc_info=True)
        return
    _reported = True
    log.exception("OpenTelemetry tracing failed %s (reported once); requests are not affected",
                  what)  # fmt: skip


def _error_message(frame: bytes) -> Optional[str]:
    """The error message of a terminal ExecuteResponse frame (it names no secret)."""
    from vastar_fast.protocol import codec

    try:
        message: Optional[str] = codec.decode_execute_response(frame[5:]).error_message
    except Exception:
        return None
    return message


# ---------------------------------------------------------------- configuration
def check_otel_available() -> None:
    """Raise ConfigError saying what to install when the SDK or exporter is missing."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(_OTEL_MISSING) from None


def tracer_from_env(environ: Optional[Dict[str, str]] = None) -> RuntimeTracer:
    """A tracer with its own TracerProvider configured by the ``OTEL_*`` variables.

    ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp`` (default), ``console``, ``none``.
    ``otlp`` uses ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``:
    ``http/protobuf`` (default; the ``otel`` extra installs it) or ``grpc`` (needs
    opentelemetry-exporter-otlp-proto-grpc); the exporters read their endpoint, headers,
    timeout and compression variables themselves, the batch processor its ``OTEL_BSP_*``
    ones and the provider its sampler (``OTEL_TRACES_SAMPLER``, default parent-based
    always-on). The service name is ``OTEL_SERVICE_NAME`` (or ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``), else ``vastar-runtime``.
    """
    env = os.environ if environ is None else environ
    check_otel_available()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "vastar-runtime"}))
    provider = TracerProvider(resource=resource)
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in names:
        if name in ("", "none"):
            continue
        if name == "console":
            exporter: Any = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter(env)
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported by vastar runtime; use otlp, "
                "console or none"
            )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return RuntimeTracer(provider, owned=True)


def _otlp_exporter(env: Any) -> Any:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        else:
            raise ConfigError(
                f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_PROTOCOL) is not supported; "
                "use http/protobuf or grpc"
            )
    except ImportError:
        package = "grpc" if protocol == "grpc" else "http"
        raise ConfigError(
            f"the OTLP {protocol} exporter is not installed: pip install "
            f"opentelemetry-exporter-otlp-proto-{package} (the otel extra has the http one)"
        ) from None
    return OTLPSpanExporter()


def runtime_tracer(settings: RuntimeSettings) -> Optional[RuntimeTracer]:
    """``Runtime.tracer`` for these settings: None unless ``tracing.otel`` is on."""
    if not settings.tracing.otel:
        return None
    return tracer_from_env()
