"""Selects the twin of the runtime's request path: compiled when built, else pure.

The request path (``ipc``: the per-connection protocol, ``pipeline``: one request's
life, ``upstream``: the HTTP/1.1 client, ``shaping``: requests out and answers in) is
written once in Cython's pure Python mode. Run as Python those modules are the pure
twin; ``setup.py`` compiles the same sources into :mod:`vastar_fast.runtime._compiled`.
``VASTAR_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) forces the pure twin, as
for the codec and the SSE scanner. ``ACCELERATED`` says which one serves.
"""

from __future__ import annotations

from types import ModuleType

from vastar_fast.protocol.codec import NO_EXTENSIONS

__all__ = ["ACCELERATED", "ipc", "pipeline", "shaping", "upstream"]

ipc: ModuleType
pipeline: ModuleType
shaping: ModuleType
upstream: ModuleType

if NO_EXTENSIONS:
    from . import ipc, pipeline, shaping, upstream

    ACCELERATED = False
else:
    try:
        from ._compiled import ipc, pipeline, shaping, upstream  # type: ignore[attr-defined,no-redef,unused-ignore]

        ACCELERATED = True
    except ImportError:  # not built (no compiler at install time): the pure twin serves
        from . import ipc, pipeline, shaping, upstream

        ACCELERATED = False
