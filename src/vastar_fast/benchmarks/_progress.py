"""A pytest plugin that reports collection and each finished test as one JSON line on
the file descriptor in ``$VASTAR_BENCH_PROGRESS_FD`` (``vastar bench``'s progress bar)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

_FD = int(os.environ.get("VASTAR_BENCH_PROGRESS_FD", "-1"))


def _send(event: Dict[str, Any]) -> None:
    if _FD >= 0:
        try:
            os.write(_FD, (json.dumps(event) + "\n").encode())
        except OSError:
            pass


def pytest_collection_finish(session: Any) -> None:
    _send({"event": "collected", "count": len(session.items)})


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _send({"event": "done", "nodeid": report.nodeid, "outcome": report.outcome})
