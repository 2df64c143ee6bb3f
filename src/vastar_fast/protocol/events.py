"""The events of the sans-I/O core: what a peer's bytes turned into.

Both codec twins build them, so they live in their own module (like the frames in
``frames.py``). Events are NamedTuples, cheap to make on the hot path; drivers
dispatch on their type.
"""

from __future__ import annotations

from .frames import ExecuteRequestFrame
from .frames import ExecuteResponseFrame as ResponseReceived

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing.NamedTuple for type checkers; no typing import at run time
    from typing import Dict, FrozenSet, NamedTuple, Optional, Union
else:
    from .._records import NamedTuple

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


if TYPE_CHECKING:
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


_EVENT_TYPES = (
    ResponseReceived,
    StreamStarted,
    StreamDataReceived,
    HealthReceived,
    CreditsUpdated,
    RequestReceived,
    HealthCheckReceived,
    CancelReceived,
    InvalidMessage,
)


def __getattr__(name: str) -> object:
    """``Event``, the ``typing.Union`` of the events, made on first use: importing
    typing for it at import would cost more than this whole module."""
    if name == "Event":
        from typing import Union

        globals()["Event"] = Union[_EVENT_TYPES]
        return globals()["Event"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
