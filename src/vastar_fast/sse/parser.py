"""``SSEParser``: the released SDK's static-method API over the fast scanner.

The three methods keep the released names, signatures and results wherever
the released parser finds content; where it fails on streams the SSE
specification allows (CRLF, ``data:`` without the space, comments, multi-line
data, a cut stream), they follow the specification.  All work is delegated to
:mod:`vastar_fast.sse.scanner`, so the compiled twin is used when built.
"""

from __future__ import annotations

from . import scanner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, Optional


class SSEParser:
    """Parse OpenAI-style ``data: {json}`` server-sent event text."""

    @staticmethod
    def parse_chunk(sse_chunk: str) -> Optional[str]:
        """``choices[0].delta["content"]`` of one chunk, or None.

        Like the released parser it returns the JSON value as is, so a
        non-string ``content`` comes back unchanged.
        """
        result: Optional[str] = scanner.parse_chunk(sse_chunk)
        return result

    @staticmethod
    def parse_stream(sse_data: str) -> str:
        """Concatenate every non-empty text delta of a whole stream."""
        return scanner.parse_stream(sse_data)

    @staticmethod
    def parse_stream_generator(sse_data: str) -> Iterator[str]:
        """Yield every non-empty text delta of a whole stream, in order."""
        yield from scanner.iter_stream(sse_data)
