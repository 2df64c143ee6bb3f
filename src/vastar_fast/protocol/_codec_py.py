"""Pure-Python twin of the Vastar IPC wire codec.

This module and its compiled twin ``_codec_c.pyx`` are the only places that know the
wire format: ``[u32 big-endian L][u8 message_type][FlatBuffers bytes, L-1 of them]``
with the tables of ``schemas/connector_ipc.fbs``, plus the JSON payload of the ``http``
connector. Everything else (clients, runtime) goes through ``protocol.codec``.

Encoding uses the official ``flatbuffers`` Builder, so the output is whatever any
FlatBuffers reader expects. Decoding verifies every offset against the buffer before
reading (the official Python runtime does not), so a hostile or truncated frame raises
``ProtocolError`` instead of reading past the end or wrapping around with negative
indices. The compiled twin applies exactly the same checks in the same order.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import FrameTooLargeError, ProtocolError
from ..types import MAX_PAYLOAD_SIZE
from .frames import (
    _KV_MAX_ENTRIES,
    _KV_SLACK,
    CancelRequestFrame,
    CreditUpdateFrame,
    ExecuteRequestFrame,
    ExecuteResponseFrame,
    HealthResponseFrame,
    HTTPRequestPayload,
    HTTPResponsePayload,
    StreamChunkFrame,
    StreamStartFrame,
    _kv_amplified,
    _kv_too_many,
)

if TYPE_CHECKING:
    import flatbuffers

__all__ = [
    "CancelRequestFrame",
    "CreditUpdateFrame",
    "ExecuteRequestFrame",
    "ExecuteResponseFrame",
    "FrameBuffer",
    "HTTPRequestPayload",
    "HTTPResponsePayload",
    "HealthResponseFrame",
    "StreamChunkFrame",
    "StreamStartFrame",
    "decode_cancel_request",
    "decode_credit_update",
    "decode_execute_request",
    "decode_execute_response",
    "decode_health_response",
    "decode_http_request_payload",
    "decode_http_response_payload",
    "decode_stream_chunk",
    "decode_stream_start",
    "encode_cancel_request",
    "encode_credit_update",
    "encode_execute_request",
    "encode_execute_response",
    "encode_frame",
    "encode_health_check",
    "encode_health_response",
    "encode_http_request_frame",
    "encode_http_request_payload",
    "encode_http_response_frame",
    "encode_http_response_payload",
    "encode_stream_chunk",
    "encode_stream_start",
]

# Message types (kept as plain ints here: this is the hot path).
_EXECUTE_REQUEST = 0
_EXECUTE_RESPONSE = 1
_HEALTH_CHECK = 2
_HEALTH_RESPONSE = 3
_CREDIT_UPDATE = 4
_STREAM_START = 5
_STREAM_CHUNK = 6
_CANCEL_REQUEST = 7

_HEADER = struct.Struct(">IB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I8 = struct.Struct("<b")
_U8 = struct.Struct("<B")

Headers = Sequence[Tuple[str, str]]


_Builder: Any = None


def _load_flatbuffers() -> Any:
    """The official runtime, imported on first need: it pulls in numpy whenever numpy is
    installed (about 125 ms of ``import vastar_fast``), and only this twin's encoders use
    it. A FrameBuffer loads it too, so that the import happens when a connection is made,
    not inside the first answer a runtime encodes (whose deadline is already running)."""
    global _Builder
    if _Builder is None:
        from flatbuffers import Builder

        _Builder = Builder
    return _Builder


def _builder(initial_size: int) -> flatbuffers.Builder:
    """A flatbuffers.Builder."""
    return (_Builder or _load_flatbuffers())(initial_size)


# --------------------------------------------------------------------------- framing


def encode_frame(message_type: int, body: bytes) -> bytes:
    """Prefix ``body`` with its length (type byte included) and the type byte."""
    return _HEADER.pack(len(body) + 1, message_type) + body


def _frame(message_type: int, builder: flatbuffers.Builder) -> bytes:
    out = builder.Output()
    return _HEADER.pack(len(out) + 1, message_type) + out


class FrameBuffer:
    """Reassembles frames from a byte stream: the socket read loop's sans-I/O half.

    Feed it bytes with :meth:`feed` (or receive straight into :meth:`get_buffer` and
    report with :meth:`buffer_updated`) and take complete frames with :meth:`next_frame`.
    A length field of 0 or above ``max_frame_size`` raises, and keeps raising: the stream
    cannot be resynchronised, so the connection must be closed.
    """

    __slots__ = ("_buf", "_error", "_max", "_pos", "_recv")

    def __init__(self, max_frame_size: int = MAX_PAYLOAD_SIZE) -> None:
        if _Builder is None:
            _load_flatbuffers()  # a connection is being made: it will encode soon
        self._buf = bytearray()
        self._pos = 0
        self._max = max_frame_size
        self._recv = bytearray(65536)
        self._error: Optional[ProtocolError] = None

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def pending(self) -> int:
        """Bytes received but not yet handed out as a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        self._buf += data

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable buffer to ``recv_into``; report what was written with buffer_updated."""
        if sizehint > len(self._recv):
            self._recv = bytearray(sizehint)
        return memoryview(self._recv)

    def buffer_updated(self, nbytes: int) -> None:
        if not 0 <= nbytes <= len(self._recv):
            # a negative count would otherwise append stale bytes ([:-k] slicing)
            raise ValueError(
                f"nbytes={nbytes} is outside the {len(self._recv)}-byte receive buffer"
            )
        self._buf += memoryview(self._recv)[:nbytes]

    def next_frame(self) -> Optional[Tuple[int, bytes]]:
        """The next complete ``(message_type, body)``, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 4:
            if pos:
                del buf[:pos]
                self._pos = 0
            return None
        length = int.from_bytes(buf[pos : pos + 4], "big")
        if length == 0:
            self._error = ProtocolError(
                "frame length field is 0; every frame carries at least its message-type byte"
            )
            raise self._error
        if length > self._max:
            self._error = FrameTooLargeError(length, self._max)
            raise self._error
        if avail < 4 + length:
            if pos:
                del buf[:pos]
                self._pos = 0
            return None
        end = pos + 4 + length
        message_type = buf[pos + 4]
        body = bytes(buf[pos + 5 : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return message_type, body

    def frames(self) -> List[Tuple[int, bytes]]:
        """Every complete frame received so far."""
        out: List[Tuple[int, bytes]] = []
        while True:
            frame = self.next_frame()
            if frame is None:
                return out
            out.append(frame)


# --------------------------------------------------------------------------- reading


class _Table:
    """A verified view of one FlatBuffers table inside ``buf``."""

    __slots__ = ("buf", "n", "pos", "vt", "vt_size")

    def __init__(self, buf: bytes, pos: int, what: str) -> None:
        n = len(buf)
        if pos < 0 or pos + 4 > n:
            raise ProtocolError(f"{what}: table offset {pos} is outside the {n}-byte buffer")
        vt = pos - _I32.unpack_from(buf, pos)[0]
        if vt < 0 or vt + 4 > n:
            raise ProtocolError(f"{what}: vtable offset {vt} is outside the {n}-byte buffer")
        vt_size = _U16.unpack_from(buf, vt)[0]
        obj_size = _U16.unpack_from(buf, vt + 2)[0]
        if vt_size < 4 or vt_size & 1 or vt + vt_size > n:
            raise ProtocolError(f"{what}: vtable size {vt_size} is invalid")
        if obj_size < 4 or pos + obj_size > n:
            raise ProtocolError(f"{what}: table size {obj_size} runs past the buffer")
        self.buf = buf
        self.n = n
        self.pos = pos
        self.vt = vt
        self.vt_size = vt_size

    def _field(self, slot: int, size: int, what: str) -> int:
        voff = 4 + 2 * slot
        if voff + 2 > self.vt_size:
            return 0
        fo = _U16.unpack_from(self.buf, self.vt + voff)[0]
        if fo == 0:
            return 0
        p = self.pos + fo
        if fo < 4 or p + size > self.n:
            raise ProtocolError(f"{what}: field runs past the buffer")
        return p

    def scalar(self, slot: int, fmt: struct.Struct, default: int, what: str) -> int:
        p = self._field(slot, fmt.size, what)
        if not p:
            return default
        return int(fmt.unpack_from(self.buf, p)[0])

    def _vector(self, slot: int, elem_size: int, what: str) -> Tuple[int, int]:
        """(start, count) of a vector/string field; start is -1 when absent."""
        p = self._field(slot, 4, what)
        if not p:
            return -1, 0
        target = p + _U32.unpack_from(self.buf, p)[0]
        if target + 4 > self.n:
            raise ProtocolError(f"{what}: offset points past the buffer")
        count = _U32.unpack_from(self.buf, target)[0]
        start = target + 4
        if start + count * elem_size > self.n:
            raise ProtocolError(f"{what}: length {count} runs past the buffer")
        return start, count

    def string(self, slot: int, what: str) -> Optional[str]:
        start, count = self._vector(slot, 1, what)
        if start < 0:
            return None
        try:
            return self.buf[start : start + count].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what}: not valid UTF-8 ({exc.reason})") from None

    def required_string(self, slot: int, what: str) -> str:
        value = self.string(slot, what)
        if value is None:
            raise ProtocolError(f"{what} is required but missing")
        return value

    def byte_vector(self, slot: int, what: str) -> bytes:
        start, count = self._vector(slot, 1, what)
        if start < 0:
            return b""
        return self.buf[start : start + count]

    def key_values(self, slot: int, what: str) -> List[Tuple[str, str]]:
        start, count = self._vector(slot, 4, what)
        if count > _KV_MAX_ENTRIES:
            raise ProtocolError(_kv_too_many(what, count))
        out: List[Tuple[str, str]] = []
        buf = self.buf
        budget = len(buf) + _KV_SLACK
        for i in range(count):
            e = start + 4 * i
            kv = _Table(buf, e + _U32.unpack_from(buf, e)[0], what)
            k = kv.required_string(0, what + ".key")
            v = kv.required_string(1, what + ".value")
            budget -= len(k) + len(v)
            if budget < 0:
                raise ProtocolError(_kv_amplified(what))
            out.append((k, v))
        return out


def _root(buf: bytes, what: str) -> _Table:
    if len(buf) < 4:
        raise ProtocolError(f"{what}: {len(buf)} bytes is too short for a FlatBuffers root")
    return _Table(buf, _U32.unpack_from(buf, 0)[0], what)


def decode_execute_request(body: bytes) -> ExecuteRequestFrame:
    t = _root(body, "ExecuteRequest")
    return ExecuteRequestFrame(
        t.scalar(0, _U64, 0, "ExecuteRequest.request_id"),
        t.required_string(1, "ExecuteRequest.tenant_id"),
        t.string(2, "ExecuteRequest.workspace_id"),
        t.string(3, "ExecuteRequest.trace_id"),
        t.required_string(4, "ExecuteRequest.connector_name"),
        t.required_string(5, "ExecuteRequest.operation"),
        t.scalar(6, _U64, 0, "ExecuteRequest.deadline_at_ms"),
        t.byte_vector(7, "ExecuteRequest.payload"),
        t.key_values(8, "ExecuteRequest.headers"),
    )


def decode_execute_response(body: bytes) -> ExecuteResponseFrame:
    t = _root(body, "ExecuteResponse")
    return ExecuteResponseFrame(
        t.scalar(0, _U64, 0, "ExecuteResponse.request_id"),
        t.scalar(1, _I8, 0, "ExecuteResponse.error_class"),
        t.string(2, "ExecuteResponse.error_message"),
        t.byte_vector(3, "ExecuteResponse.payload"),
        t.scalar(4, _U64, 0, "ExecuteResponse.duration_us"),
    )


def decode_health_response(body: bytes) -> HealthResponseFrame:
    t = _root(body, "HealthCheckResponse")
    return HealthResponseFrame(
        t.scalar(0, _U8, 0, "HealthCheckResponse.healthy") != 0,
        t.string(1, "HealthCheckResponse.message"),
        t.scalar(2, _U32, 0, "HealthCheckResponse.active_requests"),
        t.scalar(3, _U32, 0, "HealthCheckResponse.available_credits"),
    )


def decode_credit_update(body: bytes) -> CreditUpdateFrame:
    t = _root(body, "CreditUpdate")
    return CreditUpdateFrame(
        t.scalar(0, _I32, 0, "CreditUpdate.credit_delta"),
        t.scalar(1, _U32, 0, "CreditUpdate.total_credits"),
    )


def decode_stream_start(body: bytes) -> StreamStartFrame:
    t = _root(body, "StreamStart")
    return StreamStartFrame(
        t.scalar(0, _U64, 0, "StreamStart.request_id"),
        t.scalar(1, _U16, 0, "StreamStart.status_code"),
        t.key_values(2, "StreamStart.headers"),
        t.scalar(3, _U8, 0, "StreamStart.is_streaming") != 0,
    )


def decode_stream_chunk(body: bytes) -> StreamChunkFrame:
    t = _root(body, "StreamChunk")
    return StreamChunkFrame(
        t.scalar(0, _U64, 0, "StreamChunk.request_id"),
        t.byte_vector(1, "StreamChunk.data"),
    )


def decode_cancel_request(body: bytes) -> CancelRequestFrame:
    t = _root(body, "CancelRequest")
    return CancelRequestFrame(t.scalar(0, _U64, 0, "CancelRequest.request_id"))


# --------------------------------------------------------------------------- writing


def _string(builder: flatbuffers.Builder, value: str, what: str) -> int:
    try:
        return int(builder.CreateString(value.encode("utf-8")))
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"{what}: not encodable as UTF-8 ({exc.reason})") from None
    except AttributeError:
        raise TypeError(f"{what} must be str, not {type(value).__name__}") from None


