"""Moved to :mod:`vastar_fast.benchmarks.canned_runtime` (this name stays for scripts in
``bench/`` that import it from here)."""

from vastar_fast.benchmarks.canned_runtime import PAYLOAD, main, raw_client, running, serve

__all__ = ["PAYLOAD", "main", "raw_client", "running", "serve"]

if __name__ == "__main__":
    main()
