"""Selects the client core twin: the compiled section of ``_codec_c`` when it is built,
else ``_client_py``. The rule is the wire codec's (``codec.NO_EXTENSIONS``), so the
client core and the codec it encodes with always come from the same twin.
"""

from .codec import NO_EXTENSIONS

if NO_EXTENSIONS:
    from ._client_py import BlockingChannel, ClientConnection, Waiter

    ACCELERATED = False
else:
    try:
        from ._codec_c import (  # type: ignore[import-not-found,unused-ignore]
            BlockingChannel,
            ClientConnection,
            Waiter,
        )

        ACCELERATED = True
    except ImportError:  # not built (or built before the client core): the pure twin
        from ._client_py import BlockingChannel, ClientConnection, Waiter

        ACCELERATED = False

__all__ = ["ACCELERATED", "BlockingChannel", "ClientConnection", "Waiter"]