def _key_values(builder: flatbuffers.Builder, pairs: Headers, what: str) -> int:
    offsets = []
    for key, value in pairs:
        k = _string(builder, key, what + " key")
        v = _string(builder, value, what + " value")
        builder.StartObject(2)
        builder.PrependUOffsetTRelativeSlot(0, k, 0)
        builder.PrependUOffsetTRelativeSlot(1, v, 0)
        offsets.append(builder.EndObject())
    builder.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return int(builder.EndVector())


def encode_execute_request(
    request_id: int,
    tenant_id: str,
    workspace_id: Optional[str],
    trace_id: Optional[str],
    connector_name: str,
    operation: str,
    deadline_at_ms: int,
    payload: bytes,
    headers: Optional[Headers] = None,
) -> bytes:
    """A whole ExecuteRequest frame (length prefix, type byte, FlatBuffers table)."""
    b = _builder(256 + len(payload))
    tenant = _string(b, tenant_id, "tenant_id")
    workspace = _string(b, workspace_id, "workspace_id") if workspace_id is not None else 0
    trace = _string(b, trace_id, "trace_id") if trace_id is not None else 0
    connector = _string(b, connector_name, "connector_name")
    op = _string(b, operation, "operation")
    body = b.CreateByteVector(payload)
    kvs = _key_values(b, headers, "ExecuteRequest.headers") if headers else 0
    b.StartObject(9)
    b.PrependUint64Slot(0, request_id, 0)
    b.PrependUOffsetTRelativeSlot(1, tenant, 0)
    if workspace:
        b.PrependUOffsetTRelativeSlot(2, workspace, 0)
    if trace:
        b.PrependUOffsetTRelativeSlot(3, trace, 0)
    b.PrependUOffsetTRelativeSlot(4, connector, 0)
    b.PrependUOffsetTRelativeSlot(5, op, 0)
    b.PrependUint64Slot(6, deadline_at_ms, 0)
    b.PrependUOffsetTRelativeSlot(7, body, 0)
    if kvs:
        b.PrependUOffsetTRelativeSlot(8, kvs, 0)
    b.Finish(b.EndObject())
    return _frame(_EXECUTE_REQUEST, b)


