"""Shared fixtures: simulators on 127.0.0.1 with free ports, in background threads."""

from __future__ import annotations

from typing import Iterator

import pytest

from vastar_fast.simulator import SimulatorServer, SimulatorSettings


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorServer]:
    """A zero-delay simulator shared by the read-only tests."""
    with SimulatorServer(SimulatorSettings.fast(stall_max_s=5.0)) as server:
        yield server
