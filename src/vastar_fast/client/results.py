"""Turning runtime events into the public result types; shared by both clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConnectorException, ProtocolError
from ..protocol import codec
from ..protocol.connection import Event, HealthReceived, ResponseReceived
from ..types import ErrorClass, HTTPResponse

__all__ = [
    "HealthStatus",
    "health_from_event",
    "invalid_request",
    "response_from_event",
    "response_timeout_s",
]

_SUCCESS = ErrorClass.SUCCESS
_decode_payload = codec.decode_http_response_payload

CLIENT_GRACE_MS = 250
"""How long past a request's deadline the client waits for the runtime's own TIMEOUT
answer (which says more) before giving up on its own."""


def response_timeout_s(timeout_ms: int) -> float:
    """Seconds the client waits for a request with this timeout."""
    return (timeout_ms + CLIENT_GRACE_MS) / 1000.0


def response_from_event(event: ResponseReceived) -> HTTPResponse:
    """An HTTPResponse, or the ConnectorException the released SDK raises for it."""
    rid = event.request_id
    if event.error_class != 0:
        raise ConnectorException(
            event.error_message or f"the runtime reported error class {event.error_class}",
            event.error_class,
            rid,
        )
    if not event.payload:
        raise ConnectorException(
            "the runtime answered with an empty payload", ErrorClass.PERMANENT, rid
        )
    try:
        status, headers, body, _streaming = _decode_payload(event.payload)
    except ProtocolError as exc:
        raise ConnectorException(
            f"the runtime's answer could not be read: {exc}", ErrorClass.PERMANENT, rid
        ) from None
    return HTTPResponse(rid, status, headers, body, event.duration_us, _SUCCESS, None)


def invalid_request(exc: ProtocolError, request_id: int) -> ConnectorException:
    return ConnectorException(f"invalid request: {exc}", ErrorClass.INVALID_REQUEST, request_id)


@dataclass(frozen=True)
class HealthStatus:
    """What a runtime said about itself. ``supported`` is False for a runtime that has
    no HealthCheck handling (the released one): it is alive, but says nothing more."""

    healthy: bool
    message: Optional[str]
    active_requests: int
    available_credits: int
    supported: bool = True


def health_from_event(event: Event) -> HealthStatus:
    if isinstance(event, HealthReceived):
        return HealthStatus(
            event.healthy, event.message, event.active_requests, event.available_credits
        )
    if isinstance(event, ResponseReceived):
        return HealthStatus(
            True,
            "the runtime is up but does not support HealthCheck "
            f"({event.error_message or 'no message'})",
            0,
            0,
            supported=False,
        )
    raise TypeError(f"unexpected event {event!r}")
