"""W3C trace context for the ExecuteRequests our clients send (both client-core twins).

When ``opentelemetry-api`` is installed and a span is current, the clients add
``traceparent`` (and ``tracestate``) entries to the ExecuteRequest KeyValue list, beside
``vastar-ext`` and ``vastar-token``. Released runtimes ignore that list; ``vastar
runtime`` continues the trace (``runtime/tracing.py``).

This sits on the client's hot path, so the cost without a span is a pointer compare
(opentelemetry not installed) or one ``ContextVar.get`` and a truth test (installed,
nothing current): OpenTelemetry keeps its current context in a ``ContextVar`` holding a
dict (``opentelemetry.context.Context``), empty until something is set. The lookup is
done once, lazily, on the first request (:func:`context_getter`); the text itself is
made by opentelemetry's own W3C propagator, only when the context is not empty.
"""

from __future__ import annotations

from .._log import lazy_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional, Tuple

    Getter = Callable[[], Mapping[str, Any]]

__all__ = ["TRACEPARENT", "TRACESTATE", "context_getter", "trace_pairs"]

log = lazy_logger("vastar_fast.client")

TRACEPARENT = "traceparent"
"""ExecuteRequest.headers key (and HTTP header) of the W3C trace parent."""
TRACESTATE = "tracestate"
"""ExecuteRequest.headers key (and HTTP header) of the W3C trace state."""

_loaded = False
_getter: Optional[Getter] = None
_propagator: Any = None
_warned = False


def context_getter() -> Optional[Getter]:
    """The function returning opentelemetry's current context (a mapping, empty when
    nothing is current), or None when opentelemetry-api is not installed. Looked up once
    per process (the first call imports ``opentelemetry.context``)."""
    global _loaded, _getter
    if _loaded:
        return _getter
    _loaded = True
    import contextvars

    try:
        from opentelemetry import context as otel_context
    except Exception:  # not installed (or broken): the clients send no trace context
        _getter = None
        return None
    # The default runtime context keeps the current Context in a ContextVar: reading it
    # directly costs 19 ns against 59 ns for get_current() (docs/decisions.md). Any other
    # runtime context (OTEL_PYTHON_CONTEXT) goes through the public function.
    var = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    _getter = var.get if isinstance(var, contextvars.ContextVar) else otel_context.get_current
    return _getter


def trace_pairs(ctx: Mapping[str, Any]) -> Optional[Tuple[Tuple[str, str], ...]]:
    """The ``traceparent`` / ``tracestate`` KeyValue entries for the span current in
    ``ctx`` (a non-empty opentelemetry Context), or None when it holds no valid span.
    Never raises: tracing must not fail a request."""
    global _propagator, _warned
    try:
        propagator = _propagator
        if propagator is None:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            propagator = _propagator = TraceContextTextMapPropagator()
        carrier: dict = {}
        propagator.inject(carrier, context=ctx)
    except Exception as exc:
        if not _warned:
            _warned = True
            log.warning("could not read the current OpenTelemetry span (%s); requests are "
                        "sent without trace context", exc)  # fmt: skip
        return None
    parent = carrier.get(TRACEPARENT)
    if not parent:
        return None
    state = carrier.get(TRACESTATE)
    if state:
        return ((TRACEPARENT, parent), (TRACESTATE, state))
    return ((TRACEPARENT, parent),)


def _reset() -> None:
    """For tests: look opentelemetry up again on the next request."""
    global _loaded, _getter, _propagator, _warned
    _loaded = False
    _getter = None
    _propagator = None
    _warned = False
