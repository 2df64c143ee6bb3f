"""Pure-Python twin of the SSE scanner (reference semantics for ``_scanner_c``).

Why this module exists: it is the behaviour contract.  The compiled twin
(``_scanner_c.pyx``) must return exactly what this module returns for every
input, and the test-suite feeds both the same data to prove it.  It is also
what runs on PyPy, or when ``VASTAR_FAST_NO_EXTENSIONS`` is set.

Semantics, shared by both twins
-------------------------------
* Events are parsed as the WHATWG HTML "server-sent events" algorithm says:
  CR, LF and CRLF end lines, a leading UTF-8 BOM is dropped, ``:`` lines are
  comments, ``field:value`` loses one leading space from the value, ``data``
  lines are joined with ``"\\n"``, an empty line dispatches the event when the
  data buffer is non-empty.
* A stream is first cut on ``"\\n\\n"`` exactly like the released SDK does.
  Every ``"\\n\\n"`` is also an event boundary for the specification, so
  parsing each piece per spec equals parsing the whole stream per spec.  When
  a piece yields no content at all, the released rule (``json.loads(piece[6:])``
  for pieces starting with ``"data: "``) is applied, so wherever the released
  parser finds content we find the same content.
* The final piece of a stream is dispatched even without its blank line, as
  the released parser does.
* Content is ``choices[0].delta["content"]`` of an event's JSON data, with
  exactly the outcome of ``json.loads`` plus the released lookups (``None`` on
  any error).  :func:`parse_chunk` and :func:`extract_delta` return whatever
  JSON value is there (the released behaviour).  The stream functions
  (:func:`parse_stream`, :func:`iter_stream`, ``SSEDecoder.feed_deltas``)
  keep only non-empty ``str`` values: the released ``parse_stream`` would
  raise ``TypeError`` on ``"" += 5`` and its generator would hand a number
  to code that expects text, so a non-string content is skipped instead.
* Bytes are decoded as UTF-8 with ``errors="replace"``, as the specification
  requires; line ends and ``:`` are ASCII, so decoding line by line equals
  decoding the whole stream.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

__all__ = [
    "SSEDecoder",
    "SSEEvent",
    "extract_delta",
    "iter_stream",
    "parse_chunk",
    "parse_stream",
]

_EOL = re.compile(r"\r\n|\r|\n")
_EOL_B = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"
_BOM_B = b"\xef\xbb\xbf"
_DONE = "[DONE]"
# retry values longer than this are ignored (they cannot be a sane delay, and
# int() of thousands of digits would raise); both twins agree on it
_MAX_RETRY_DIGITS = 18

_decoder = json.JSONDecoder()
# ``scan_once(s, idx)`` parses one JSON value starting at ``idx`` without
# slicing ``s`` first; it is what ``json.loads`` runs underneath.
_scan_once: Callable[[str, int], Tuple[Any, int]] = getattr(
    _decoder, "scan_once", lambda s, idx: _decoder.raw_decode(s, idx)
)


def _content_of(obj: Any) -> Any:
    """The released lookup ``choices[0].delta["content"]``; None on any error."""
    try:
        delta = obj["choices"][0]["delta"]
        if "content" in delta:
            return delta["content"]
    except Exception:
        return None
    return None


def _json_content(text: str) -> Any:
    """``json.loads`` + the released lookup; the definition of "content"."""
    try:
        obj = json.loads(text)
    except Exception:
        return None
    return _content_of(obj)


def _content_at(text: str, start: int) -> Any:
    """Content of ``text[start:]`` without copying it in the common case."""
    try:
        obj, end = _scan_once(text, start)
    except Exception:
        # leading whitespace, or invalid: let json.loads give the verdict
        return _json_content(text[start:])
    if end != len(text):
        return _json_content(text[start:])
    return _content_of(obj)


def extract_delta(data: Union[str, bytes]) -> Any:
    """``choices[0].delta["content"]`` of one event's data.

    None for ``[DONE]``, a missing key, or anything ``json.loads`` rejects.
    Bytes are decoded as UTF-8 with replacement first.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8", "replace")
    elif not isinstance(data, str):
        raise TypeError(f"extract_delta() expects str or bytes, not {type(data).__name__}")
    return _json_content(data)


