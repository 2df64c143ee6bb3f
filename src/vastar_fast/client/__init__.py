"""Clients of the runtime: ``RuntimeClient`` (blocking) and ``AsyncRuntimeClient``."""

from .results import HealthStatus
from .sync import HTTPStream, RuntimeClient

__all__ = ["HTTPStream", "HealthStatus", "RuntimeClient"]
