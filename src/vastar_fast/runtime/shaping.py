"""The answer's shape (the released runtime's header shape, SSE detection) and the
checks of a request's URL, with the error messages they give."""

from __future__ import annotations

from typing import Dict

import aiohttp
from yarl import URL

from ..types import ErrorClass
from .policy import TenantState
from .redact import redact_url

__all__ = ["METHODS", "METHOD_LIST", "Fail", "is_sse", "parse_url", "response_headers", "too_big"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
METHOD_LIST = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"
_DECODED = frozenset({"gzip", "x-gzip", "deflate"})
"""Content-encodings the session decodes (auto_decompress) before we see the body."""
_INVALID = int(ErrorClass.INVALID_REQUEST)


class Fail(Exception):
    """Terminal error answer for a request: error class and message."""

    def __init__(self, error_class: int, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


def parse_url(text: str) -> URL:
    try:
        url = URL(text)
    except (ValueError, TypeError) as exc:
        raise Fail(_INVALID, f"invalid url {text!r}: {exc}; send an absolute http(s) URL") from None
    if url.scheme not in ("http", "https"):
        raise Fail(
            _INVALID,
            f"unsupported URL scheme {url.scheme!r} in {redact_url(text)!r}; only http:// and "
            "https:// URLs can be requested",
        )
    if not url.host:
        raise Fail(_INVALID, f"url {redact_url(text)!r} has no host; send an absolute URL")
    return url


def too_big(size: int, limit: int, tenant: TenantState, at_least: bool = False) -> str:
    return (
        f"the upstream response is {'over ' if at_least else ''}{size} bytes, more than tenant "
        f"{tenant.name!r}'s limit of {limit} bytes ({tenant.key}.max_response_bytes); ask for "
        "less data per request, or raise the limit"
    )


def response_headers(resp: aiohttp.ClientResponse) -> Dict[str, str]:
    """Lower-cased names, repeated headers joined with ", " (the released shape)."""
    out: Dict[str, str] = {}
    for key, value in resp.headers.items():
        name = key.lower()
        prev = out.get(name)
        out[name] = value if prev is None else f"{prev}, {value}"
    if out.get("content-encoding") in _DECODED:
        # aiohttp decompressed the body: its encoding and length headers no longer apply.
        del out["content-encoding"]
        out.pop("content-length", None)
    return out


def is_sse(headers: Dict[str, str]) -> bool:
    ctype = headers.get("content-type")
    return ctype is not None and ctype.split(";", 1)[0].strip().lower() == "text/event-stream"
