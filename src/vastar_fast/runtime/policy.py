"""Per-tenant policy: which hosts a tenant may call, how much, how big.

Decisions return a ready error (class and message) instead of raising, because the
request handler turns them straight into an ExecuteResponse. Messages say what was
refused, under which config key, and what to change.
"""

from __future__ import annotations

import fnmatch
import hmac
import re
from typing import Any, List, Optional, Pattern, Tuple

from vastar_fast.runtime.config import RuntimeSettings, TenantPolicy
from vastar_fast.types import ErrorClass

from .shared import SharedState

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = ["MAX_TENANTS", "TOKEN_KEY", "Denial", "PolicyEngine", "TenantState"]

MAX_TENANTS = 10_000
"""Tenant states kept per worker; beyond it, idle unlisted tenants are forgotten (their
counts live in the shared table, so forgetting one loses nothing)."""

TOKEN_KEY = "vastar-token"
"""The ExecuteRequest KeyValue entry that carries the runtime's or a tenant's token."""

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
    token_required = cython.declare(cython.bint, visibility="readonly")
    allow_link_local = cython.declare(cython.bint, visibility="readonly")
    _token: bytes
    _token_key: str
    _shared: Any
    _key: cython.longlong
    _allow_all: cython.bint
    _patterns: list

    def __init__(
        self,
        name: str,
        key: str,
        policy: TenantPolicy,
        shared: Optional[SharedState] = None,
        runtime_token: Optional[str] = None,
    ) -> None:
        self.name = name
        self.key = key
        """Config key of the policy that applies (``tenants.<id>`` or ``tenants.default``)."""
        self.policy = policy
        token = policy.token if policy.token is not None else runtime_token
        self.token_required = token is not None
        self._token = token.encode("utf-8") if token is not None else b""
        self._token_key = f"{key}.token" if policy.token is not None else "security.token"
        self.allow_link_local = policy.allow_link_local
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

    def authorize(self, frame_headers: List[Tuple[str, str]]) -> Optional[str]:
        """None when the request carries the token this tenant needs (compared in
        constant time), else why not; the token itself is never part of the answer."""
        given: Optional[str] = None
        for k, v in frame_headers:
            if k == TOKEN_KEY:
                given = v
                break
        if given is None:
            return (
                f"the runtime requires a token for tenant {self.name!r} ({self._token_key}) "
                f"and the request carries none; give the client the token (our clients read "
                f"VASTAR_RUNTIME_TOKEN and send it as the '{TOKEN_KEY}' entry of the "
                "ExecuteRequest headers)"
            )
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._token):
            return (
                f"the token the request carries is not the one tenant {self.name!r} needs "
                f"({self._token_key}); check the client's VASTAR_RUNTIME_TOKEN"
            )
        return None

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
        state = TenantState(tenant_id, key, self._settings.policy_for(tenant_id), self._shared,
                            self._settings.security.token)  # fmt: skip
        tenants = self._tenants
        if len(tenants) >= MAX_TENANTS:
            # Tenant ids come from clients: keep the configured ones and the busy ones.
            listed = self._settings.tenants
            self._tenants = tenants = {
                t: st for t, st in tenants.items() if t in listed or st.in_flight > 0
            }
        tenants[tenant_id] = state
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
