"""Selects the twin of :class:`Cells`: compiled (CPU atomics) when built, else pure
(a lock around each operation). ``VASTAR_FAST_NO_EXTENSIONS=1`` forces the pure twin."""

from __future__ import annotations

from vastar_fast.protocol.codec import NO_EXTENSIONS

__all__ = ["ACCELERATED", "Cells"]

if NO_EXTENSIONS:
    from ._atomics_py import Cells

    ACCELERATED = False
else:
    try:
        from ._atomics_c import Cells  # type: ignore[import-not-found,no-redef,unused-ignore]

        ACCELERATED = True
    except ImportError:  # not built: the pure twin serves
        from ._atomics_py import Cells

        ACCELERATED = False
