"""Clients of the runtime: ``RuntimeClient`` (blocking) and ``AsyncRuntimeClient``."""

from .aio import AsyncHTTPStream, AsyncRuntimeClient
from .results import HealthStatus
from .sync import HTTPStream, RuntimeClient

__all__ = ["AsyncHTTPStream", "AsyncRuntimeClient", "HTTPStream", "HealthStatus", "RuntimeClient"]
