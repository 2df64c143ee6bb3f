"""Sans-I/O protocol core: bytes in, events out; requests in, bytes out.

Nothing here touches a socket or a clock it was not given (h11's approach). The sync
client, the asyncio client and the runtime daemon are thin drivers around
:class:`ClientConnection` and :class:`ServerConnection`; the byte layout itself lives in
``protocol.codec`` (and its compiled twin).

``ClientConnection`` is the client core twin chosen by ``protocol.client_core`` (the
compiled section of ``_codec_c``, or ``_client_py``): see ``_client_py`` for what it
does. The event types live in ``protocol.events``.

Extensions (docs/protocol.md): a client opts in per request by putting the
``vastar-ext`` key in ExecuteRequest.headers, with a comma-separated feature list
(``stream``). Only then may the runtime send CreditUpdate and the message types 5+.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

# Absolute imports: the runtime also compiles this module, as
# vastar_fast.runtime._compiled.connection (setup.py), for its ServerConnection.
from vastar_fast._log import lazy_logger
from vastar_fast.errors import ProtocolError
from vastar_fast.protocol import codec
from vastar_fast.protocol.client_core import ClientConnection, Waiter
from vastar_fast.protocol.events import (
    CancelReceived,
    CreditsUpdated,
    Event,
    HealthCheckReceived,
    HealthReceived,
    InvalidMessage,
    RequestReceived,
    ResponseReceived,
    StreamDataReceived,
    StreamStarted,
)
from vastar_fast.protocol.frames import EXT_HEADER, EXT_STREAM
from vastar_fast.types import MAX_PAYLOAD_SIZE, ErrorClass, MessageType

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
    "Waiter",
    "extensions_of",
]

log = lazy_logger("vastar_fast.protocol")

_EXECUTE_REQUEST = int(MessageType.EXECUTE_REQUEST)
_HEALTH_CHECK = int(MessageType.HEALTH_CHECK)
_CANCEL_REQUEST = int(MessageType.CANCEL_REQUEST)
_tuple_new = tuple.__new__


def extensions_of(headers: Sequence[Tuple[str, str]]) -> FrozenSet[str]:
    """The extension features a request opted in to through ExecuteRequest.headers."""
    for key, value in headers:
        if key == EXT_HEADER:
            return frozenset(f.strip() for f in value.split(",") if f.strip())
    return frozenset()


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
                    # tuple.__new__ is what the NamedTuple's own __new__ calls, without
                    # its Python frame (one per request in the daemon)
                    events.append(_tuple_new(RequestReceived, (req, ext)))
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
