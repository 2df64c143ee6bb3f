"""Public result types both clients share, and the stream bookkeeping (no I/O here)."""

from __future__ import annotations

from collections import deque

from ..protocol.events import (
    HealthReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass as record
    from typing import Deque, Dict, Optional

    from ..protocol.client_core import ClientConnection, Waiter
    from ..protocol.events import Event
else:
    from .._records import record

__all__ = ["HealthStatus", "StreamState", "health_from_event"]


@record(frozen=True)
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
    chunks until the terminal response.
    """

    def __init__(self, conn: ClientConnection, waiter: Waiter) -> None:
        self._conn = conn
        self._waiter = waiter
        self.request_id: int = waiter.request_id
        self.status_code = 0
        self.headers: Dict[str, str] = {}
        self._pending: Deque[bytes] = deque()
        self._finished = False
        self.streamed = False
        """True when the runtime forwarded the body incrementally (our extension)."""
        self.duration_us = 0
        self.is_streaming = False

    def _end(self) -> bool:
        """Mark the request over; True the first time (the caller then cleans up)."""
        if self._finished:
            return False
        self._finished = True
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
        response = self._conn.response(event)
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