def encode_execute_response(
    request_id: int,
    error_class: int,
    error_message: Optional[str],
    payload: Optional[bytes],
    duration_us: int,
) -> bytes:
    """A whole ExecuteResponse frame."""
    b = _builder(128 + (len(payload) if payload else 0))
    msg = _string(b, error_message, "error_message") if error_message is not None else 0
    body = b.CreateByteVector(payload) if payload is not None else 0
    b.StartObject(5)
    b.PrependUint64Slot(0, request_id, 0)
    b.PrependInt8Slot(1, error_class, 0)
    if msg:
        b.PrependUOffsetTRelativeSlot(2, msg, 0)
    if body:
        b.PrependUOffsetTRelativeSlot(3, body, 0)
    b.PrependUint64Slot(4, duration_us, 0)
    b.Finish(b.EndObject())
    return _frame(_EXECUTE_RESPONSE, b)


def encode_health_check() -> bytes:
    """A HealthCheck frame (an empty HealthCheck table)."""
    b = _builder(16)
    b.StartObject(0)
    b.Finish(b.EndObject())
    return _frame(_HEALTH_CHECK, b)


def encode_health_response(
    healthy: bool, message: Optional[str], active_requests: int, available_credits: int
) -> bytes:
    b = _builder(64)
    msg = _string(b, message, "message") if message is not None else 0
    b.StartObject(4)
    b.PrependBoolSlot(0, bool(healthy), False)
    if msg:
        b.PrependUOffsetTRelativeSlot(1, msg, 0)
    b.PrependUint32Slot(2, active_requests, 0)
    b.PrependUint32Slot(3, available_credits, 0)
    b.Finish(b.EndObject())
    return _frame(_HEALTH_RESPONSE, b)


