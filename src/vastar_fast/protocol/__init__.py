"""The Vastar IPC wire protocol: codec twins (``codec``) and the sans-I/O core
(``connection``). The only place that knows the wire format."""

from . import codec
from .codec import ACCELERATED

__all__ = ["ACCELERATED", "codec"]