class SSEEvent:
    """One dispatched server-sent event (immutable).

    ``event`` is the type ("message" by default), ``data`` the joined data
    lines, ``id`` the last event ID seen on the stream so far (None until an
    ``id`` field appears), ``retry`` the reconnection time set by a ``retry``
    field inside this event's block, else None.  Equality and hashing go by
    the four fields, so events from the pure and the compiled twin compare
    equal.
    """

    __slots__ = ("data", "event", "id", "retry")

    event: str
    data: str
    id: Optional[str]
    retry: Optional[int]

    def __init__(
        self,
        event: str = "message",
        data: str = "",
        id: Optional[str] = None,
        retry: Optional[int] = None,
    ) -> None:
        object.__setattr__(self, "event", event)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "retry", retry)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SSEEvent is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("SSEEvent is immutable")

    def _key(self) -> Tuple[str, str, Optional[str], Optional[int]]:
        return (self.event, self.data, self.id, self.retry)

    def __eq__(self, other: object) -> bool:
        if type(other).__name__ != "SSEEvent":
            return NotImplemented
        try:
            return self._key() == (
                other.event,  # type: ignore[attr-defined]
                other.data,  # type: ignore[attr-defined]
                other.id,  # type: ignore[attr-defined]
                other.retry,  # type: ignore[attr-defined]
            )
        except AttributeError:
            return NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"SSEEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        return (SSEEvent, self._key())


def _piece_lines(piece: str) -> List[str]:
    """Lines of a piece of text: CRLF/CR/LF terminators, a last line counts."""
    if "\r" in piece:
        lines = _EOL.split(piece)
    else:
        lines = piece.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _piece_datas(lines: List[str]) -> List[str]:
    """Data strings of the events of one block of lines (the spec, data only)."""
    out: List[str] = []
    data: List[str] = []
    for line in lines:
        if not line:
            if data:
                out.append("\n".join(data))
                data = []
            continue
        if line.startswith("data"):
            if len(line) == 4:
                data.append("")
            elif line[4] == ":":
                data.append(line[6:] if line[5:6] == " " else line[5:])
    if data:
        out.append("\n".join(data))
    return out


def _piece_contents(piece: str, first: bool) -> List[Any]:
    """Non-None contents of one "\\n\\n" piece: spec first, released rule second."""
    text = piece[1:] if first and piece.startswith(_BOM) else piece
    found = []
    for data in _piece_datas(_piece_lines(text)):
        c = _json_content(data)
        if c is not None:
            found.append(c)
    if not found and piece.startswith("data: "):
        c = _json_content(piece[6:])
        if c is not None:
            found.append(c)
    return found


def parse_chunk(chunk: str) -> Any:
    """Content of one chunk: per spec first, the released ``chunk[6:]`` rule second."""
    if not isinstance(chunk, str):
        raise TypeError(f"parse_chunk() expects str, not {type(chunk).__name__}")
    single = "\n" not in chunk and "\r" not in chunk
    if single and chunk.startswith("data: "):
        # one line, spec data == chunk[6:] == released data
        return _content_at(chunk, 6)
    text = chunk[1:] if chunk.startswith(_BOM) else chunk
    for data in _piece_datas(_piece_lines(text)):
        c = _json_content(data)
        if c is not None:
            return c
    return _json_content(chunk[6:])


def iter_stream(data: str) -> Iterator[str]:
    """Iterator over each non-empty str content of a whole SSE stream, in order.

    The stream is scanned at call time, like the compiled twin does.
    """
    if not isinstance(data, str):
        raise TypeError(f"iter_stream() expects str, not {type(data).__name__}")
    return iter(_stream_contents(data))


def parse_stream(data: str) -> str:
    """All non-empty str contents of a whole SSE stream, concatenated."""
    if not isinstance(data, str):
        raise TypeError(f"parse_stream() expects str, not {type(data).__name__}")
    return "".join(_stream_contents(data))