def encode_credit_update(credit_delta: int, total_credits: int) -> bytes:
    b = _builder(32)
    b.StartObject(2)
    b.PrependInt32Slot(0, credit_delta, 0)
    b.PrependUint32Slot(1, total_credits, 0)
    b.Finish(b.EndObject())
    return _frame(_CREDIT_UPDATE, b)


def encode_stream_start(
    request_id: int, status_code: int, headers: Headers, is_streaming: bool
) -> bytes:
    b = _builder(256)
    kvs = _key_values(b, headers, "StreamStart.headers") if headers else 0
    b.StartObject(4)
    b.PrependUint64Slot(0, request_id, 0)
    b.PrependUint16Slot(1, status_code, 0)
    if kvs:
        b.PrependUOffsetTRelativeSlot(2, kvs, 0)
    b.PrependBoolSlot(3, bool(is_streaming), False)
    b.Finish(b.EndObject())
    return _frame(_STREAM_START, b)


def encode_stream_chunk(request_id: int, data: bytes) -> bytes:
    b = _builder(32 + len(data))
    vec = b.CreateByteVector(data)
    b.StartObject(2)
    b.PrependUint64Slot(0, request_id, 0)
    b.PrependUOffsetTRelativeSlot(1, vec, 0)
    b.Finish(b.EndObject())
    return _frame(_STREAM_CHUNK, b)


