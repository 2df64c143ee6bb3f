"""Request and response shaping: what goes to the upstream, and the answer's shape.

Outbound: the request line and headers of one HTTP/1.1 request, with the framing and
routing headers owned by the runtime (a client's Host, Content-Length,
Transfer-Encoding, Connection and other hop-by-hop headers are not forwarded: the pool
is shared by every tenant, so a client must not be able to frame or route a request
differently from what the runtime checked). Inbound: the released runtime's header
shape (lower-cased names, repeated headers joined with ", ", values as UTF-8 text).

One of the runtime's twinned request-path modules (see ``upstream.py``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import quote, urljoin, urlsplit

from vastar_fast.runtime.redact import is_secret_name, redact_url
from vastar_fast.types import ErrorClass

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = [
    "METHODS",
    "METHOD_LIST",
    "OWNED_HEADERS",
    "Fail",
    "Target",
    "build_request",
    "drop_decoded",
    "forbidden_address",
    "is_sse",
    "parse_target",
    "redirect_target",
    "response_headers",
    "target_of",
    "without_credentials",
]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
METHOD_LIST = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"

OWNED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
     "trailer", "upgrade", "proxy-connection", "expect"}
)  # fmt: skip
"""Request headers the runtime sets itself; a client's values for them are dropped."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_INVALID = int(ErrorClass.INVALID_REQUEST)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
_HOST = re.compile(r"[A-Za-z0-9._~\-]+|\[[0-9A-Fa-f:.]+\]").fullmatch
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_PLAIN_TARGET = re.compile(r"[!#-;=?-\[\]_a-z~]*").fullmatch
"""Printable ASCII without space, quote, backslash, <, >, ^, `, {, |, }: sent as is."""


class Fail(Exception):
    """Terminal error answer for a request: error class and message."""

    def __init__(self, error_class: int, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


class Target(NamedTuple):
    """Where a URL's request goes, parsed once per distinct URL."""

    scheme: str
    host: str
    """Host to connect to (IPv6 without brackets)."""
    port: int
    tls: bool
    request_target: str
    """Path and query as they go on the request line."""
    host_header: str
    host_key: str
    """``scheme://host:port``: the circuit breaker's key and the text in error messages."""
    forbidden: bool
    """The host is an IP address in a link-local or metadata range (names are checked
    when they resolve)."""
    url: str
    """The URL as given (for following relative redirects)."""


_METADATA = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128")
)
"""Link-local ranges (AWS, GCP and Azure metadata at 169.254.169.254) and the other
metadata addresses (Alibaba Cloud, AWS IPv6)."""


def forbidden_address(ip: str) -> bool:
    """Whether ``ip`` is link-local or a cloud metadata address (IPv4-mapped included)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return any(addr in net for net in _METADATA if net.version == addr.version)


def parse_target(url: str) -> Target:
    """Parse and normalise an absolute http(s) URL, or raise :class:`Fail`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError) as exc:
        raise Fail(_INVALID, f"invalid url {redact_url(str(url))!r}: {exc}; send an absolute "
                   "http(s) URL") from None  # fmt: skip
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Fail(
            _INVALID,
            f"unsupported URL scheme {scheme!r} in {redact_url(url)!r}; only http:// and "
            "https:// URLs can be requested",
        )
    host = parts.hostname or ""
    if not host:
        raise Fail(_INVALID, f"url {redact_url(url)!r} has no host; send an absolute URL")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise Fail(_INVALID, f"url {redact_url(url)!r} has an invalid host name ({exc})"
                       ) from None  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    if not _HOST(shown):
        raise Fail(_INVALID, f"url {redact_url(url)!r} has an invalid host {host!r}")
    tls = scheme == "https"
    default = 443 if tls else 80
    if port is None:
        port = default
    path = parts.path or "/"
    query = parts.query
    target = f"{path}?{query}" if query else path
    if not _PLAIN_TARGET(target):
        path = quote(path, safe=_PATH_SAFE)
        target = f"{path}?{quote(query, safe=_QUERY_SAFE)}" if query else path
    host_header = shown if port == default else f"{shown}:{port}"
    return Target(scheme, host, port, tls, target, host_header, f"{scheme}://{shown}:{port}",
                  forbidden_address(host), url)  # fmt: skip


_TARGETS: Dict[str, Target] = {}
_TARGETS_MAX = 4096


