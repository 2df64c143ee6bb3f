"""Clients of the runtime: ``RuntimeClient`` (blocking) and ``AsyncRuntimeClient``.

The asyncio client (and asyncio itself) is imported on first use of its names, so
programs that only use the blocking client never pay for asyncio.
"""

from __future__ import annotations

from .results import HealthStatus
from .sync import HTTPStream, RuntimeClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .aio import AsyncHTTPStream, AsyncRuntimeClient

__all__ = ["AsyncHTTPStream", "AsyncRuntimeClient", "HTTPStream", "HealthStatus", "RuntimeClient"]

_LAZY = frozenset({"AsyncHTTPStream", "AsyncRuntimeClient"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import aio

        value = getattr(aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
