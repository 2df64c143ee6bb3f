"""Sizes and figures of the verification suites (a pytest plugin, loaded by conftest.py).

``VASTAR_SUITES=full`` runs every suite at the size the issue asks for (10,000
requests, 100,000 hostile frames, the 10-minute soak, ...); without it they run at the
smaller CI size. A suite records its figures (counts, peak RSS, times) with the
``figures`` fixture; they are printed at the end of the run and, with
``VASTAR_SUITES_REPORT=path.json``, written to that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

FULL = os.environ.get("VASTAR_SUITES", "").strip().lower() == "full"
"""Full-size suites (the issue's numbers) instead of the CI sizes."""


def size(ci: int, full: int) -> int:
    """The CI size, or the full size under ``VASTAR_SUITES=full``."""
    return full if FULL else ci


def optional_int(name: str) -> Optional[int]:
    """An integer from the environment (a size override for experiments), or None."""
    value = os.environ.get(name)
    return int(value) if value else None


_FIGURES: List[Dict[str, Any]] = []


@pytest.fixture
def figures(implementation: Optional[str]) -> Callable[..., None]:
    """``figures(name, **values)``: one line of the suites' report."""

    def record(name: str, **values: Any) -> None:
        _FIGURES.append({"suite": name, "twin": implementation,
                         "size": "full" if FULL else "ci", **values})  # fmt: skip

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"verification suites ({'full' if FULL else 'CI'} size)")
    for row in _FIGURES:
        rest = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("suite", "twin", "size"))
        twin = f" [{row['twin']}]" if row["twin"] else ""
        terminalreporter.write_line(f"{row['suite']}{twin}: {rest}")
    out = os.environ.get("VASTAR_SUITES_REPORT")
    if out:
        Path(out).write_text(json.dumps(_FIGURES, indent=1, default=str))
