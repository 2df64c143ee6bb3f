"""Plain data shared by the client, the runtime and the connectors (no I/O here).

Names, fields and defaults match the released ``vastar_connector_sdk.types`` so that
``from vastar_fast import X`` is a drop-in for ``from vastar_connector_sdk import X``.
"""

from __future__ import annotations

from enum import IntEnum

TYPE_CHECKING = False
if TYPE_CHECKING:  # the real dataclass and typing for type checkers; no import at run time
    from dataclasses import dataclass as record
    from dataclasses import field
    from typing import Dict, Optional, Union
else:
    from ._records import field, record

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TCP_HOST",
    "DEFAULT_TCP_PORT",
    "DEFAULT_TIMEOUT_MS",
    "FRAME_LENGTH_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MESSAGE_TYPE_SIZE",
    "ErrorClass",
    "HTTPRequest",
    "HTTPResponse",
    "MessageType",
    "RuntimeConfig",
]

FRAME_LENGTH_SIZE = 4
"""Size of the big-endian length prefix of every frame."""
MESSAGE_TYPE_SIZE = 1
"""Size of the message-type byte that follows the length prefix."""
MAX_PAYLOAD_SIZE = 10 * 1024 * 1024
"""Largest frame length field the released SDKs accept (type byte + FlatBuffers bytes)."""
DEFAULT_TIMEOUT_MS = 60000
DEFAULT_SOCKET_PATH = "/tmp/vastar-connector-runtime.sock"
DEFAULT_TCP_HOST = "127.0.0.1"
DEFAULT_TCP_PORT = 5000


class MessageType(IntEnum):
    """The message-type byte of a frame.

    The released SDK names only the first two; the rest are the runtime's health and
    credit messages and vastar-fast's backward-compatible extensions (docs/protocol.md).
    """

    EXECUTE_REQUEST = 0
    EXECUTE_RESPONSE = 1
    HEALTH_CHECK = 2
    HEALTH_RESPONSE = 3
    CREDIT_UPDATE = 4
    STREAM_START = 5
    STREAM_CHUNK = 6
    CANCEL_REQUEST = 7


class ErrorClass(IntEnum):
    """Why a request got no HTTP answer. HTTP error statuses are not errors here."""

    SUCCESS = 0
    TRANSIENT = 1
    PERMANENT = 2
    RATE_LIMITED = 3
    TIMEOUT = 4
    INVALID_REQUEST = 5


@record
class RuntimeConfig:
    """Where the runtime listens and the defaults applied to every request."""

    tenant_id: str = "default"
    workspace_id: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    socket_path: str = DEFAULT_SOCKET_PATH
    use_tcp: bool = False
    tcp_host: str = DEFAULT_TCP_HOST
    tcp_port: int = DEFAULT_TCP_PORT


@record
class HTTPRequest:
    """One HTTP request for the runtime's ``http`` connector.

    ``body`` is bytes; ``str`` is accepted too and sent as UTF-8. Per-request tenant,
    workspace and timeout fall back to the client's :class:`RuntimeConfig`.
    """

    method: str
    url: str
    headers: Optional[Dict[str, str]] = None
    body: Optional[Union[bytes, str]] = None
    timeout_ms: Optional[int] = None
    tenant_id: Optional[str] = None
    workspace_id: Optional[str] = None
    trace_id: Optional[str] = None


@record
class HTTPResponse:
    """The upstream's answer as the runtime relayed it."""

    request_id: int
    status_code: int
    headers: Dict[str, str]
    body: bytes
    duration_us: int
    error_class: ErrorClass
    error_message: Optional[str] = field(default=None)
