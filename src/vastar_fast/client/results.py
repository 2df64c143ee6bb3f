"""Turning runtime events into the public result types; shared by both clients."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional

from ..errors import ConnectorException, ProtocolError
from ..protocol import codec
from ..protocol.connection import (
    Event,
    HealthReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from ..types import ErrorClass, HTTPResponse

__all__ = [
    "HealthStatus",
    "StreamState",
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
    rid, error_class, error_message, payload, duration_us = event  # one unpack: hot path
    if error_class != 0:
        raise ConnectorException(
            error_message or f"the runtime reported error class {error_class}",
            error_class,
            rid,
        )
    if not payload:
        raise ConnectorException(
            "the runtime answered with an empty payload", ErrorClass.PERMANENT, rid
        )
    try:
        status, headers, body, _streaming = _decode_payload(payload)
    except ProtocolError as exc:
        raise ConnectorException(
            f"the runtime's answer could not be read: {exc}", ErrorClass.PERMANENT, rid
        ) from None
    return HTTPResponse(rid, status, headers, body, duration_us, _SUCCESS, None)


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


class StreamState:
    """What both clients' streams know of an answer still arriving (no I/O here).

    The first event is the head: ``StreamStarted`` (the runtime streams: our extension)
    or the terminal ``ResponseReceived`` (a buffered answer from a runtime without the
    extension, or an error, raised as ConnectorException). Later events carry body
    chunks until the terminal response. ``_on_finished`` is the driver's hook, called
    once when the request is over (answered, failed or abandoned).
    """

    request_id: int
    status_code: int
    headers: Dict[str, str]

    def __init__(self) -> None:
        self._pending: Deque[bytes] = deque()
        self._finished = False
        self.streamed = False
        """True when the runtime forwarded the body incrementally (our extension)."""
        self.duration_us = 0
        self.is_streaming = False

    def _on_finished(self) -> None:
        raise NotImplementedError

    def _end(self) -> bool:
        """Mark the request over; True the first time (the caller then cleans up)."""
        if self._finished:
            return False
        self._finished = True
        self._on_finished()
        return True

    def _head(self, event: Event) -> None:
        if isinstance(event, StreamStarted):
            self.streamed = True
            self.status_code = event.status_code
            self.headers = event.headers
            self.is_streaming = event.is_streaming
        else:
            self._finish(event)

    def _finish(self, event: Event) -> None:
        self._end()
        assert isinstance(event, ResponseReceived)
        response = response_from_event(event)
        self.status_code = response.status_code
        self.headers = response.headers
        self.duration_us = response.duration_us
        if response.body:
            self._pending.append(response.body)

    def _body(self, event: Event) -> Optional[bytes]:
        """The chunk an event after the head carries (finishing on the terminal one)."""
        if isinstance(event, StreamDataReceived):
            return event.data or None
        if isinstance(event, ResponseReceived):
            self._finish(event)
        return None
