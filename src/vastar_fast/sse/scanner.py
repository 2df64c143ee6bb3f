"""Selector: the compiled SSE scanner when available, else the pure twin.

Callers import from here and never know which twin they got (the yarl
``_quoting.py`` pattern).  ``VASTAR_FAST_NO_EXTENSIONS=1`` forces pure Python.
"""

import os
import sys

_NO_EXT = os.environ.get("VASTAR_FAST_NO_EXTENSIONS", "") not in ("", "0")

if _NO_EXT or sys.implementation.name != "cpython":  # pragma: no cover
    from ._scanner_py import (
        SSEDecoder,
        SSEEvent,
        extract_delta,
        iter_stream,
        parse_chunk,
        parse_stream,
    )

    ACCELERATED = False
else:
    try:
        from ._scanner_c import (  # type: ignore[assignment]
            SSEDecoder,
            SSEEvent,
            extract_delta,
            iter_stream,
            parse_chunk,
            parse_stream,
        )

        ACCELERATED = True
    except ImportError:  # pragma: no cover - extension not built
        from ._scanner_py import (
            SSEDecoder,
            SSEEvent,
            extract_delta,
            iter_stream,
            parse_chunk,
            parse_stream,
        )

        ACCELERATED = False

__all__ = [
    "ACCELERATED",
    "SSEDecoder",
    "SSEEvent",
    "extract_delta",
    "iter_stream",
    "parse_chunk",
    "parse_stream",
]
