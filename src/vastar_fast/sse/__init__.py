"""Server-sent events: the released ``SSEParser`` API plus an incremental decoder.

``ACCELERATED`` tells whether the compiled scanner twin is live.
"""

from .parser import SSEParser
from .scanner import ACCELERATED, SSEDecoder, SSEEvent

__all__ = ["ACCELERATED", "SSEDecoder", "SSEEvent", "SSEParser"]
