"""What every client agrees on: how long to wait, and what each failure says.

Both twins of the client core (``_client_py`` and the compiled ``_codec_c``) and both
drivers (``RuntimeClient``, ``AsyncRuntimeClient``) build their errors here, so a
failure reads the same whichever twin or driver met it. Secrets never reach these
texts: they name endpoints and request ids, never headers or bodies.
"""

from __future__ import annotations

from ..errors import ConnectorException, ProtocolError
from ..types import ErrorClass

__all__ = [
    "CLIENT_GRACE_MS",
    "bad_frame",
    "client_closed",
    "closed_by_runtime",
    "connection_lost",
    "empty_payload",
    "for_request",
    "health_timed_out",
    "invalid_request",
    "runtime_error",
    "send_stalled",
    "send_timed_out",
    "timed_out",
    "too_large",
    "unreadable_payload",
    "wait_seconds",
]

CLIENT_GRACE_MS = 250
"""How long past a request's deadline the client waits for the runtime's own TIMEOUT
answer (which says more) before giving up on its own."""


def wait_seconds(timeout_ms: int) -> float:
    """Seconds a client waits for the answer to a request with this timeout."""
    return (timeout_ms + CLIENT_GRACE_MS) / 1000.0


# ---------------------------------------------------------------- the request itself
def invalid_request(exc: ProtocolError, request_id: int) -> ConnectorException:
    return ConnectorException(f"invalid request: {exc}", ErrorClass.INVALID_REQUEST, request_id)


def too_large(frame_size: int, limit: int, request_id: int) -> ConnectorException:
    return ConnectorException(
        f"request too large: its frame would carry {frame_size} bytes, over the limit of "
        f"{limit} bytes that every Vastar runtime enforces; nothing was sent. Send a smaller "
        "body (the whole request, JSON-escaped, must fit in one frame)",
        ErrorClass.INVALID_REQUEST,
        request_id,
    )


# ---------------------------------------------------------------- the runtime's answer
def runtime_error(error_class: int, message: object, request_id: int) -> ConnectorException:
    """The runtime's own failure report (error_class != 0), as the released SDK raises it."""
    return ConnectorException(
        message if isinstance(message, str) and message else
        f"the runtime reported error class {error_class}",
        error_class,
        request_id,
    )  # fmt: skip


def empty_payload(request_id: int) -> ConnectorException:
    return ConnectorException(
        "the runtime answered with an empty payload", ErrorClass.PERMANENT, request_id
    )


def unreadable_payload(exc: ProtocolError, request_id: int) -> ConnectorException:
    return ConnectorException(
        f"the runtime's answer could not be read: {exc}", ErrorClass.PERMANENT, request_id
    )


def bad_frame(exc: ProtocolError, oversized: bool) -> ConnectorException:
    what = "an oversized frame" if oversized else "an invalid frame"
    return ConnectorException(
        f"the runtime sent {what}: {exc}; the connection was closed", ErrorClass.PERMANENT, 0
    )


# ---------------------------------------------------------------- waiting
def timed_out(where: str, request_id: int) -> ConnectorException:
    return ConnectorException(
        f"no answer from the runtime at {where} before the client-side timeout "
        f"(request_id={request_id}); the runtime may be overloaded or stuck",
        ErrorClass.TIMEOUT,
        request_id,
    )


def send_timed_out(where: str, request_id: int) -> ConnectorException:
    return ConnectorException(
        f"could not send the request to the runtime at {where} before its timeout "
        f"(request_id={request_id}): the connection was busy sending other requests to a "
        "runtime that reads slowly; nothing of this request was sent",
        ErrorClass.TIMEOUT,
        request_id,
    )


def send_stalled(where: str, request_id: int) -> ConnectorException:
    return ConnectorException(
        f"the runtime at {where} stopped reading before the request was sent "
        f"(request_id={request_id}); the connection was closed (part of a frame went out)",
        ErrorClass.TIMEOUT,
        request_id,
    )


def health_timed_out(where: str, timeout_ms: int) -> ConnectorException:
    return ConnectorException(
        f"the runtime at {where} did not answer a health check within {timeout_ms} ms",
        ErrorClass.TIMEOUT,
        0,
    )


# ---------------------------------------------------------------- the connection
def connection_lost(detail: object, sending: bool = False) -> ConnectorException:
    during = " while sending" if sending else ""
    return ConnectorException(
        f"lost the connection to the runtime{during}: {detail}", ErrorClass.TRANSIENT, 0
    )


def closed_by_runtime() -> ConnectorException:
    return ConnectorException(
        "the runtime closed the connection before answering; it may have stopped or "
        "restarted (the request may or may not have been executed)",
        ErrorClass.TRANSIENT,
        0,
    )


def client_closed() -> ConnectorException:
    return ConnectorException(
        "the client was closed while the request was in flight", ErrorClass.TRANSIENT, 0
    )


def for_request(exc: ConnectorException, request_id: int) -> ConnectorException:
    """A connection-wide failure, reported for one request."""
    if exc.request_id == request_id:
        return exc
    return ConnectorException(exc.message, exc.error_class, request_id)
