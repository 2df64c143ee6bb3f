"""The events of the sans-I/O core: what a peer's bytes turned into.

Both codec twins build them, so they live in their own module (like the frames in
``frames.py``). Events are NamedTuples, cheap to make on the hot path; drivers
dispatch on their type.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, NamedTuple, Optional, Union

from .frames import ExecuteRequestFrame
from .frames import ExecuteResponseFrame as ResponseReceived

__all__ = [
    "CancelReceived",
    "CreditsUpdated",
    "Event",
    "HealthCheckReceived",
    "HealthReceived",
    "InvalidMessage",
    "RequestReceived",
    "ResponseReceived",
    "StreamDataReceived",
    "StreamStarted",
]

# ResponseReceived, the terminal ExecuteResponse of a request (request_id, error_class,
# error_message, payload, duration_us), is the decoded frame itself: receiving a
# response allocates nothing more than the frame.


class StreamStarted(NamedTuple):
    """Extension 5: status and headers of a streamed answer."""

    request_id: int
    status_code: int
    headers: Dict[str, str]
    is_streaming: bool


class StreamDataReceived(NamedTuple):
    """Extension 6: body bytes, in order."""

    request_id: int
    data: bytes


class HealthReceived(NamedTuple):
    healthy: bool
    message: Optional[str]
    active_requests: int
    available_credits: int


class CreditsUpdated(NamedTuple):
    credit_delta: int
    total_credits: int


class RequestReceived(NamedTuple):
    """Server side: a decoded ExecuteRequest and the extensions it opted in to."""

    frame: ExecuteRequestFrame
    extensions: FrozenSet[str]


class HealthCheckReceived(NamedTuple):
    pass


class CancelReceived(NamedTuple):
    request_id: int


class InvalidMessage(NamedTuple):
    """Server side: a frame that could not be understood.

    ``fatal`` means the byte stream cannot be trusted any more (bad length, unparsable
    table) and the connection must be closed after answering.
    """

    message: str
    fatal: bool


Event = Union[
    ResponseReceived,
    StreamStarted,
    StreamDataReceived,
    HealthReceived,
    CreditsUpdated,
    RequestReceived,
    HealthCheckReceived,
    CancelReceived,
    InvalidMessage,
]
