"""``python -m vastar_fast.simulator`` and the ``vastar simulator`` entry point."""

from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
