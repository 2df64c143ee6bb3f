"""vastar_fast: a fast, drop-in replacement for ``vastar_connector_sdk``.

Change ``from vastar_connector_sdk import X`` to ``from vastar_fast import X``; names,
signatures, defaults and behaviour are the released SDK's. Hot paths run in compiled
Cython twins when they are built; :data:`ACCELERATED` says whether they all are.
"""

from __future__ import annotations

from .client import HealthStatus, HTTPStream, RuntimeClient
from .errors import ConnectorException, FrameTooLargeError, ProtocolError
from .protocol import ACCELERATED as _CODEC_ACCELERATED
from .response_helpers import HTTPResponseHelper
from .retry import retry_with_backoff
from .sse import ACCELERATED as _SSE_ACCELERATED
from .sse import SSEDecoder, SSEParser
from .types import (
    DEFAULT_SOCKET_PATH,
    DEFAULT_TIMEOUT_MS,
    FRAME_LENGTH_SIZE,
    MAX_PAYLOAD_SIZE,
    MESSAGE_TYPE_SIZE,
    ErrorClass,
    HTTPRequest,
    HTTPResponse,
    MessageType,
    RuntimeConfig,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .client.aio import AsyncHTTPStream, AsyncRuntimeClient

__version__ = "0.1.0"

ACCELERATED: bool = _CODEC_ACCELERATED and _SSE_ACCELERATED
"""True when every compiled twin (wire codec, SSE scanner) is live."""

__all__ = [
    "ACCELERATED",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT_MS",
    "FRAME_LENGTH_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MESSAGE_TYPE_SIZE",
    "AsyncHTTPStream",
    "AsyncRuntimeClient",
    "ConnectorException",
    "ErrorClass",
    "FrameTooLargeError",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPResponseHelper",
    "HTTPStream",
    "HealthStatus",
    "MessageType",
    "ProtocolError",
    "RuntimeClient",
    "RuntimeConfig",
    "SSEDecoder",
    "SSEParser",
    "retry_with_backoff",
]


def __getattr__(name: str) -> Any:
    """The asyncio client is imported on first use: ``import vastar_fast`` does not
    import asyncio (tens of milliseconds) for programs that never use it."""
    if name in ("AsyncHTTPStream", "AsyncRuntimeClient"):
        from .client import aio

        value = getattr(aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Logging: the modules above log through vastar_fast._log, which imports logging on
# first use and only then gives the "vastar_fast" logger its NullHandler (a library never
# configures logging; it only keeps Python's last-resort handler from printing its
# records when the application has configured none).
