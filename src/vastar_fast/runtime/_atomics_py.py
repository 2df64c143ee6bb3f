"""64-bit cells with load, store, add and compare-and-swap on a writable buffer.

The pure twin of ``_atomics_c``: every operation holds ``lock`` (a process-shared lock
when the buffer is shared between worker processes), so it is atomic against every
other process using the same lock; the compiled twin uses CPU atomics instead.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

__all__ = ["Cells"]


class Cells:
    """``len(buffer) // 8`` int64 cells."""

    def __init__(self, owner: Any, lock: Optional[Any] = None) -> None:
        view = memoryview(owner).cast("B")
        if len(view) % 8:
            raise ValueError("Cells need an 8-byte aligned buffer whose size is a multiple of 8")
        self._cells = view.cast("q")
        self._lock = lock if lock is not None else threading.Lock()

    def __len__(self) -> int:
        return len(self._cells)

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self._cells):
            raise IndexError(f"cell {i} out of range 0..{len(self._cells) - 1}")

    def load(self, i: int) -> int:
        self._check(i)
        with self._lock:
            return int(self._cells[i])

    def store(self, i: int, value: int) -> None:
        self._check(i)
        with self._lock:
            self._cells[i] = value

    def add(self, i: int, delta: int) -> int:
        """Add ``delta``; the new value."""
        self._check(i)
        with self._lock:
            value = int(self._cells[i]) + delta
            self._cells[i] = value
            return value

    def cas(self, i: int, expected: int, new: int) -> bool:
        """Set to ``new`` if it still holds ``expected``; whether it did."""
        self._check(i)
        with self._lock:
            if self._cells[i] != expected:
                return False
            self._cells[i] = new
            return True
