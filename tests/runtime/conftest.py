"""Fixtures: real upstream servers (threads) and a shared daemon (subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from .helpers import Daemon
from .upstream import FlakyUpstream, Upstream

SHARED_CONFIG: Dict[str, Any] = {
    "metrics_port": 0,
    "limits": {"credits_per_connection": 1100, "shutdown_grace_s": 5},
    "breaker": {"failure_threshold": 1000, "reset_timeout_s": 5},
    "retry": {"max_attempts": 3, "base_delay_ms": 10, "max_delay_ms": 50},
    "tenants": {
        "default": {"max_concurrent": 5000},
        "restricted": {"allowed_hosts": ["only.example.com", "*.example.org"]},
        "tiny": {"max_concurrent": 1, "max_response_bytes": 1000, "max_request_bytes": 200},
    },
}


@pytest.fixture(scope="session")
def upstream(implementation: Optional[str]) -> Iterator[Upstream]:
    """Real upstream HTTP server; one per twin run, so its hit counters start at zero."""
    server = Upstream()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def flaky(implementation: Optional[str]) -> Iterator[FlakyUpstream]:
    server = FlakyUpstream()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, implementation: Optional[str]
) -> Iterator[Daemon]:
    """One daemon (Unix socket + TCP, DEBUG logs) per twin under test, shared by the
    tests that need no special configuration."""
    tmp: Path = tmp_path_factory.mktemp("shared-rt")
    with Daemon(tmp, SHARED_CONFIG, tcp=True) as d:
        yield d
