"""The Vastar IPC wire protocol: codec twins (``codec``), the client core twins
(``client_core``) and the sans-I/O core (``connection``). The only place that knows
the wire format."""

from . import client_core, codec

ACCELERATED: bool = codec.ACCELERATED and client_core.ACCELERATED
"""True when the compiled wire codec and client core are live."""

__all__ = ["ACCELERATED", "client_core", "codec"]
