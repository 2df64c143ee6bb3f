"""Shared test configuration (paths live in support.py so test modules can import them)."""

import support  # noqa: F401  (puts the flatc-generated reader on sys.path)
