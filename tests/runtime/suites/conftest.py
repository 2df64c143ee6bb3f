"""The hardening verification suites (sizes and figures: tests/suites_report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest

from suites_report import FULL, optional_int, size
from vastar_fast.services import ServiceProcess, start_simulator

__all__ = ["FULL", "optional_int", "simulator", "size"]


def simulator(tmp: Path, *args: str, ttft_ms: float = 1.0, token_delay_ms: float = 0.0,
              tokens_per_chunk: int = 1) -> ServiceProcess:  # fmt: skip
    """``vastar simulator`` on a free loopback port (stopped by the caller)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return start_simulator(str(tmp), ttft_ms=ttft_ms, token_delay_ms=token_delay_ms,
                           tokens_per_chunk=tokens_per_chunk, extra=list(args),
                           stop_grace_s=10.0)  # fmt: skip


@pytest.fixture
def services() -> Iterator[List[ServiceProcess]]:
    """Services a test started (appended by it); stopped at its end, newest first."""
    started: List[ServiceProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()
