"""Independent readers and comparison helpers for the codec tests.

Frames are read back three ways: with our own decoders, with the flatc-generated
reader (tests/_fbs_generated), and with the official ``flatbuffers`` runtime's Table
directly, so a layout only our decoders understand cannot pass.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table
from Vastar.Connector.Ipc import (  # type: ignore[import-not-found]
    ExecuteRequest,
    ExecuteResponse,
    StreamStart,
)

import support  # noqa: F401  (puts the flatc-generated reader on sys.path)


def split_frame(frame: bytes) -> Tuple[int, int, bytes]:
    """(length field, message type, FlatBuffers bytes) of one whole frame."""
    length, message_type = struct.unpack_from(">IB", frame, 0)
    assert length == len(frame) - 4
    return length, message_type, frame[5:]


def _vector_bytes(obj: Any, name: str) -> bytes:
    """A ubyte vector through the generated accessors (numpy view when available, as
    the released SDK reads it; else element by element)."""
    if getattr(obj, name + "IsNone")():
        return b""
    try:
        return bytes(getattr(obj, name + "AsNumpy")().tobytes())
    except (ImportError, AttributeError, NotImplementedError):
        get = getattr(obj, name)
        return bytes(get(i) for i in range(getattr(obj, name + "Length")()))


def _opt(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else b.decode("utf-8")


def generated_request(buf: bytes) -> Dict[str, Any]:
    """An ExecuteRequest read with the flatc-generated Python reader."""
    r = ExecuteRequest.ExecuteRequest.GetRootAs(buf, 0)
    headers = []
    for i in range(r.HeadersLength()):
        kv = r.Headers(i)
        headers.append((kv.Key().decode(), kv.Value().decode()))
    return {
        "request_id": r.RequestId(),
        "tenant_id": _opt(r.TenantId()),
        "workspace_id": _opt(r.WorkspaceId()),
        "trace_id": _opt(r.TraceId()),
        "connector_name": _opt(r.ConnectorName()),
        "operation": _opt(r.Operation()),
        "deadline_at_ms": r.DeadlineAtMs(),
        "payload": _vector_bytes(r, "Payload"),
        "headers": headers,
    }


def generated_response(buf: bytes) -> Dict[str, Any]:
    """An ExecuteResponse read with the flatc-generated Python reader."""
    r = ExecuteResponse.ExecuteResponse.GetRootAs(buf, 0)
    return {
        "request_id": r.RequestId(),
        "error_class": r.ErrorClass(),
        "error_message": _opt(r.ErrorMessage()),
        "payload": _vector_bytes(r, "Payload"),
        "duration_us": r.DurationUs(),
    }


def generated_stream_start(buf: bytes) -> Dict[str, Any]:
    r = StreamStart.StreamStart.GetRootAs(buf, 0)
    return {
        "request_id": r.RequestId(),
        "status_code": r.StatusCode(),
        "headers": [
            (r.Headers(i).Key().decode(), r.Headers(i).Value().decode())
            for i in range(r.HeadersLength())
        ],
        "is_streaming": r.IsStreaming(),
    }


class RuntimeTable:
    """Field access through the official runtime's ``flatbuffers.table.Table``."""

    def __init__(self, buf: bytes, pos: Optional[int] = None) -> None:
        if pos is None:
            pos = flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0)
        self.tab = Table(bytearray(buf), pos)

    def _o(self, slot: int) -> int:
        return int(self.tab.Offset(4 + 2 * slot))

    def scalar(self, slot: int, flags: Any, default: int = 0) -> int:
        o = self._o(slot)
        return int(self.tab.Get(flags, o + self.tab.Pos)) if o else default

    def string(self, slot: int) -> Optional[str]:
        o = self._o(slot)
        return self.tab.String(o + self.tab.Pos).decode("utf-8") if o else None

    def byte_vector(self, slot: int) -> Optional[bytes]:
        o = self._o(slot)
        if not o:
            return None
        start = self.tab.Vector(o)
        return bytes(self.tab.Bytes[start : start + self.tab.VectorLen(o)])

    def key_values(self, slot: int) -> List[Tuple[str, str]]:
        o = self._o(slot)
        if not o:
            return []
        start = self.tab.Vector(o)
        out = []
        for i in range(self.tab.VectorLen(o)):
            kv = RuntimeTable.__new__(RuntimeTable)
            kv.tab = Table(self.tab.Bytes, self.tab.Indirect(start + 4 * i))
            key, value = kv.string(0), kv.string(1)
            assert key is not None and value is not None
            out.append((key, value))
        return out

    def field_pos(self, slot: int) -> int:
        """Absolute position of a present field (0 when absent)."""
        o = self._o(slot)
        return self.tab.Pos + o if o else 0


def runtime_request(buf: bytes) -> Dict[str, Any]:
    t = RuntimeTable(buf)
    return {
        "request_id": t.scalar(0, N.Uint64Flags),
        "tenant_id": t.string(1),
        "workspace_id": t.string(2),
        "trace_id": t.string(3),
        "connector_name": t.string(4),
        "operation": t.string(5),
        "deadline_at_ms": t.scalar(6, N.Uint64Flags),
        "payload": t.byte_vector(7) or b"",
        "headers": t.key_values(8),
    }


def runtime_response(buf: bytes) -> Dict[str, Any]:
    t = RuntimeTable(buf)
    return {
        "request_id": t.scalar(0, N.Uint64Flags),
        "error_class": t.scalar(1, N.Int8Flags),
        "error_message": t.string(2),
        "payload": t.byte_vector(3) or b"",
        "duration_us": t.scalar(4, N.Uint64Flags),
    }


def assert_aligned(buf: bytes, u64_slots: Tuple[int, ...], ref_slots: Tuple[int, ...]) -> None:
    """FlatBuffers alignment: 8-byte scalars 8-aligned from the start AND the end of the
    buffer, uoffset fields and vector/string length prefixes 4-aligned, root 4-aligned."""
    t = RuntimeTable(buf)
    assert t.tab.Pos % 4 == 0
    for slot in u64_slots:
        p = t.field_pos(slot)
        if p:
            assert p % 8 == 0, (slot, p)
            assert (len(buf) - p) % 8 == 0, (slot, p, len(buf))
    for slot in ref_slots:
        p = t.field_pos(slot)
        if p:
            assert p % 4 == 0, (slot, p)
            target = p + struct.unpack_from("<I", buf, p)[0]
            assert target % 4 == 0, (slot, target)


def error_signature(exc: BaseException) -> Tuple[type, str, List[Tuple[str, Any]]]:
    """What must match between the twins when both raise: the exception's type, its
    message and its attributes (e.g. FrameTooLargeError.length / .limit)."""
    return type(exc), str(exc), sorted(vars(exc).items())


def outcome(fn: Callable[..., Any], *args: Any) -> Tuple[str, Any]:
    """("ok", value) or ("err", error_signature(exc)): what parity tests compare."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # parity compares type, message and attributes
        return "err", error_signature(exc)
