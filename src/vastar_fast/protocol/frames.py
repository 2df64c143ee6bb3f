"""The decoded frames of the wire protocol: plain NamedTuples both codec twins build.

They live here, not inside one twin, so that either twin (and everything that only
needs the types) is importable without the other. Field order is the schema's
(``schemas/connector_ipc.fbs``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing.NamedTuple for type checkers; no typing import at run time
    from typing import Dict, List, NamedTuple, Optional, Tuple
else:
    from .._records import NamedTuple

__all__ = [
    "EXT_HEADER",
    "EXT_STREAM",
    "TOKEN_ENV",
    "TOKEN_KEY",
    "CancelRequestFrame",
    "CreditUpdateFrame",
    "ExecuteRequestFrame",
    "ExecuteResponseFrame",
    "HTTPRequestPayload",
    "HTTPResponsePayload",
    "HealthResponseFrame",
    "StreamChunkFrame",
    "StreamStartFrame",
    "extension_headers",
]

# KeyValue lists are decoded into one (key, value) pair per vector element, and a
# FlatBuffers vector may point at one table many times: without a bound a 14 KB frame
# decodes into megabytes of strings. The bound: at most _KV_MAX_ENTRIES entries, and
# their characters may not outnumber the frame's own bytes (plus slack for builders that
# share one string between equal values).
_KV_MAX_ENTRIES = 4096
_KV_SLACK = 65536


def _kv_too_many(what: str, count: int) -> str:
    return f"{what}: {count} entries, more than the {_KV_MAX_ENTRIES} any frame may carry"


def _kv_amplified(what: str) -> str:
    return (
        f"{what}: its keys and values decode to more text than the frame holds (entries "
        "pointing at the same table many times); send each entry once"
    )


EXT_HEADER = "vastar-ext"
"""ExecuteRequest.headers key through which a client opts in to extensions."""
EXT_STREAM = "stream"
"""Feature: forward the upstream answer incrementally (StreamStart, StreamChunk)."""
TOKEN_KEY = "vastar-token"
"""ExecuteRequest.headers key carrying the token a runtime may require (released runtimes
ignore the list); our clients send ``$VASTAR_RUNTIME_TOKEN`` there when it is set."""
TOKEN_ENV = "VASTAR_RUNTIME_TOKEN"


def extension_headers(token: Optional[str]) -> Tuple[Optional[tuple], tuple]:
    """The ExecuteRequest KeyValue lists a client sends: (plain request, streaming
    request), with the token when there is one."""
    tok = ((TOKEN_KEY, token),) if token else ()
    return (tok or None), ((EXT_HEADER, EXT_STREAM), *tok)


class ExecuteRequestFrame(NamedTuple):
    request_id: int
    tenant_id: str
    workspace_id: Optional[str]
    trace_id: Optional[str]
    connector_name: str
    operation: str
    deadline_at_ms: int
    payload: bytes
    headers: List[Tuple[str, str]]


class ExecuteResponseFrame(NamedTuple):
    request_id: int
    error_class: int
    error_message: Optional[str]
    payload: bytes
    duration_us: int


class HealthResponseFrame(NamedTuple):
    healthy: bool
    message: Optional[str]
    active_requests: int
    available_credits: int


class CreditUpdateFrame(NamedTuple):
    credit_delta: int
    total_credits: int


class StreamStartFrame(NamedTuple):
    request_id: int
    status_code: int
    headers: List[Tuple[str, str]]
    is_streaming: bool


class StreamChunkFrame(NamedTuple):
    request_id: int
    data: bytes


class CancelRequestFrame(NamedTuple):
    request_id: int


class HTTPRequestPayload(NamedTuple):
    method: str
    url: str
    headers: Dict[str, str]
    body: str


class HTTPResponsePayload(NamedTuple):
    status_code: int
    headers: Dict[str, str]
    body: bytes
    is_streaming: bool
