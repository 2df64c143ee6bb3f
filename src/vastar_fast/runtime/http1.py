"""The upstream's commonest answer read in one pass: a whole HTTP/1.1 response in one
read, framed by Content-Length (an API's JSON answer, most of the runtime's traffic).

:func:`parse_simple` either returns that answer (status, headers, body, keep-alive,
its framing; the headers raw or already in the released shape) or ``None``, and
``None`` means "ask llhttp": anything it does not
recognise as plainly valid (another HTTP version, 1xx/204/304 and statuses outside
200-599, chunked or EOF-delimited bodies, a body still arriving or followed by more
bytes, a repeated or malformed Content-Length, a byte llhttp might read differently:
bare LF, obs-fold, whitespace before a colon, a control character) goes to
``httptools`` unchanged, which has seen none of it. So what it accepts, it reads as
llhttp would (tests/runtime/test_http1.py checks that against llhttp itself), and
what it does not, llhttp decides.

Why: the compiled request path spent ~19k of its ~99k instructions per 13-byte GET in
httptools' per-header callbacks and their Python objects (callgrind, docs/decisions.md
"Upstream response fast path"); this pass is one loop over the bytes.

Twinned like the rest of the request path (written once, compiled by ``setup.py``).
Run as Python the loop is slower than llhttp, so :func:`parse_simple` answers ``None``
in the pure twin and only the compiled twin takes the fast path; the loop itself
(:func:`read_simple`) is the same code in both and tested in both.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

try:
    import cython
except ImportError:  # pragma: no cover - Cython not installed: the pure twin
    from vastar_fast import _cython_shim as cython

__all__ = ["SimpleAnswer", "parse_simple", "read_simple"]

SimpleAnswer = Tuple[int, Any, bytes, bool, int, bytes]
"""(status, headers, body, keep-alive, Content-Length, Content-Encoding): the headers as
raw (name, value) pairs in order, or with ``shape`` already in the released shape (the
dict :func:`vastar_fast.runtime.shaping.response_headers` makes of those pairs); the
Content-Encoding value stripped and lower-cased (b"" when absent)."""

_TOKEN = bytes(
    1 if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or chr(c) in "!#$%&'*+-.^_`|~") else 0
    for c in range(256)
)
"""RFC 9110 tchar: the bytes of a header name."""
_TEXT = bytes(1 if (c == 9 or 32 <= c <= 126 or c >= 128) else 0 for c in range(256))
"""HTAB, SP, VCHAR and obs-text: the bytes of a field value or a reason phrase."""
_MAX_LENGTH = 1 << 53
_names: list = [None] * 64
"""Lower-cased header names by the raw name (len and end bytes pick the slot, a hit is
compared byte by byte): a name seen before costs no bytes object and no hash."""


def parse_simple(data: bytes, shape: bool) -> Optional[SimpleAnswer]:
    """The answer in ``data`` when it is one whole simple response, else None (the
    pure twin always says None: there llhttp is faster)."""
    if not cython.compiled:
        return None
    return read_simple(data, shape)


@cython.cfunc
def _shaped_name(p: cython.p_uchar, s: cython.Py_ssize_t, e: cython.Py_ssize_t) -> str:
    """``p[s:e].decode("latin-1").lower()`` (what shaping.response_headers makes of a
    name), from the cache when this raw name was seen before."""
    n: cython.Py_ssize_t = e - s
    slot: cython.Py_ssize_t = (n * 31 + p[s] * 7 + p[e - 1]) & 63
    names: list = _names
    entry = names[slot]
    k: cython.Py_ssize_t
    if entry is not None:
        raw: bytes = entry[0]
        if len(raw) == n:
            q: cython.p_uchar = raw
            for k in range(n):
                if q[k] != p[s + k]:
                    break
            else:
                return entry[1]
    raw_name = p[s:e]
    name: str = raw_name.decode("latin-1").lower()
    names[slot] = (raw_name, name)
    return name


@cython.cfunc
@cython.inline
def _named(
    p: cython.p_uchar, s: cython.Py_ssize_t, lower: bytes, n: cython.Py_ssize_t
) -> cython.bint:
    """The token at ``p[s:s+n]`` is ``lower`` (letters and '-' only), ignoring case."""
    q: cython.p_uchar = lower
    k: cython.Py_ssize_t
    for k in range(n):
        if (p[s + k] | 0x20) != q[k]:
            return False
    return True


@cython.ccall
def read_simple(data: bytes, shape: cython.bint = False) -> Optional[SimpleAnswer]:
    """One pass over ``data``: see the module's docstring for what it accepts.
    ``shape``: the headers in the released shape instead of raw pairs."""
    n: cython.Py_ssize_t = len(data)
    if n < 19:  # "HTTP/1.1 200 \r\n" plus the blank line
        return None
    p: cython.p_uchar = data
    tokens: bytes = _TOKEN
    texts: bytes = _TEXT
    token: cython.p_uchar = tokens
    text: cython.p_uchar = texts
    if not (
        p[0] == 72 and p[1] == 84 and p[2] == 84 and p[3] == 80 and p[4] == 47  # HTTP/
        and p[5] == 49 and p[6] == 46 and p[7] == 49 and p[8] == 32  # 1.1 and SP
    ):  # fmt: skip
        return None
    d0: cython.int = p[9] - 48
    d1: cython.int = p[10] - 48
    d2: cython.int = p[11] - 48
    if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9) or p[12] != 32:
        return None
    status: cython.int = d0 * 100 + d1 * 10 + d2
    if status < 200 or status > 599 or status == 204 or status == 304:
        return None
    i: cython.Py_ssize_t = 13
    while i < n and text[p[i]]:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return None
    i += 2
    headers: list = []
    shaped: dict = {}
    encoding: bytes = b""
    length: cython.longlong = -1
    keep: cython.bint = True
    size: cython.Py_ssize_t
    s: cython.Py_ssize_t
    e: cython.Py_ssize_t
    vs: cython.Py_ssize_t
    ve: cython.Py_ssize_t
    k: cython.Py_ssize_t
    while True:
        if i + 1 >= n:
            return None  # the head is not complete in this read
        if p[i] == 13:
            if p[i + 1] != 10:
                return None
            i += 2
            break
        s = i
        while i < n and token[p[i]]:
            i += 1
        if i == s or i >= n or p[i] != 58:  # an empty name, or not "name:"
            return None
        e = i
        i += 1
        while i < n and (p[i] == 32 or p[i] == 9):
            i += 1
        vs = i
        while i < n and text[p[i]]:
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        ve = i  # trailing whitespace kept, as llhttp keeps it
        i += 2
        if e - s == 14 and _named(p, s, b"content-length", 14):
            if length >= 0 or ve == vs:
                return None
            length = 0
            for k in range(vs, ve):
                if p[k] < 48 or p[k] > 57:
                    return None
                length = length * 10 + (p[k] - 48)
                if length > _MAX_LENGTH:
                    return None
        elif e - s == 17 and _named(p, s, b"transfer-encoding", 17):
            return None
        elif e - s == 10 and _named(p, s, b"connection", 10):
            for option in p[vs:ve].split(b","):
                if option.strip(b" \t").lower() == b"close":
                    keep = False
        elif e - s == 16 and _named(p, s, b"content-encoding", 16):
            encoding = p[vs:ve].strip().lower()
        if shape:  # as shaping.response_headers: repeats joined at their first place
            name = _shaped_name(p, s, e)
            value = p[vs:ve].decode("utf-8", "replace")
            size = len(shaped)
            prev = shaped.setdefault(name, value)
            if len(shaped) == size:
                shaped[name] = prev + ", " + value
        else:
            headers.append((p[s:e], p[vs:ve]))  # C slices when compiled (bytes either way)
    if length < 0 or n - i != length:
        return None
    return status, shaped if shape else headers, p[i:n] if length else b"", keep, length, encoding