def encode_cancel_request(request_id: int) -> bytes:
    b = _builder(32)
    b.StartObject(1)
    b.PrependUint64Slot(0, request_id, 0)
    b.Finish(b.EndObject())
    return _frame(_CANCEL_REQUEST, b)


# --------------------------------------------------------------- http connector JSON

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _check_headers(headers: Dict[str, str], what: str) -> None:
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"{what} must map str to str; got {type(key).__name__} -> "
                f"{type(value).__name__} for {key!r}"
            )


def encode_http_request_payload(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]],
    body: Union[bytes, str, None],
) -> bytes:
    """The ``http`` connector's request JSON: method (upper case), url, headers, body.

    ``headers`` and ``body`` are left out when empty, as the released SDKs do. A bytes
    body must be UTF-8: the wire carries it as a JSON string.
    """
    if not isinstance(method, str) or not isinstance(url, str):
        raise TypeError("HTTPRequest.method and HTTPRequest.url must be str")
    obj: Dict[str, object] = {"method": method.upper(), "url": url}
    if headers:
        _check_headers(headers, "HTTPRequest.headers")
        obj["headers"] = headers
    if body:
        if isinstance(body, str):
            obj["body"] = body
        elif isinstance(body, (bytes, bytearray, memoryview)):
            try:
                obj["body"] = bytes(body).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(
                    f"HTTPRequest.body is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
                    "the http connector carries bodies as JSON text, so send text or "
                    "base64-encode binary data"
                ) from None
        else:
            raise TypeError(f"HTTPRequest.body must be bytes or str, not {type(body).__name__}")
    try:
        return _dumps(obj).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"HTTP request is not encodable as UTF-8 ({exc.reason})") from None


