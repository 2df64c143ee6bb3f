"""Per-tenant policy: which hosts a tenant may call, how much, how big.

Decisions return a ready error (class and message) instead of raising, because the
request handler turns them straight into an ExecuteResponse. Messages say what was
refused, under which config key, and what to change.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Dict, List, Optional, Pattern, Tuple

from ..types import ErrorClass
from .config import RuntimeSettings, TenantPolicy

__all__ = ["Denial", "PolicyEngine", "TenantState"]

Denial = Tuple[ErrorClass, str]


class TenantState:
    """A tenant's compiled policy and its live count of requests in flight."""

    __slots__ = ("_allow_all", "_patterns", "in_flight", "key", "name", "policy")

    def __init__(self, name: str, key: str, policy: TenantPolicy) -> None:
        self.name = name
        self.key = key
        """Config key of the policy that applies (``tenants.<id>`` or ``tenants.default``)."""
        self.policy = policy
        self.in_flight = 0
        self._allow_all = "*" in policy.allowed_hosts
        self._patterns: List[Pattern[str]] = [
            re.compile(fnmatch.translate(p.lower())) for p in policy.allowed_hosts
        ]

    def host_allowed(self, host: str, port: int) -> bool:
        if self._allow_all:
            return True
        host = host.lower()
        host_port = f"{host}:{port}"
        return any(p.match(host) or p.match(host_port) for p in self._patterns)


class PolicyEngine:
    """Admits requests for tenants; one per daemon, used on the event loop thread only."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self._settings = settings
        self._tenants: Dict[str, TenantState] = {}

    def tenant(self, tenant_id: str) -> TenantState:
        """The state of a tenant (tenants not in the config share the default policy's
        limits but each has its own concurrency count)."""
        state = self._tenants.get(tenant_id)
        if state is None:
            listed = tenant_id in self._settings.tenants
            key = f"tenants.{tenant_id}" if listed else "tenants.default"
            state = TenantState(tenant_id, key, self._settings.policy_for(tenant_id))
            self._tenants[tenant_id] = state
        return state

    @staticmethod
    def check(state: TenantState, host: str, port: int, request_bytes: int) -> Optional[Denial]:
        """None when the request may go ahead, else (error class, message)."""
        policy = state.policy
        if not state.host_allowed(host, port):
            return (
                ErrorClass.PERMANENT,
                f"policy denies tenant {state.name!r} access to host {host}:{port}; allowed "
                f"hosts are {policy.allowed_hosts} ({state.key}.allowed_hosts in the runtime "
                "config); ask the operator to allow it",
            )
        if request_bytes > policy.max_request_bytes:
            return (
                ErrorClass.PERMANENT,
                f"request of {request_bytes} bytes exceeds tenant {state.name!r}'s limit of "
                f"{policy.max_request_bytes} bytes ({state.key}.max_request_bytes); send a "
                "smaller request",
            )
        if state.in_flight >= policy.max_concurrent:
            return (
                ErrorClass.RATE_LIMITED,
                f"tenant {state.name!r} already has {state.in_flight} requests in flight, its "
                f"quota ({state.key}.max_concurrent); retry after some of them finish",
            )
        return None
