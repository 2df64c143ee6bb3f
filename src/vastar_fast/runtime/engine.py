"""Selects the twin of the runtime's request path: compiled when built, else pure.

The request path (``ipc``: the per-connection protocol, ``pipeline``: one request's
life, ``upstream``: the HTTP/1.1 client, ``shaping``: requests out and answers in,
``http1``: the one-pass read of a plain answer, ``policy``, ``breaker`` and ``shared``: tenant limits and breakers, shared by workers) is
written once in Cython's pure Python mode. Run as Python those modules are the pure
twin; ``setup.py`` compiles the same sources into :mod:`vastar_fast.runtime._compiled`.
``VASTAR_FAST_NO_EXTENSIONS=1`` (or a non-CPython interpreter) forces the pure twin, as
for the codec and the SSE scanner. ``ACCELERATED`` says which one serves.
"""

from __future__ import annotations

from types import ModuleType

from vastar_fast.protocol.codec import NO_EXTENSIONS

__all__ = [
    "ACCELERATED",
    "TWINNED",
    "breaker",
    "http1",
    "ipc",
    "pipeline",
    "policy",
    "shaping",
    "shared",
    "upstream",
]

TWINNED = ("breaker", "http1", "ipc", "pipeline", "policy", "shaping", "shared", "upstream")
"""The modules written once and compiled into ``_compiled`` (setup.py builds the same)."""

breaker: ModuleType
http1: ModuleType
ipc: ModuleType
pipeline: ModuleType
policy: ModuleType
shaping: ModuleType
shared: ModuleType
upstream: ModuleType

if NO_EXTENSIONS:
    from . import breaker, http1, ipc, pipeline, policy, shaping, shared, upstream

    ACCELERATED = False
else:
    try:
        from ._compiled import (  # type: ignore[attr-defined,no-redef,unused-ignore]
            breaker,
            http1,
            ipc,
            pipeline,
            policy,
            shaping,
            shared,
            upstream,
        )

        ACCELERATED = True
    except ImportError:  # not built (no compiler at install time): the pure twin serves
        from . import breaker, http1, ipc, pipeline, policy, shaping, shared, upstream

        ACCELERATED = False
