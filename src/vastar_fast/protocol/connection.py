"""Sans-I/O protocol core: bytes in, events out; requests in, bytes out.

Nothing here touches a socket or a clock it was not given (h11's approach). The sync
client, the asyncio client and the runtime daemon are thin drivers around
:class:`ClientConnection` and :class:`ServerConnection`; the byte layout itself lives in
``protocol.codec`` (and its compiled twin).

Extensions (docs/protocol.md): a client opts in per request by putting the
``vastar-ext`` key in ExecuteRequest.headers, with a comma-separated feature list
(``stream``). Only then may the runtime send CreditUpdate and the message types 5+.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, Union

from ..errors import ProtocolError
from ..types import MAX_PAYLOAD_SIZE, ErrorClass, MessageType
from . import codec

# ResponseReceived, the terminal ExecuteResponse of a request (request_id, error_class,
# error_message, payload, duration_us), is the decoded frame itself: both codec twins
# build this one NamedTuple class, so receiving a response allocates nothing more.
from ._codec_py import ExecuteResponseFrame as ResponseReceived

__all__ = [
    "EXT_HEADER",
    "EXT_STREAM",
    "CancelReceived",
    "ClientConnection",
    "CreditsUpdated",
    "Event",
    "HealthCheckReceived",
    "HealthReceived",
    "InvalidMessage",
    "RequestReceived",
    "ResponseReceived",
    "ServerConnection",
    "StreamDataReceived",
    "StreamStarted",
    "extensions_of",
]

log = logging.getLogger("vastar_fast.protocol")

EXT_HEADER = "vastar-ext"
"""ExecuteRequest.headers key through which a client opts in to extensions."""
EXT_STREAM = "stream"
"""Feature: forward the upstream answer incrementally (StreamStart, StreamChunk)."""

_EXECUTE_REQUEST = int(MessageType.EXECUTE_REQUEST)
_EXECUTE_RESPONSE = int(MessageType.EXECUTE_RESPONSE)
_HEALTH_CHECK = int(MessageType.HEALTH_CHECK)
_HEALTH_RESPONSE = int(MessageType.HEALTH_RESPONSE)
_CREDIT_UPDATE = int(MessageType.CREDIT_UPDATE)
_STREAM_START = int(MessageType.STREAM_START)
_STREAM_CHUNK = int(MessageType.STREAM_CHUNK)
_CANCEL_REQUEST = int(MessageType.CANCEL_REQUEST)


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

    frame: codec.ExecuteRequestFrame
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


# Events are NamedTuples (cheap to make on the hot path); drivers dispatch on their type.
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


def extensions_of(headers: Sequence[Tuple[str, str]]) -> FrozenSet[str]:
    """The extension features a request opted in to through ExecuteRequest.headers."""
    for key, value in headers:
        if key == EXT_HEADER:
            return frozenset(f.strip() for f in value.split(",") if f.strip())
    return frozenset()


class ClientConnection:
    """The client half: builds request frames, turns received bytes into events.

    It tracks which request ids are outstanding so that stray frames (for requests
    already finished or cancelled) are dropped here instead of confusing a driver.
    """

    def __init__(
        self, max_frame_size: int = MAX_PAYLOAD_SIZE, request_id_seed: Optional[int] = None
    ) -> None:
        self._frames = codec.FrameBuffer(max_frame_size)
        self._next_id = int(time.time() * 1000) if request_id_seed is None else request_id_seed
        self.outstanding: Dict[int, bool] = {}
        """request_id -> whether it opted in to streaming."""
        self.credits: Optional[int] = None
        """Requests the runtime allows in flight on this connection (None: not announced)."""

    def next_request_id(self) -> int:
        """A counter seeded with the current time in ms, as the released SDK does."""
        rid = self._next_id
        self._next_id = rid + 1
        return rid

    def send_http(
        self,
        request_id: int,
        tenant_id: str,
        workspace_id: Optional[str],
        trace_id: Optional[str],
        deadline_at_ms: int,
        method: str,
        url: str,
        headers: Optional[Dict[str, str]],
        body: Union[bytes, str, None],
        stream: bool = False,
    ) -> bytes:
        """The frame for one http request; registers it as outstanding."""
        ext = ((EXT_HEADER, EXT_STREAM),) if stream else None
        frame = codec.encode_http_request_frame(
            request_id, tenant_id, workspace_id, trace_id, deadline_at_ms,
            method, url, headers, body, ext,
        )  # fmt: skip
        self.outstanding[request_id] = stream
        return frame

    def send_health_check(self) -> bytes:
        return codec.encode_health_check()

    def send_cancel(self, request_id: int) -> bytes:
        """Ask the runtime to abandon a request; its terminal response still arrives."""
        return codec.encode_cancel_request(request_id)

    def forget(self, request_id: int) -> None:
        """Stop tracking a request (its caller gave up); late frames for it are dropped."""
        self.outstanding.pop(request_id, None)

    # ---------------------------------------------------------------- receiving
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> List[Event]:
        self._frames.buffer_updated(nbytes)
        return self._drain()

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed received bytes; return the events they complete.

        Raises ProtocolError (FrameTooLargeError for an oversized length field) when the
        stream is corrupt: the connection must then be closed.
        """
        self._frames.feed(data)
        return self._drain()

    def _drain(self) -> List[Event]:
        events: List[Event] = []
        for mtype, body in self._frames.frames():
            if mtype == _EXECUTE_RESPONSE:
                r = codec.decode_execute_response(body)
                self.outstanding.pop(r.request_id, None)
                events.append(r)
            elif mtype == _STREAM_CHUNK:
                c = codec.decode_stream_chunk(body)
                if c.request_id in self.outstanding:
                    events.append(StreamDataReceived(c.request_id, c.data))
            elif mtype == _STREAM_START:
                s = codec.decode_stream_start(body)
                if s.request_id in self.outstanding:
                    events.append(
                        StreamStarted(s.request_id, s.status_code, dict(s.headers), s.is_streaming)
                    )
            elif mtype == _HEALTH_RESPONSE:
                events.append(HealthReceived._make(codec.decode_health_response(body)))
            elif mtype == _CREDIT_UPDATE:
                u = codec.decode_credit_update(body)
                self.credits = u.total_credits
                events.append(CreditsUpdated(u.credit_delta, u.total_credits))
            else:
                log.debug("ignoring message type %d from the runtime", mtype)
        return events


