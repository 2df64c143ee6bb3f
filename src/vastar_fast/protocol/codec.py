"""Selects the wire codec twin: compiled ``_codec_c`` when available, else ``_codec_py``.

``VASTAR_FAST_NO_EXTENSIONS=1`` (or any non-CPython interpreter) forces the pure twin.
Callers import from here and never know which twin they got; ``ACCELERATED`` says.
"""

import os
import sys

NO_EXTENSIONS = os.environ.get("VASTAR_FAST_NO_EXTENSIONS", "") not in ("", "0") or (
    sys.implementation.name != "cpython"
)

if NO_EXTENSIONS:
    from ._codec_py import *  # noqa: F403
    from ._codec_py import __all__

    ACCELERATED = False
else:
    try:
        from ._codec_c import *  # type: ignore[import-not-found,unused-ignore]  # noqa: F403
        from ._codec_c import __all__  # type: ignore[import-not-found,no-redef,unused-ignore]

        ACCELERATED = True
    except ImportError:  # not built (no compiler at install time): the pure twin serves
        from ._codec_py import *  # noqa: F403
        from ._codec_py import __all__  # noqa: F401

        ACCELERATED = False
# (both twins export the same names: tests/protocol checks it; the compiled one is taken
# from itself so that importing it does not import the pure twin, nor json)
