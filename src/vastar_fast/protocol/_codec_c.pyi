"""Type stubs for the compiled twin; the API is ``_codec_py``'s, name for name.

The result NamedTuples are the shared ones of ``frames``, re-exported. The client core
section (ClientConnection, Waiter, BlockingChannel) has ``_client_py``'s API; its classes
are declared as subtypes of the pure ones only so that the selector in client_core.py
type-checks (at run time they are separate cdef classes).
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

from . import _client_py, _codec_py
from .frames import CancelRequestFrame as CancelRequestFrame
from .frames import CreditUpdateFrame as CreditUpdateFrame
from .frames import ExecuteRequestFrame as ExecuteRequestFrame
from .frames import ExecuteResponseFrame as ExecuteResponseFrame
from .frames import HealthResponseFrame as HealthResponseFrame
from .frames import HTTPRequestPayload as HTTPRequestPayload
from .frames import HTTPResponsePayload as HTTPResponsePayload
from .frames import StreamChunkFrame as StreamChunkFrame
from .frames import StreamStartFrame as StreamStartFrame

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

_Headers = Sequence[Tuple[str, str]]

def encode_frame(message_type: int, body: bytes) -> bytes: ...

# Declared as a subtype of the pure twin's FrameBuffer only so that the selector in
# codec.py (which assigns either twin's class to one name) type-checks.  At run time
# it is a separate cdef class with the same API: isinstance() against the pure
# class is False.
class FrameBuffer(_codec_py.FrameBuffer):
    def __init__(self, max_frame_size: int = ...) -> None: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def pending(self) -> int: ...
    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None: ...
    def get_buffer(self, sizehint: int = -1) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def next_frame(self) -> Optional[Tuple[int, bytes]]: ...
    def frames(self) -> List[Tuple[int, bytes]]: ...

def decode_execute_request(body: bytes) -> ExecuteRequestFrame: ...
def decode_execute_response(body: bytes) -> ExecuteResponseFrame: ...
def decode_health_response(body: bytes) -> HealthResponseFrame: ...
def decode_credit_update(body: bytes) -> CreditUpdateFrame: ...
def decode_stream_start(body: bytes) -> StreamStartFrame: ...
def decode_stream_chunk(body: bytes) -> StreamChunkFrame: ...
def decode_cancel_request(body: bytes) -> CancelRequestFrame: ...
def encode_execute_request(
    request_id: int,
    tenant_id: str,
    workspace_id: Optional[str],
    trace_id: Optional[str],
    connector_name: str,
    operation: str,
    deadline_at_ms: int,
    payload: bytes,
    headers: Optional[_Headers] = None,
) -> bytes: ...
def encode_execute_response(
    request_id: int,
    error_class: int,
    error_message: Optional[str],
    payload: Optional[bytes],
    duration_us: int,
) -> bytes: ...
def encode_health_check() -> bytes: ...
def encode_health_response(
    healthy: bool, message: Optional[str], active_requests: int, available_credits: int
) -> bytes: ...
def encode_credit_update(credit_delta: int, total_credits: int) -> bytes: ...
def encode_stream_start(
    request_id: int, status_code: int, headers: _Headers, is_streaming: bool
) -> bytes: ...
def encode_stream_chunk(request_id: int, data: bytes) -> bytes: ...
def encode_cancel_request(request_id: int) -> bytes: ...
def encode_http_request_payload(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]],
    body: Union[bytes, str, None],
) -> bytes: ...
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
    ext_headers: Optional[_Headers] = None,
) -> bytes: ...
def decode_http_request_payload(payload: bytes) -> HTTPRequestPayload: ...
def encode_http_response_payload(
    status_code: int,
    headers: Dict[str, str],
    body: Union[str, bytes],
    is_streaming: bool,
) -> bytes: ...
def encode_http_response_frame(
    request_id: int,
    status_code: int,
    headers: Dict[str, str],
    body: Union[str, bytes],
    is_streaming: bool,
    duration_us: int,
) -> bytes: ...
def decode_http_response_payload(payload: bytes) -> HTTPResponsePayload: ...
def _simd(name: Optional[str] = None) -> str: ...
def _simd_paths() -> Tuple[str, ...]: ...
def _client_io(posix: Optional[bool] = None) -> bool: ...
def _trace_reset() -> None: ...

# ---------------------------------------------------------------- client core
class Waiter(_client_py.Waiter): ...
class ClientConnection(_client_py.ClientConnection): ...
class BlockingChannel(_client_py.BlockingChannel): ...