class ServerConnection:
    """The runtime half: turns received bytes into requests, answers into bytes.

    It remembers whether the peer ever opted in to extensions (the ``vastar-ext`` key
    of an ExecuteRequest; a HealthCheck or CancelRequest is not an opt-in): only then may
    the runtime send it CreditUpdate or the extension message types.
    """

    def __init__(self, max_frame_size: int = MAX_PAYLOAD_SIZE) -> None:
        self._frames = codec.FrameBuffer(max_frame_size)
        self.extended = False
        self.closed = False

    @property
    def partial_frame(self) -> bool:
        """Bytes of a frame not yet complete are waiting (for a partial-frame timeout)."""
        return bool(self._frames.pending)

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed received bytes; return the events they complete.

        A corrupt byte stream yields a final fatal :class:`InvalidMessage`; after it the
        connection is marked closed and further data is ignored.
        """
        if self.closed:
            return []
        self._frames.feed(data)
        events: List[Event] = []
        while True:
            try:
                frame = self._frames.next_frame()
            except ProtocolError as exc:
                self.closed = True
                events.append(InvalidMessage(str(exc), True))
                return events
            if frame is None:
                return events
            mtype, body = frame
            try:
                if mtype == _EXECUTE_REQUEST:
                    req = codec.decode_execute_request(body)
                    ext = extensions_of(req.headers) if req.headers else frozenset()
                    if ext:
                        self.extended = True
                    events.append(RequestReceived(req, ext))
                elif mtype == _HEALTH_CHECK:
                    # Answered with a HealthResponse only: asking for health is not an
                    # opt-in to the extensions (no unsolicited CreditUpdate follows).
                    events.append(HealthCheckReceived())
                elif mtype == _CANCEL_REQUEST:
                    events.append(CancelReceived(codec.decode_cancel_request(body).request_id))
                else:
                    events.append(InvalidMessage(f"unknown message type {mtype}", False))
            except ProtocolError as exc:
                self.closed = True
                events.append(InvalidMessage(f"Invalid FlatBuffers message: {exc}", True))
                return events

    # ---------------------------------------------------------------- sending
    @staticmethod
    def send_response(
        request_id: int,
        error_class: int,
        error_message: Optional[str],
        payload: Optional[bytes],
        duration_us: int,
    ) -> bytes:
        return codec.encode_execute_response(
            request_id, error_class, error_message, payload, duration_us
        )

    @staticmethod
    def send_error(
        request_id: int, error_class: ErrorClass, message: str, duration_us: int = 0
    ) -> bytes:
        return codec.encode_execute_response(
            request_id, int(error_class), message, None, duration_us
        )

    @staticmethod
    def send_http_response(
        request_id: int,
        status_code: int,
        headers: Dict[str, str],
        body: Union[str, bytes],
        is_streaming: bool,
        duration_us: int,
    ) -> bytes:
        return codec.encode_http_response_frame(
            request_id, status_code, headers, body, is_streaming, duration_us
        )

    @staticmethod
    def send_health(healthy: bool, message: Optional[str], active: int, credits: int) -> bytes:
        return codec.encode_health_response(healthy, message, active, credits)

    def send_credit_update(self, credit_delta: int, total_credits: int) -> bytes:
        """CreditUpdate for an extended peer; b"" for one that never opted in."""
        if not self.extended:
            return b""
        return codec.encode_credit_update(credit_delta, total_credits)

    @staticmethod
    def send_stream_start(
        request_id: int, status_code: int, headers: Dict[str, str], is_streaming: bool
    ) -> bytes:
        return codec.encode_stream_start(
            request_id, status_code, list(headers.items()), is_streaming
        )

    @staticmethod
    def send_stream_chunk(request_id: int, data: bytes) -> bytes:
        return codec.encode_stream_chunk(request_id, data)
