"""Exceptions raised by vastar_fast.

``ConnectorException`` is the released SDK's exception, unchanged in name, fields and
text. ``ProtocolError`` is raised by the wire codec (both twins) for bytes that are not
a valid frame; the client turns it into a ``ConnectorException``.
"""

from __future__ import annotations

from .types import ErrorClass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Union

__all__ = ["ConnectorException", "FrameTooLargeError", "ProtocolError", "error_class_name"]

_RETRYABLE = frozenset({ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED, ErrorClass.TIMEOUT})


def error_class_name(error_class: Union[ErrorClass, int]) -> str:
    """The enum member's name, or ``UNKNOWN(n)`` for a class this SDK does not know."""
    try:
        return ErrorClass(int(error_class)).name
    except ValueError:
        return f"UNKNOWN({int(error_class)})"


class ConnectorException(Exception):
    """A request that got no usable HTTP answer, with the runtime's error class."""

    def __init__(self, message: str, error_class: Union[ErrorClass, int], request_id: int) -> None:
        super().__init__(message)
        self.message = message
        try:
            self.error_class: Union[ErrorClass, int] = ErrorClass(int(error_class))
        except ValueError:
            self.error_class = int(error_class)
        self.request_id = request_id

    def is_retryable(self) -> bool:
        """True for TRANSIENT, RATE_LIMITED and TIMEOUT."""
        return self.error_class in _RETRYABLE

    def get_error_class_name(self) -> str:
        """The error class's enum name, e.g. ``"TRANSIENT"``."""
        return error_class_name(self.error_class)

    def __str__(self) -> str:
        return (
            f"ConnectorException(request_id={self.request_id}, "
            f"error_class={self.get_error_class_name()}, message={self.message!r})"
        )

    def __repr__(self) -> str:
        return str(self)

    def __reduce__(self):  # keep the three-argument constructor picklable
        return (type(self), (self.message, self.error_class, self.request_id))


class ProtocolError(ValueError):
    """Bytes that are not a valid Vastar IPC frame or FlatBuffers table."""


class FrameTooLargeError(ProtocolError):
    """A frame whose length field exceeds the negotiated cap (10 MiB by default)."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"frame length field {length} exceeds the limit of {limit} bytes; "
            "the peer is not speaking the Vastar IPC protocol or sent an oversized message"
        )
        self.length = length
        self.limit = limit
