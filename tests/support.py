"""Paths shared by the tests; importing it makes the flatc-generated reader importable."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = os.path.join(HERE, "_fbs_generated")
if GENERATED not in sys.path:
    sys.path.insert(0, GENERATED)

SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared"))
GOLDEN_DIR = os.path.join(SHARED, "golden")
