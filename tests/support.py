"""Paths shared by the tests; importing it makes the flatc-generated reader importable."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = os.path.join(HERE, "_fbs_generated")
if GENERATED not in sys.path:
    sys.path.insert(0, GENERATED)
# The released SDK's algorithms, re-implemented once, live in vastar_fast.benchmarks
# (released_*.py): the tests use them as oracles, the benchmarks as the baseline.

SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared"))
# Frames captured from the released SDKs and runtime. The team's shared copy wins when it
# sits beside the checkout; tests/golden is a verbatim copy so a bare clone tests too.
_SHARED_GOLDEN = os.path.join(SHARED, "golden")
GOLDEN_DIR = (
    _SHARED_GOLDEN
    if os.path.isfile(os.path.join(_SHARED_GOLDEN, "index.json"))
    else os.path.join(HERE, "golden")
)
