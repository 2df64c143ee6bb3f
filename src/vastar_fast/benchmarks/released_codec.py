"""The released ``vastar_connector_sdk``'s wire handling, re-implemented for benchmarks.

Rebuilt from the released SDK's documented algorithm (not imported: it is not a
dependency), so ``bench/`` can report ratios against what users run today:

* encode: build the payload dict, ``json.dumps(payload).encode()``, then a
  ``flatbuffers.Builder(1024)`` driven the way flatc-generated code drives it
  (CreateString per string, CreateByteVector, StartObject / Prepend...Slot / EndObject),
  ``builder.Output()``, and the frame as ``struct.pack(">I", len + 1) + bytes([0]) + data``.
* decode: generated-code style Table reads; the payload goes through
  ``PayloadAsNumpy().tobytes()`` when numpy is installed (what the released client does),
  else through a bytes slice (``PAYLOAD_PATH`` says which); then ``json.loads`` and
  ``body.encode()``.
* framing: read 4 bytes, unpack, read L bytes, from a BytesIO-like stream.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Dict, List, Optional, Tuple

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table

try:
    import numpy  # noqa: F401

    PAYLOAD_PATH = "numpy"
except ImportError:  # pragma: no cover - depends on the environment
    PAYLOAD_PATH = "bytes-slice"


def encode_http_request(
    request_id: int,
    tenant_id: str,
    workspace_id: Optional[str],
    trace_id: Optional[str],
    deadline_at_ms: int,
    method: str,
    url: str,
    headers: Dict[str, str],
    body: Optional[bytes],
) -> bytes:
    """One ExecuteRequest frame, the released SDK's way."""
    payload: Dict[str, Any] = {"method": method.upper(), "url": url}
    if headers:
        payload["headers"] = headers
    if body:
        payload["body"] = body.decode("utf-8") if isinstance(body, bytes) else body
    payload_bytes = json.dumps(payload).encode()

    builder = flatbuffers.Builder(1024)
    tenant = builder.CreateString(tenant_id)
    workspace = builder.CreateString(workspace_id) if workspace_id else None
    trace = builder.CreateString(trace_id) if trace_id else None
    connector = builder.CreateString("http")
    operation = builder.CreateString("request")
    data = builder.CreateByteVector(payload_bytes)
    builder.StartObject(9)
    builder.PrependUint64Slot(0, request_id, 0)
    builder.PrependUOffsetTRelativeSlot(1, tenant, 0)
    if workspace is not None:
        builder.PrependUOffsetTRelativeSlot(2, workspace, 0)
    if trace is not None:
        builder.PrependUOffsetTRelativeSlot(3, trace, 0)
    builder.PrependUOffsetTRelativeSlot(4, connector, 0)
    builder.PrependUOffsetTRelativeSlot(5, operation, 0)
    builder.PrependUint64Slot(6, deadline_at_ms, 0)
    builder.PrependUOffsetTRelativeSlot(7, data, 0)
    builder.Finish(builder.EndObject())
    out = builder.Output()
    return struct.pack(">I", len(out) + 1) + bytes([0]) + out


class ExecuteResponse:
    """Generated-code style reader (what flatc emits for Python)."""

    __slots__ = ["_tab"]

    @classmethod
    def GetRootAs(cls, buf: bytes, offset: int = 0) -> ExecuteResponse:
        n = flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, offset)
        x = cls()
        x._tab = Table(buf, n + offset)
        return x

    def RequestId(self) -> int:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(4))
        return self._tab.Get(N.Uint64Flags, o + self._tab.Pos) if o else 0

    def ErrorClass(self) -> int:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(6))
        return self._tab.Get(N.Int8Flags, o + self._tab.Pos) if o else 0

    def ErrorMessage(self) -> Optional[bytes]:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(8))
        return self._tab.String(o + self._tab.Pos) if o else None

    def PayloadAsNumpy(self) -> Any:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(10))
        return self._tab.GetVectorAsNumpy(N.Uint8Flags, o) if o else 0

    def PayloadAsBytes(self) -> bytes:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(10))
        if not o:
            return b""
        start = self._tab.Vector(o)
        return bytes(self._tab.Bytes[start : start + self._tab.VectorLen(o)])

    def DurationUs(self) -> int:
        o = N.UOffsetTFlags.py_type(self._tab.Offset(12))
        return self._tab.Get(N.Uint64Flags, o + self._tab.Pos) if o else 0


def decode_http_response(body: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body bytes) from an ExecuteResponse body, the released way."""
    r = ExecuteResponse.GetRootAs(body, 0)
    r.RequestId()
    if r.ErrorClass() != 0:
        raise RuntimeError(r.ErrorMessage())
    r.DurationUs()
    if PAYLOAD_PATH == "numpy":
        raw = r.PayloadAsNumpy().tobytes()
    else:  # pragma: no cover - depends on the environment
        raw = r.PayloadAsBytes()
    obj = json.loads(raw.decode("utf-8"))
    return obj["status_code"], obj.get("headers", {}), obj.get("body", "").encode()


def split_frames(data: bytes) -> List[Tuple[int, bytes]]:
    """Read 4 bytes, unpack, read L bytes: the released read loop over a stream."""
    stream = io.BytesIO(data)
    out = []
    while True:
        header = stream.read(4)
        if len(header) < 4:
            return out
        (length,) = struct.unpack(">I", header)
        frame = stream.read(length)
        out.append((frame[0], frame[1:]))
