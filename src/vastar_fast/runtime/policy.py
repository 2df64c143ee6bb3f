"""Per-tenant policy: which hosts a tenant may call, how much, how big.

Decisions return a ready error (class and message) instead of raising, because the
request handler turns them straight into an ExecuteResponse. Messages say what was
refused, under which config key, and what to change.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, List, Optional, Pattern, Tuple

from vastar_fast.runtime.config import RuntimeSettings, TenantPolicy
from vastar_fast.types import ErrorClass

from .shared import SharedState

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = ["Denial", "PolicyEngine", "TenantState"]

Denial = Tuple[ErrorClass, str]


@cython.cclass
class TenantState:
    """A tenant's compiled policy and its count of requests in flight.

    The count lives in a :class:`.shared.SharedState` (shared by every worker process
    of the daemon when there are several), so ``max_concurrent`` holds for the daemon
    as a whole. :meth:`acquire` counts a request in if the tenant is under its limit.
    """

    name = cython.declare(str, visibility="public")
    key = cython.declare(str, visibility="public")
    policy = cython.declare(object, visibility="public")
    _shared: Any
    _key: cython.longlong
    _allow_all: cython.bint
    _patterns: list

    def __init__(
        self, name: str, key: str, policy: TenantPolicy, shared: Optional[SharedState] = None
    ) -> None:
        self.name = name
        self.key = key
        """Config key of the policy that applies (``tenants.<id>`` or ``tenants.default``)."""
        self.policy = policy
        self._shared = shared if shared is not None else SharedState(tenant_slots=64,
                                                                     breaker_slots=1)  # fmt: skip
        self._key = self._shared.tenant_key(name)
        self._allow_all = "*" in policy.allowed_hosts
        self._patterns: List[Pattern[str]] = [
            re.compile(fnmatch.translate(p.lower())) for p in policy.allowed_hosts
        ]

    @property
    def in_flight(self) -> int:
        """Requests in flight for this tenant, over every worker process."""
        return self._shared.tenant_count(self._key)

    def acquire(self) -> int:
        """Count a request in: its slot (give it to :meth:`release`), -1 when the tenant
        is at ``max_concurrent``, -2 when the tenant table is full."""
        return self._shared.tenant_acquire(self._key, self.policy.max_concurrent)

    def release(self, slot: int) -> None:
        self._shared.tenant_release(slot)

    def host_allowed(self, host: str, port: int) -> bool:
        if self._allow_all:
            return True
        host = host.lower()
        host_port = f"{host}:{port}"
        return any(p.match(host) or p.match(host_port) for p in self._patterns)

    def refusal(self, code: int) -> Denial:
        """The RATE_LIMITED answer for an :meth:`acquire` that failed with ``code``."""
        if code == -2:
            return (
                ErrorClass.RATE_LIMITED,
                "the runtime is tracking as many tenants with requests in flight as it can; "
                "retry in a moment",
            )
        return (
            ErrorClass.RATE_LIMITED,
            f"tenant {self.name!r} already has {self.in_flight} requests in flight, its "
            f"quota ({self.key}.max_concurrent); retry after some of them finish",
        )


@cython.cclass
class PolicyEngine:
    """Admits requests for tenants; one per daemon (per worker process), used on the
    event loop thread only."""

    _settings: Any
    _shared: Any
    _tenants: dict

    def __init__(self, settings: RuntimeSettings, shared: Optional[SharedState] = None) -> None:
        self._settings = settings
        self._shared = shared if shared is not None else SharedState()
        self._tenants = {}

    def tenant(self, tenant_id: str) -> TenantState:
        """The state of a tenant (tenants not in the config share the default policy's
        limits but each has its own concurrency count)."""
        found = self._tenants.get(tenant_id)
        if found is not None:
            return found
        listed = tenant_id in self._settings.tenants
        key = f"tenants.{tenant_id}" if listed else "tenants.default"
        state = TenantState(tenant_id, key, self._settings.policy_for(tenant_id),
                            self._shared)  # fmt: skip
        self._tenants[tenant_id] = state
        return state

    @staticmethod
    def check(state: TenantState, host: str, port: int, request_bytes: int) -> Optional[Denial]:
        """None when the request may go ahead (hosts and size), else (error class,
        message). The concurrency limit is :meth:`TenantState.acquire`'s."""
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
        return None