def encode_http_request_frame(
    request_id: int,
    tenant_id: str,
    workspace_id: Optional[str],
    trace_id: Optional[str],
    deadline_at_ms: int,
    method: str,
    url: str,
    headers: Optional[Dict[str, str]],
    body: Union[bytes, str, None],
    ext_headers: Optional[Headers] = None,
) -> bytes:
    """The hot path: an ``http``/``request`` ExecuteRequest frame in one call."""
    payload = encode_http_request_payload(method, url, headers, body)
    return encode_execute_request(
        request_id,
        tenant_id,
        workspace_id,
        trace_id,
        "http",
        "request",
        deadline_at_ms,
        payload,
        ext_headers,
    )


def decode_http_request_payload(payload: bytes) -> HTTPRequestPayload:
    """Parse the ``http`` connector's request JSON (runtime side)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"http request payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(
            "http request payload is nested too deeply to parse; send a flat JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError("http request payload must be a JSON object")
    method = obj.get("method")
    url = obj.get("url")
    if not isinstance(method, str) or not method:
        raise ProtocolError("http request payload: 'method' must be a non-empty string")
    if not isinstance(url, str) or not url:
        raise ProtocolError("http request payload: 'url' must be a non-empty string")
    headers = obj.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ProtocolError("http request payload: 'headers' must map strings to strings")
    body = obj.get("body")
    if body is None:
        body = ""
    elif not isinstance(body, str):
        raise ProtocolError("http request payload: 'body' must be a string")
    return HTTPRequestPayload(method, url, headers, body)


def encode_http_response_payload(
    status_code: int,
    headers: Dict[str, str],
    body: Union[str, bytes],
    is_streaming: bool,
) -> bytes:
    """The ``http`` connector's response JSON, keys in the released runtime's order."""
    if not isinstance(body, str):
        body = bytes(body).decode("utf-8", "replace")
    return _dumps(
        {
            "body": body,
            "headers": headers,
            "is_streaming": bool(is_streaming),
            "status_code": status_code,
        }
    ).encode("utf-8", "surrogatepass")


def encode_http_response_frame(
    request_id: int,
    status_code: int,
    headers: Dict[str, str],
    body: Union[str, bytes],
    is_streaming: bool,
    duration_us: int,
) -> bytes:
    """A successful ``http`` ExecuteResponse frame (the runtime's hot path)."""
    payload = encode_http_response_payload(status_code, headers, body, is_streaming)
    return encode_execute_response(request_id, 0, None, payload, duration_us)


def decode_http_response_payload(payload: bytes) -> HTTPResponsePayload:
    """Parse the ``http`` connector's response JSON into status, headers, body bytes."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"response payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("response payload is nested too deeply to parse") from None
    if not isinstance(obj, dict):
        raise ProtocolError("response payload is not a JSON object")
    status = obj.get("status_code")
    if type(status) is not int:
        raise ProtocolError("response payload has no integer 'status_code'")
    headers = obj.get("headers")
    if headers is None:
        headers = {}
    elif not isinstance(headers, dict):
        raise ProtocolError("response payload 'headers' is not an object")
    body = obj.get("body")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    else:
        raise ProtocolError("response payload 'body' is not a string")
    return HTTPResponsePayload(status, headers, raw, obj.get("is_streaming") is True)
