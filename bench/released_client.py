"""Moved to :mod:`vastar_fast.benchmarks.released_client` (this name stays for scripts in
``bench/`` that import it from here)."""

from vastar_fast.benchmarks.released_client import ReleasedStyleClient, encode_request

__all__ = ["ReleasedStyleClient", "encode_request"]