_scanstring: Callable[..., Tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _hot_content(piece: str) -> Any:
    """Content of a single-line ``data: `` piece (spec and released rule agree).

    ``.get`` equals the released ``"content" in delta`` + lookup for dicts,
    and any other delta type raises (-> None) either way.
    """
    try:
        obj, end = _scan_once(piece, 6)
        if end != len(piece):
            raise ValueError
        return obj["choices"][0]["delta"].get("content")
    except Exception:
        return _json_content(piece[6:])


def _learn(piece: str, c: str) -> Optional[Tuple[str, str]]:
    """Template (prefix with the open quote, suffix from the closing quote)
    around the last ``"content":`` string token of ``piece`` that decodes to
    ``c``, the piece's content; None when there is no such token."""
    k = piece.rfind('"content":')
    if k < 0:
        return None
    j = k + 10
    while piece[j : j + 1] in (" ", "\t"):
        j += 1
    if piece[j : j + 1] != '"':
        return None
    try:
        tc, e = _scanstring(piece, j + 1)
    except Exception:
        return None
    if tc != c:
        return None
    return piece[: j + 1], piece[e - 1 :]


# _template_walk stops once this many str-content pieces did not fit the
# template and they outnumber the ones that did
_GIVE_UP = 32


def _template_walk(data: str, out: List[str]) -> int:
    """Append the non-empty str contents of a stream to ``out``, in order.

    The stream is cut on "\\n\\n" as ``str.split`` would, one piece at a time.
    Returns where it stopped: past the end, or the start of a piece when the
    template kept missing (the caller then finishes with :func:`_split_walk`).

    Event template: consecutive OpenAI chunks differ only in the content
    string.  After a single-line ``data: `` piece gave str content, its text
    up to the content's opening quote (``tp``) and from the closing quote on
    (``ts``) is kept.  A later piece ``tp + tok + ts`` whose ``tok`` is a
    valid JSON string body (``scanstring`` validates it exactly as json does
    and finds its end) is the same JSON document with only that string token
    changed, so its content is ``tok`` decoded -- once it is proven that the
    token is the content.  The quote ending ``tp`` opens a string token: it
    follows ``"content":`` (and blanks) in valid JSON, where that text is
    either a key or ends a string with ``content"`` and is followed by a real
    colon.  JSON lexing is left to right, so the token ends where its body
    does and the same tokens follow, and the parsed documents differ in that
    one string value only.  The lookup's target does not depend on string
    values, so when a full parse of a piece whose token decodes differently
    from the template's returns exactly the new token, the target is that
    token, for every later matching piece too.  Until then every piece is
    parsed in full; a piece that does not fit goes the full way and may
    become the new template.  ``tp``, ``ts`` and a valid body hold no line
    end, so such a piece is one line and ends at the next "\\n\\n".
    """
    append = out.append
    scan = _scan_once
    scanstring = _scanstring
    startswith = data.startswith
    find = data.find
    n = len(data)
    pos = 0
    tp = ts = ""  # template prefix (with the open quote) and suffix
    lp = ls = 0  # their lengths; lp == 0: no template
    t_content = ""  # the template's own content
    proven = False
    # pieces that did (not) fit; learning costs a search and trying a
    # template costs a scan, so a stream where templates keep missing is
    # finished by _split_walk
    hits = misses = 0
    while pos <= n:
        if lp and startswith(tp, pos):
            try:
                tc, e = scanstring(data, pos + lp)
            except Exception:
                e = 0
            if e and startswith(ts, e - 1):
                end = e - 1 + ls
                if end == n or startswith("\n\n", end):
                    if proven:
                        if tc:
                            append(tc)
                        hits += 1
                        pos = end + 2
                        continue
                    # full parse; its result may prove the template
                    c = _hot_content(data[pos:end])
                    if c.__class__ is str:
                        if c == tc and tc != t_content:
                            proven = True
                        if c:
                            append(c)
                    pos = end + 2
                    continue
        b = find("\n\n", pos)
        if b < 0:
            b = n
        piece = data[pos:b]
        if piece.startswith("data: ") and "\n" not in piece and "\r" not in piece:
            # hot path: one "data: " line, spec and released rule coincide
            # (as _hot_content, inlined)
            try:
                obj, end = scan(piece, 6)
                if end != len(piece):
                    raise ValueError
                c = obj["choices"][0]["delta"].get("content")
            except Exception:
                c = _json_content(piece[6:])
            if c.__class__ is str:
                if c:
                    append(c)
                misses += 1
                if misses >= _GIVE_UP and misses > hits:
                    return b + 2
                t = _learn(piece, c)
                if t is not None:
                    tp, ts = t
                    lp, ls = len(tp), len(ts)
                    t_content = c
                    proven = False
        elif piece:
            for c in _piece_contents(piece, pos == 0):
                if c and c.__class__ is str:
                    append(c)
        pos = b + 2
    return pos


def _split_walk(data: str, pos: int, out: List[str]) -> None:
    """Append the non-empty str contents of ``data[pos:]`` (a piece start)."""
    append = out.append
    scan = _scan_once
    if pos:
        data = data[pos:]
    pieces = data.split("\n\n")
    # Every "\n" sits in a separator and there is no CR or BOM: each piece is
    # then at most one line, so the per-piece line checks can be skipped.
    simple = (
        "\r" not in data and not data.startswith(_BOM) and data.count("\n") == 2 * (len(pieces) - 1)
    )
    first = pos == 0
    for piece in pieces:
        if piece.startswith("data: ") and (simple or ("\n" not in piece and "\r" not in piece)):
            # hot path (as _hot_content, inlined)
            try:
                obj, end = scan(piece, 6)
                if end != len(piece):
                    raise ValueError
                c = obj["choices"][0]["delta"].get("content")
            except Exception:
                c = _json_content(piece[6:])
            if c and c.__class__ is str:
                append(c)
        elif piece:
            for c in _piece_contents(piece, first):
                if c and c.__class__ is str:
                    append(c)
        first = False


def _stream_contents(data: str) -> List[str]:
    """The non-empty str contents of a stream, in order."""
    out: List[str] = []
    pos = _template_walk(data, out)
    if pos <= len(data):
        _split_walk(data, pos, out)
    return out


class SSEDecoder:
    """Incremental, spec-following SSE decoder: feed bytes, get events.

    Only the unfinished last line is kept between calls and every byte is
    looked at a bounded number of times, so decoding is O(n) for n bytes
    whatever the chunking (1-byte chunks included).  A CR ending one chunk
    and an LF starting the next form one CRLF; a UTF-8 character split across
    chunks is decoded once its line is complete.
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_done",
        "_event",
        "_has_data",
        "_last_id",
        "_retry",
        "_skip_lf",
        "_tail",
        "_tc",
        "_tp",
        "_tproven",
        "_ts",
    )

    def __init__(self) -> None:
        self._tail = bytearray()
        self._at_start = True
        self._skip_lf = False
        self._data: List[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: Optional[str] = None
        self._retry: Optional[int] = None
        self._done = False
        # feed_deltas' document template, as in _stream_contents: prefix
        # (with the content's open quote), suffix (from its closing quote),
        # the template's own content, and whether the token is proven
        self._tp = ""
        self._ts = ""
        self._tc = ""
        self._tproven = False

    @property
    def done(self) -> bool:
        """True once an event whose data is ``[DONE]`` has been dispatched."""
        return self._done

    # -- line machinery ------------------------------------------------------
    def _lines(self, data: bytes) -> List[bytes]:
        """Complete lines of ``data`` (with the kept tail); keeps the new tail."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() expects bytes, not {type(data).__name__}")
        data = bytes(data)
        if not data:
            return []
        if self._at_start:
            tail = self._tail
            tail += data
            if len(tail) < 3 and _BOM_B.startswith(bytes(tail)):
                return []
            data = bytes(tail[3:]) if tail.startswith(_BOM_B) else bytes(tail)
            tail.clear()
            self._at_start = False
            if not data:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if 13 in data:  # b"\r" (an int needle is cheaper)
            parts = _EOL_B.split(data)
            if data[-1] == 0x0D:
                self._skip_lf = True
        else:
            parts = data.split(b"\n")
        if len(parts) == 1:
            self._tail += data
            return []
        if self._tail:
            parts[0] = bytes(self._tail) + parts[0]
            self._tail.clear()
        self._tail += parts.pop()
        return parts

    def _line(self, line: bytes) -> bool:
        """Apply one non-empty line to the pending event; True for a data line."""
        text = line.decode("utf-8", "replace")
        if text[0] == ":":
            return False
        name, colon, value = text.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
            return True
        if name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._last_id = value
        elif name == "retry":
            if value and len(value) <= _MAX_RETRY_DIGITS and value.isascii() and value.isdigit():
                self._retry = int(value)
        return False

    def _take(self) -> Optional[str]:
        """End the pending event; its data when it must be dispatched."""
        data = "\n".join(self._data) if self._has_data else None
        self._data = []
        self._has_data = False
        if data is not None and data.strip() == _DONE:
            self._done = True
        return data

    def _event_of(self, data: str) -> SSEEvent:
        ev = SSEEvent(self._event or "message", data, self._last_id, self._retry)
        self._event = ""
        self._retry = None
        return ev

    def _reset_block(self) -> None:
        self._event = ""
        self._retry = None

    # -- public API ----------------------------------------------------------
    def feed(self, data: bytes) -> List[SSEEvent]:
        """Events completed by this chunk of bytes."""
        if (
            data.__class__ is bytes
            and 10 not in data  # an int needle: no str/bytes probing
            and 13 not in data
            and not self._at_start
            and not self._skip_lf
        ):
            # no line ends: only the unfinished line grows
            self._tail += data
            return []
        out: List[SSEEvent] = []
        for line in self._lines(data):
            if line:
                self._line(line)
                continue
            d = self._take()
            if d is None:
                self._reset_block()
            else:
                out.append(self._event_of(d))
        return out

    def _delta(self, d: str) -> Any:
        """``_json_content(d)``, through the learned template when it fits."""
        tp = self._tp
        if tp and d.startswith(tp):
            try:
                tc, e = _scanstring(d, len(tp))
            except Exception:
                e = 0
            if e and e - 1 + len(self._ts) == len(d) and d.startswith(self._ts, e - 1):
                if self._tproven:
                    return tc
                c = _json_content(d)
                if c.__class__ is str and c == tc and tc != self._tc:
                    self._tproven = True
                return c
        c = _json_content(d)
        if c.__class__ is str:
            t = _learn(d, c)
            if t is not None:
                self._tp, self._ts = t
                self._tc = c
                self._tproven = False
        return c

    def feed_deltas(self, data: bytes) -> List[str]:
        """Non-empty str delta contents of the events completed by this chunk."""
        if (
            data.__class__ is bytes
            and 10 not in data  # an int needle: no str/bytes probing
            and 13 not in data
            and not self._at_start
            and not self._skip_lf
        ):
            # no line ends: only the unfinished line grows
            self._tail += data
            return []
        out: List[str] = []
        for line in self._lines(data):
            if line:
                self._line(line)
                continue
            d = self._take()
            self._reset_block()
            if d is not None:
                c = self._delta(d)
                if c and c.__class__ is str:
                    out.append(c)
        return out

    def _finish(self) -> Optional[str]:
        # a kept BOM prefix (fewer than three bytes) is then just the last line
        self._at_start = False
        self._skip_lf = False
        if self._tail:
            line = bytes(self._tail)
            self._tail.clear()
            self._line(line)
        return self._take()

    def flush(self) -> List[SSEEvent]:
        """End of stream: the pending event (unterminated last line included)."""
        d = self._finish()
        if d is None:
            self._reset_block()
            return []
        return [self._event_of(d)]

    def flush_deltas(self) -> List[str]:
        """End of stream: the pending event's delta, as :meth:`feed_deltas`."""
        d = self._finish()
        self._reset_block()
        if d is None:
            return []
        c = _json_content(d)
        return [c] if c and c.__class__ is str else []
