"""The released SDK's client round trip, re-implemented from its documented algorithm
for comparison only: json.dumps the payload, build the ExecuteRequest with the official
flatbuffers Builder (generated-code style), sendall, read 4 bytes + L bytes, read the
ExecuteResponse like generated code does (payload through a numpy view when numpy is
installed, as the released client does), json.loads, build the response.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Dict

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers.table import Table

try:  # the released client reads payloads through numpy
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def encode_request(
    request_id: int,
    tenant: str,
    workspace: str,
    method: str,
    url: str,
    headers: Dict[str, str],
    body: bytes,
    timeout_ms: int = 60000,
) -> bytes:
    payload: Dict[str, Any] = {"method": method, "url": url}
    if headers:
        payload["headers"] = headers
    if body:
        payload["body"] = body.decode("utf-8")
    data = json.dumps(payload).encode("utf-8")
    b = flatbuffers.Builder(1024)
    tenant_off = b.CreateString(tenant)
    ws_off = b.CreateString(workspace)
    conn_off = b.CreateString("http")
    op_off = b.CreateString("request")
    payload_off = b.CreateByteVector(data)
    b.StartObject(9)
    b.PrependUint64Slot(0, request_id, 0)
    b.PrependUOffsetTRelativeSlot(1, tenant_off, 0)
    b.PrependUOffsetTRelativeSlot(2, ws_off, 0)
    b.PrependUOffsetTRelativeSlot(4, conn_off, 0)
    b.PrependUOffsetTRelativeSlot(5, op_off, 0)
    b.PrependUint64Slot(6, int(time.time() * 1000) + timeout_ms, 0)
    b.PrependUOffsetTRelativeSlot(7, payload_off, 0)
    b.Finish(b.EndObject())
    out = b.Output()
    return struct.pack(">I", len(out) + 1) + bytes([0]) + out


def decode_response(body: bytes) -> Dict[str, Any]:
    n = flatbuffers.encode.Get(flatbuffers.packer.uoffset, body, 0)
    tab = Table(bytearray(body), n)
    o = tab.Offset(4)
    request_id = tab.Get(N.Uint64Flags, o + tab.Pos) if o else 0
    o = tab.Offset(6)
    error_class = tab.Get(N.Int8Flags, o + tab.Pos) if o else 0
    o = tab.Offset(8)
    error_message = tab.String(o + tab.Pos).decode() if o else None
    o = tab.Offset(10)
    if o and np is not None:
        payload = tab.GetVectorAsNumpy(N.Uint8Flags, o).tobytes()
    elif o:
        start = tab.Vector(o)
        payload = bytes(tab.Bytes[start : start + tab.VectorLen(o)])
    else:
        payload = b""
    o = tab.Offset(12)
    duration = tab.Get(N.Uint64Flags, o + tab.Pos) if o else 0
    if error_class != 0:
        raise RuntimeError(error_message)
    data = json.loads(payload.decode("utf-8"))
    return {
        "request_id": request_id,
        "status_code": data["status_code"],
        "headers": data.get("headers", {}),
        "body": data.get("body", "").encode("utf-8"),
        "duration_us": duration,
    }


class ReleasedStyleClient:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_id = int(time.time() * 1000)

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("runtime closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def execute_http(
        self, method: str, url: str, headers: Dict[str, str], body: bytes
    ) -> Dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(
            encode_request(rid, "openai-connector", "default", method, url, headers, body)
        )
        (length,) = struct.unpack(">I", self._recv_exact(4))
        frame = self._recv_exact(length)
        return decode_response(frame[1:])

    def close(self) -> None:
        self.sock.close()
