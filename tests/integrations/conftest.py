"""Fixtures: the simulator and our runtime as subprocesses (services.py), one pair per
twin under test, and the helpers the transport tests share."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from typing import Any, Dict, Iterator, Optional

import pytest
import yaml

from vastar_fast import RuntimeConfig
from vastar_fast.services import ServiceProcess, make_tmpdir, runtime_service, start_simulator

RUNTIME_CONFIG: Dict[str, Any] = {
    "retry": {"max_attempts": 1},
    "tenants": {
        "default": {},
        "single": {"max_concurrent": 1},
        "restricted": {"allowed_hosts": ["only.example.com"]},
    },
}
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."
"""The simulator's answer to PROMPT (its knowledge base)."""


class Stack:
    """The simulator and the runtime in front of it."""

    def __init__(self, simulator: ServiceProcess, runtime: ServiceProcess) -> None:
        self.simulator = simulator
        self.runtime = runtime
        assert simulator.url is not None and runtime.socket_path is not None
        self.url: str = simulator.url
        self.socket_path: str = runtime.socket_path

    def config(self, **kw: Any) -> RuntimeConfig:
        return RuntimeConfig(socket_path=self.socket_path, **kw)

    def health(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=10) as resp:
            data: Dict[str, Any] = json.load(resp)
        return data

    def active(self) -> int:
        """Requests the simulator is serving right now (a stalled stream counts)."""
        return int(self.health()["active"])

    def wait_idle(self, timeout: float = 15.0) -> bool:
        """Bounded wait until the simulator serves nothing (cancellations arrived)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.active() == 0:
                return True
            time.sleep(0.02)
        return self.active() == 0


@pytest.fixture(scope="session")
def stack(implementation: Optional[str]) -> Iterator[Stack]:
    """Simulator (20 ms to the first token, 5 ms per token; a stall lasts up to 60 s)
    and `vastar runtime` on a socket, per twin."""
    tmp = make_tmpdir("vastar-integ-")
    config_path = os.path.join(tmp, "runtime.yaml")
    with open(config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(RUNTIME_CONFIG, fh)
    deadline = time.monotonic() + 60
    simulator = start_simulator(
        tmp, deadline=deadline, ttft_ms=20, token_delay_ms=5, extra=["--stall-max-s", "60"]
    )
    runtime = runtime_service(tmp, config_path=config_path, workers=1)
    try:
        runtime.start(deadline)
        yield Stack(simulator, runtime)
    finally:
        runtime.stop(10)
        simulator.stop(5)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def idle(stack: Stack) -> Stack:
    """The stack, with nothing left running upstream from an earlier test."""
    assert stack.wait_idle()
    return stack


@pytest.fixture
def nowhere(tmp_path: Any) -> RuntimeConfig:
    """A config pointing at a socket nobody listens on."""
    return RuntimeConfig(socket_path=str(tmp_path / "not-running.sock"))