def target_of(url: str) -> Target:
    """:func:`parse_target` with a bounded cache (most clients repeat their URLs)."""
    target = _TARGETS.get(url)
    if target is None:
        target = parse_target(url)
        if len(_TARGETS) >= _TARGETS_MAX:
            _TARGETS.clear()
        _TARGETS[url] = target
    return target


def build_request(
    method: str,
    target: Target,
    headers: Dict[str, str],
    body: bytes,
    max_headers: int = 256,
    max_header_bytes: int = 65536,
) -> bytes:
    """The bytes of one HTTP/1.1 request, head and body, or raise :class:`Fail`."""
    if len(headers) > max_headers:
        raise Fail(_INVALID, f"the request has {len(headers)} headers, more than the runtime's "
                   f"limit of {max_headers} (limits.max_request_headers); send fewer")  # fmt: skip
    parts: List[str] = [method, " ", target.request_target, " HTTP/1.1\r\nHost: ",
                        target.host_header, "\r\n"]  # fmt: skip
    accept = False
    size = 0
    for name, value in headers.items():
        size += len(name) + len(value)
        lower = name.lower()
        if lower in OWNED_HEADERS:
            continue
        if not _TOKEN(name) or _BAD_VALUE(value):
            raise Fail(
                _INVALID,
                f"request header {name!r} has a name or value that cannot be sent (control "
                "characters such as CR/LF, or a name that is not an HTTP token); fix the header",
            )
        if lower == "accept":
            accept = True
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    if size > max_header_bytes:
        raise Fail(_INVALID, f"the request's headers hold {size} characters, more than the "
                   f"runtime's limit of {max_header_bytes} (limits.max_header_bytes)")  # fmt: skip
    if not accept:
        parts.append("Accept: */*\r\n")  # what aiohttp and the released runtime's reqwest send
    if body or method in _BODY_METHODS:
        parts.append("Content-Length: ")
        parts.append(str(len(body)))
        parts.append("\r\n")
    parts.append("\r\n")
    head = "".join(parts).encode("utf-8")
    return head + body if body else head


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


def redirect_target(status: int, headers: Dict[str, str], current: Target) -> Optional[str]:
    """The absolute URL a 3xx answer redirects to, or None when it does not."""
    if status not in _REDIRECTS:
        return None
    location = headers.get("location")
    if not location:
        return None
    return urljoin(current.url, location.strip())


def without_credentials(headers: Dict[str, str]) -> Dict[str, str]:
    """The headers minus credentials (Authorization, Cookie, API keys, any secret-looking
    name): what may follow a redirect to another origin."""
    return {
        k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS and not is_secret_name(k)
    }


_NAME_CACHE: Dict[bytes, str] = {}
_NAME_CACHE_MAX = 1024


def response_headers(raw: List[Tuple[bytes, bytes]], decoded: bool) -> Dict[str, str]:
    """The released shape: lower-cased names, repeated headers joined with ", ".

    Values are decoded as UTF-8 (invalid bytes become U+FFFD), so the answer is always
    valid JSON text. ``decoded``: the body was decompressed here, so its
    Content-Encoding and Content-Length no longer apply and are dropped.
    """
    out: Dict[str, str] = {}
    cache = _NAME_CACHE
    for rname, rvalue in raw:
        name = cache.get(rname)
        if name is None:
            name = rname.decode("latin-1").lower()
            if len(cache) >= _NAME_CACHE_MAX:
                cache.clear()
            cache[rname] = name
        value = rvalue.decode("utf-8", "replace")
        size = len(out)
        prev = out.setdefault(name, value)  # one lookup for the usual first occurrence
        if len(out) == size:  # a repeat (checked by size: short strings are shared objects)
            out[name] = prev + ", " + value
    if decoded:
        drop_decoded(out)
    return out


@cython.ccall
def drop_decoded(headers: dict) -> None:
    """Shaped headers of a body decompressed here: its Content-Encoding and
    Content-Length no longer apply."""
    headers.pop("content-encoding", None)
    headers.pop("content-length", None)


@cython.ccall
def is_sse(headers: dict) -> cython.bint:
    ctype: Optional[str] = headers.get("content-type")
    if ctype is None:
        return False
    if ctype == "text/event-stream":
        return True
    return ctype.split(";", 1)[0].strip().lower() == "text/event-stream"
