# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
# distutils: extra_compile_args = -O3
# distutils: include_dirs = csrc ../csrc
"""Compiled twin of ``_scanner_py``: same names, same signatures, same results.

Why it is fast: a str is scanned in its own storage (1, 2 or 4 bytes per
character, never re-encoded), bytes are scanned as UTF-8 in place, line ends
are found with ``memchr``, and the delta content is located by a validating
JSON scanner written in C (``csrc/sse_scan.h``) instead of building the whole
chunk object with ``json.loads``.  Content text is copied once, straight into
the result.  Consecutive events that differ only in the content string
(OpenAI chunks do) are matched against the last fully scanned event as a
template: ``memcmp`` of the text before and after the content string, which
is scanned and validated with the full scanner's own string routine, so the
result is provably the full scanner's (``sse_tmpl_match``); any difference
goes the full way and becomes the new template.  Whenever the answer depends on more than syntax (duplicate or
escaped keys on the path, non-string content, huge ints, deep nesting) the
scanner defers to ``json.loads`` so results stay identical to the pure twin.
See ``_scanner_py`` for the semantics.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport (
    PyUnicode_DATA,
    PyUnicode_DecodeUTF8,
    PyUnicode_FromKindAndData,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
)
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy


cdef extern from "Python.h":
    ctypedef unsigned char Py_UCS1
    ctypedef unsigned short Py_UCS2


cdef extern from "sse_scan.h" nogil:
    ctypedef struct sse_span:
        Py_ssize_t start
        Py_ssize_t end
        int escaped
    int SSE_J_NONE
    int SSE_J_STR
    int SSE_J_FALLBACK
    int sse_json_delta(int kind, const void *buf, Py_ssize_t start, Py_ssize_t end,
                       sse_span *out)
    Py_ssize_t sse_find_eol(int kind, const void *buf, Py_ssize_t pos, Py_ssize_t end)
    Py_ssize_t sse_find_lflf(int kind, const void *buf, Py_ssize_t pos, Py_ssize_t end)
    Py_ssize_t sse_unescape(int kind, const void *buf, Py_ssize_t start, Py_ssize_t end,
                            Py_UCS4 *out)
    ctypedef struct sse_tmpl:
        Py_ssize_t tp
        Py_ssize_t lp
        Py_ssize_t ts
        Py_ssize_t ls
    Py_ssize_t sse_tmpl_match(int kind, const void *buf, Py_ssize_t pos, Py_ssize_t end,
                              const sse_tmpl *t, sse_span *out)
    int sse_doc_tmpl_match(const Py_UCS1 *s, Py_ssize_t n, const Py_UCS1 *P, Py_ssize_t lp,
                           const Py_UCS1 *S, Py_ssize_t ls, sse_span *out)


__all__ = [
    "SSEDecoder",
    "SSEEvent",
    "extract_delta",
    "iter_stream",
    "parse_chunk",
    "parse_stream",
]

cdef enum:
    STACK_CHARS = 512
    # templates are given up once this many string-content events did not
    # fit and they outnumber the ones that did (both twins use 32)
    _TEMPLATE_GIVE_UP = 32

# json.loads, imported by the first event the C scanner defers (not by ``import
# vastar_fast``) and kept here: later deferrals pay a None check, no import.
cdef object _loads = None
cdef str _DONE = "[DONE]"


# ---------------------------------------------------------------- helpers --

@cython.boundscheck(True)
@cython.wraparound(True)
cdef object _content_of(object obj):
    """The released lookup ``choices[0].delta["content"]``; None on any error.

    Bounds checks are back on here: ``[]`` must raise IndexError (-> None)
    exactly as in the pure twin, not read past the list.
    """
    try:
        delta = obj["choices"][0]["delta"]
        if "content" in delta:
            return delta["content"]
    except Exception:
        return None
    return None


cdef object _import_loads():
    global _loads
    import json

    _loads = json.loads
    return _loads


cdef object _json_content(str text):
    """``json.loads`` + the released lookup: the reference the scanner defers to."""
    cdef object loads = _loads if _loads is not None else _import_loads()
    try:
        obj = loads(text)
    except Exception:
        return None
    return _content_of(obj)


cdef inline Py_UCS4 _rd(int kind, const char *buf, Py_ssize_t i) noexcept nogil:
    if kind == 1:
        return (<const Py_UCS1 *>buf)[i]
    if kind == 2:
        return (<const Py_UCS2 *>buf)[i]
    return (<const Py_UCS4 *>buf)[i]


cdef inline str _text(int kind, const char *buf, Py_ssize_t a, Py_ssize_t b, bint utf8):
    """buf[a:b) as str: UTF-8 with replacement for bytes, else the str's kind."""
    if utf8:
        return PyUnicode_DecodeUTF8(buf + a, b - a, "replace")
    return PyUnicode_FromKindAndData(kind, buf + a * kind, b - a)


cdef str _unescaped(int kind, const char *buf, Py_ssize_t a, Py_ssize_t b):
    """Decode a validated JSON string body of a str buffer."""
    cdef Py_UCS4 stack[STACK_CHARS]
    cdef Py_UCS4 *out = stack
    cdef Py_ssize_t m
    if b - a > STACK_CHARS:
        out = <Py_UCS4 *>malloc(<size_t>(b - a) * sizeof(Py_UCS4))
        if out == NULL:
            raise MemoryError()
    try:
        m = sse_unescape(kind, buf, a, b, out)
        return PyUnicode_FromKindAndData(4, out, m)
    finally:
        if out != stack:
            free(out)


cdef str _span_str(int kind, const char *buf, sse_span *sp, bint utf8):
    """The content string a successful scan located."""
    cdef str tmp
    if not sp.escaped:
        return _text(kind, buf, sp.start, sp.end, utf8)
    if utf8:
        # escapes are ASCII, so decoding first and unescaping second is exact
        tmp = PyUnicode_DecodeUTF8(buf + sp.start, sp.end - sp.start, "replace")
        return _unescaped(PyUnicode_KIND(tmp), <const char *>PyUnicode_DATA(tmp), 0,
                          PyUnicode_GET_LENGTH(tmp))
    return _unescaped(kind, buf, sp.start, sp.end)


cdef object _content(int kind, const char *buf, Py_ssize_t a, Py_ssize_t b, bint utf8):
    """Content of the JSON document buf[a:b), exactly as the pure twin."""
    cdef sse_span sp
    cdef int st = sse_json_delta(kind, buf, a, b, &sp)
    if st == SSE_J_NONE:
        return None
    if st == SSE_J_STR:
        return _span_str(kind, buf, &sp, utf8)
    return _json_content(_text(kind, buf, a, b, utf8))


cdef inline bint _starts_with_data_space(int kind, const char *buf, Py_ssize_t a,
                                         Py_ssize_t b) noexcept nogil:
    if b - a < 6:
        return False
    return (_rd(kind, buf, a) == 'd' and _rd(kind, buf, a + 1) == 'a' and
            _rd(kind, buf, a + 2) == 't' and _rd(kind, buf, a + 3) == 'a' and
            _rd(kind, buf, a + 4) == ':' and _rd(kind, buf, a + 5) == ' ')


cdef inline Py_ssize_t _find_colon(int kind, const char *buf, Py_ssize_t a,
                                   Py_ssize_t b) noexcept nogil:
    cdef const char *p
    if kind == 1:
        p = <const char *>memchr(buf + a, ord(':'), <size_t>(b - a))
        return b if p == NULL else p - buf
    while a < b and _rd(kind, buf, a) != ':':
        a += 1
    return a


cdef inline bint _name_is(int kind, const char *buf, Py_ssize_t a, Py_ssize_t b,
                          const char *w, Py_ssize_t wl) noexcept nogil:
    cdef Py_ssize_t k
    if b - a != wl:
        return False
    for k in range(wl):
        if _rd(kind, buf, a + k) != <Py_UCS4>(<unsigned char>w[k]):
            return False
    return True


# ------------------------------------------------------------ data buffer --

cdef class _DataBuf:
    """The pending event's data buffer ("\\n"-joined data lines), one C array."""

    cdef char *buf
    cdef Py_ssize_t length     # in characters of ``kind`` width
    cdef Py_ssize_t cap        # in bytes
    cdef int kind
    cdef bint has_data

    def __cinit__(self):
        self.buf = NULL
        self.length = 0
        self.cap = 0
        self.kind = 1
        self.has_data = False

    def __dealloc__(self):
        if self.buf != NULL:
            free(self.buf)

    cdef inline void clear(self) noexcept:
        self.length = 0
        self.has_data = False

    cdef int _grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.cap if self.cap else 256
        cdef char *nb
        while cap < need:
            cap *= 2
        nb = <char *>realloc(self.buf, <size_t>cap)
        if nb == NULL:
            raise MemoryError()
        self.buf = nb
        self.cap = cap
        return 0

    cdef int add(self, int kind, const char *src, Py_ssize_t a, Py_ssize_t b) except -1:
        """Append src[a:b) as one data line (after an LF if not the first)."""
        cdef Py_ssize_t n = b - a
        cdef Py_ssize_t need = (self.length + n + 1) * kind
        if need > self.cap:
            self._grow(need)
        self.kind = kind
        if self.has_data:
            if kind == 1:
                (<Py_UCS1 *>self.buf)[self.length] = 10
            elif kind == 2:
                (<Py_UCS2 *>self.buf)[self.length] = 10
            else:
                (<Py_UCS4 *>self.buf)[self.length] = 10
            self.length += 1
        memcpy(self.buf + self.length * kind, src + a * kind, <size_t>(n * kind))
        self.length += n
        self.has_data = True
        return 0


# ------------------------------------------------------------------ sinks --

cdef enum:
    SINK_CONCAT = 0
    SINK_LIST = 1
    SINK_FIRST = 2

cdef class _Sink:
    """Where contents go: one UCS-4 result buffer, a list, or the first value."""

    cdef int mode
    cdef Py_UCS4 *out
    cdef Py_ssize_t length
    cdef Py_ssize_t cap
    cdef list items
    cdef object first
    cdef bint has_first

    def __cinit__(self, int mode):
        self.mode = mode
        self.out = NULL
        self.length = 0
        self.cap = 0
        self.items = []
        self.first = None
        self.has_first = False

    def __dealloc__(self):
        if self.out != NULL:
            free(self.out)

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap
        cdef Py_UCS4 *nb
        if self.length + extra <= self.cap:
            return 0
        cap = self.cap if self.cap else 1024
        while cap < self.length + extra:
            cap *= 2
        nb = <Py_UCS4 *>realloc(self.out, <size_t>cap * sizeof(Py_UCS4))
        if nb == NULL:
            raise MemoryError()
        self.out = nb
        self.cap = cap
        return 0

    cdef int _put_str(self, str s) except -1:
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
        cdef int k
        cdef const char *d
        cdef Py_ssize_t j
        if n == 0:
            return 0
        if self.mode == SINK_LIST:
            self.items.append(s)
            return 0
        self._reserve(n)
        k = PyUnicode_KIND(s)
        d = <const char *>PyUnicode_DATA(s)
        for j in range(n):
            self.out[self.length + j] = _rd(k, d, j)
        self.length += n
        return 0

    cdef int put_span(self, int kind, const char *buf, sse_span *sp, bint utf8) except -1:
        """Store the content string a successful scan located; returns 1."""
        cdef Py_ssize_t j, n
        cdef object c
        if self.mode == SINK_CONCAT and not utf8:
            # copy the content straight into the result, no temporary str
            n = sp.end - sp.start
            if n == 0:
                return 1
            self._reserve(n)
            if sp.escaped:
                self.length += sse_unescape(kind, buf, sp.start, sp.end,
                                            self.out + self.length)
            elif kind == 1:
                for j in range(n):
                    self.out[self.length + j] = (<const Py_UCS1 *>buf)[sp.start + j]
                self.length += n
            elif kind == 2:
                for j in range(n):
                    self.out[self.length + j] = (<const Py_UCS2 *>buf)[sp.start + j]
                self.length += n
            else:
                memcpy(self.out + self.length, buf + sp.start * 4, <size_t>n * 4)
                self.length += n
            return 1
        c = _span_str(kind, buf, sp, utf8)
        if self.mode == SINK_FIRST:
            self.first = c
            self.has_first = True
        else:
            self._put_str(<str>c)
        return 1

    cdef int put_fallback(self, int kind, const char *buf, Py_ssize_t a, Py_ssize_t b,
                          bint utf8) except -1:
        """Content of buf[a:b) by json.loads; 1 when it is not None."""
        cdef object c = _json_content(_text(kind, buf, a, b, utf8))
        if c is None:
            return 0
        if self.mode == SINK_FIRST:
            self.first = c
            self.has_first = True
        elif type(c) is str:
            self._put_str(<str>c)
        return 1

    cdef int put(self, int kind, const char *buf, Py_ssize_t a, Py_ssize_t b,
                 bint utf8) except -1:
        """Scan buf[a:b) as one event's JSON data; 1 when content is not None."""
        cdef sse_span sp
        cdef int st
        if self.mode == SINK_FIRST and self.has_first:
            return 0
        st = sse_json_delta(kind, buf, a, b, &sp)
        if st == SSE_J_NONE:
            return 0
        if st == SSE_J_STR:
            return self.put_span(kind, buf, &sp, utf8)
        return self.put_fallback(kind, buf, a, b, utf8)

    cdef str result(self):
        return PyUnicode_FromKindAndData(4, self.out, self.length)


# ---------------------------------------------------------- str streams --

cdef int _scan_piece(int kind, const char *buf, Py_ssize_t a, Py_ssize_t b, bint first,
                     _DataBuf acc, _Sink sink, sse_tmpl *tm) except -1:
    """Contents of one "\\n\\n" piece: spec first, the released rule second.

    A single-line "data: " piece whose content is a JSON string becomes the
    template ``*tm`` (when ``tm`` is not NULL) for the pieces that follow.
    """
    cdef Py_ssize_t i = a, e, colon, v
    cdef int found = 0, st
    cdef sse_span sp
    if sse_find_eol(kind, buf, a, b) == b and _starts_with_data_space(kind, buf, a, b):
        # hot path: a single "data: " line, spec and released rule coincide
        if sink.mode == SINK_FIRST and sink.has_first:
            return 0
        st = sse_json_delta(kind, buf, a + 6, b, &sp)
        if st == SSE_J_STR:
            if tm != NULL:
                tm.tp = a
                tm.lp = sp.start - a
                tm.ts = sp.end
                tm.ls = b - sp.end
            return sink.put_span(kind, buf, &sp, False)
        if st == SSE_J_NONE:
            return 0
        return sink.put_fallback(kind, buf, a + 6, b, False)
    if first and b > a and _rd(kind, buf, a) == 0xFEFF:
        i += 1
    acc.clear()
    while i < b:
        e = sse_find_eol(kind, buf, i, b)
        if e == i:
            if acc.has_data:
                found += sink.put(kind, acc.buf, 0, acc.length, False)
                acc.clear()
        elif _rd(kind, buf, i) == 'd':
            colon = _find_colon(kind, buf, i, e)
            if _name_is(kind, buf, i, colon, "data", 4):
                v = colon + 1
                if v < e and _rd(kind, buf, v) == ' ':
                    v += 1
                if v > e:
                    v = e
                acc.add(kind, buf, v, e)
        if e >= b:
            break
        if _rd(kind, buf, e) == '\r' and e + 1 < b and _rd(kind, buf, e + 1) == '\n':
            i = e + 2
        else:
            i = e + 1
    if acc.has_data:
        found += sink.put(kind, acc.buf, 0, acc.length, False)
        acc.clear()
    if found == 0 and _starts_with_data_space(kind, buf, a, b):
        found += sink.put(kind, buf, a + 6, b, False)
    return found


cdef int _scan_stream(str data, _Sink sink) except -1:
    cdef int kind = PyUnicode_KIND(data)
    cdef const char *buf = <const char *>PyUnicode_DATA(data)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(data)
    cdef Py_ssize_t a = 0, b
    cdef _DataBuf acc = _DataBuf()
    cdef sse_tmpl tm
    cdef sse_tmpl *learn = &tm
    cdef sse_span sp
    cdef Py_ssize_t hits = 0, misses = 0
    tm.lp = 0
    tm.tp = -1
    while True:
        if tm.lp:
            # same event as the last one but for the content string?
            b = sse_tmpl_match(kind, buf, a, n, &tm, &sp)
            if b >= 0:
                hits += 1
                sink.put_span(kind, buf, &sp, False)
                if b >= n:
                    break
                a = b + 2
                continue
        b = sse_find_lflf(kind, buf, a, n)
        if b > a:
            _scan_piece(kind, buf, a, b, a == 0, acc, sink, learn)
            if learn != NULL and tm.tp == a:
                # this piece had string content but did not fit: once such
                # pieces are many and outnumber the fitting ones, stop trying
                misses += 1
                if misses >= _TEMPLATE_GIVE_UP and misses > hits:
                    learn = NULL
                    tm.lp = 0
        if b >= n:
            break
        a = b + 2
    return 0


def parse_stream(data: str) -> str:
    """All non-empty str contents of a whole SSE stream, concatenated."""
    if type(data) is not str:
        if not isinstance(data, str):
            raise TypeError(f"parse_stream() expects str, not {type(data).__name__}")
        data = str(data)
    cdef _Sink sink = _Sink(SINK_CONCAT)
    _scan_stream(<str>data, sink)
    return sink.result()


def iter_stream(data: str):
    """Iterator over each non-empty str content of a whole SSE stream."""
    if type(data) is not str:
        if not isinstance(data, str):
            raise TypeError(f"iter_stream() expects str, not {type(data).__name__}")
        data = str(data)
    cdef _Sink sink = _Sink(SINK_LIST)
    _scan_stream(<str>data, sink)
    return iter(sink.items)


def parse_chunk(chunk: str):
    """Content of one chunk: per spec first, the released ``chunk[6:]`` rule second."""
    if type(chunk) is not str:
        if not isinstance(chunk, str):
            raise TypeError(f"parse_chunk() expects str, not {type(chunk).__name__}")
        chunk = str(chunk)
    cdef str s = <str>chunk
    cdef int kind = PyUnicode_KIND(s)
    cdef const char *buf = <const char *>PyUnicode_DATA(s)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    cdef _Sink sink = _Sink(SINK_FIRST)
    cdef _DataBuf acc
    if sse_find_eol(kind, buf, 0, n) == n and _starts_with_data_space(kind, buf, 0, n):
        return _content(kind, buf, 6, n, False)
    acc = _DataBuf()
    # the piece scan already falls back to [6:] for "data: " chunks; the
    # released rule applies to any chunk, so finish with chunk[6:] if needed
    _scan_piece(kind, buf, 0, n, True, acc, sink, NULL)
    if sink.has_first:
        return sink.first
    if n > 6:
        return _content(kind, buf, 6, n, False)
    return None


def extract_delta(data):
    """``choices[0].delta["content"]`` of one event's data (str or UTF-8 bytes)."""
    cdef str s
    cdef bytes bs
    if isinstance(data, str):
        s = str(data) if type(data) is not str else <str>data
        return _content(PyUnicode_KIND(s), <const char *>PyUnicode_DATA(s), 0,
                        PyUnicode_GET_LENGTH(s), False)
    if isinstance(data, (bytes, bytearray, memoryview)):
        bs = bytes(data) if type(data) is not bytes else <bytes>data
        return _content(1, PyBytes_AS_STRING(bs), 0, PyBytes_GET_SIZE(bs), True)
    raise TypeError(f"extract_delta() expects str or bytes, not {type(data).__name__}")


# ---------------------------------------------------------------- events --

cdef class SSEEvent:
    """One dispatched server-sent event (immutable); see the pure twin."""

    cdef readonly object event
    cdef readonly object data
    cdef readonly object id
    cdef readonly object retry

    def __init__(self, event="message", data="", id=None, retry=None):
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def _key(self):
        return (self.event, self.data, self.id, self.retry)

    def __eq__(self, other):
        if type(other).__name__ != "SSEEvent":
            return NotImplemented
        try:
            return self._key() == (other.event, other.data, other.id, other.retry)
        except AttributeError:
            return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (f"SSEEvent(event={self.event!r}, data={self.data!r}, "
                f"id={self.id!r}, retry={self.retry!r})")

    def __reduce__(self):
        return (SSEEvent, self._key())


cdef bytes _BOM_B = b"\xef\xbb\xbf"
# retry values longer than this are ignored (they cannot be a sane delay, and
# int() of thousands of digits would raise); both twins agree on it
cdef Py_ssize_t _MAX_RETRY_DIGITS = 18
# feed_deltas learns event documents up to this size as templates
cdef Py_ssize_t _MAX_TEMPLATE = 1 << 16


cdef inline bint _may_be_done(const char *buf, Py_ssize_t n) noexcept nogil:
    """Cheap pre-check: could buf[:n) strip to "[DONE]"? (contains "[DONE]")"""
    cdef const char *p = buf
    cdef const char *end = buf + n
    while end - p >= 6:
        p = <const char *>memchr(p, ord('['), <size_t>(end - p - 5))
        if p == NULL:
            return False
        if p[1] == b'D' and p[2] == b'O' and p[3] == b'N' and p[4] == b'E' and p[5] == b']':
            return True
        p += 1
    return False


cdef class SSEDecoder:
    """Incremental, spec-following SSE decoder: feed bytes, get events.

    Complete lines are processed straight from the caller's bytes; only the
    unfinished last line is copied into the tail, so every byte is copied at
    most once and decoding is O(n) whatever the chunking.
    """

    cdef char *_tail
    cdef Py_ssize_t _tlen
    cdef Py_ssize_t _tcap
    cdef bint _at_start
    cdef bint _skip_lf
    cdef _DataBuf _acc
    cdef object _event
    cdef object _last_id
    cdef object _retry
    cdef bint _done
    cdef bint _deltas      # mode of the current call
    cdef list _out
    # learned document template of feed_deltas (see sse_doc_tmpl_match):
    # _tpl[0:_tlp) is the prefix, _tpl[_tlp:_tlp + _tls) the suffix
    cdef char *_tpl
    cdef Py_ssize_t _tlp
    cdef Py_ssize_t _tls
    cdef Py_ssize_t _tplcap
    cdef Py_ssize_t _thits
    cdef Py_ssize_t _tmisses
    cdef bint _tgave_up

    def __cinit__(self):
        self._tail = NULL
        self._tlen = 0
        self._tcap = 0
        self._at_start = True
        self._skip_lf = False
        self._acc = _DataBuf()
        self._event = ""
        self._last_id = None
        self._retry = None
        self._done = False
        self._deltas = False
        self._out = None
        self._tpl = NULL
        self._tlp = 0
        self._tls = 0
        self._tplcap = 0
        self._thits = 0
        self._tmisses = 0
        self._tgave_up = False

    def __dealloc__(self):
        if self._tail != NULL:
            free(self._tail)
        if self._tpl != NULL:
            free(self._tpl)

    @property
    def done(self):
        """True once an event whose data is ``[DONE]`` has been dispatched."""
        return self._done

    cdef int _tail_add(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef char *nb
        if self._tlen + n > self._tcap:
            cap = self._tcap if self._tcap else 256
            while cap < self._tlen + n:
                cap *= 2
            nb = <char *>realloc(self._tail, <size_t>cap)
            if nb == NULL:
                raise MemoryError()
            self._tail = nb
            self._tcap = cap
        memcpy(self._tail + self._tlen, p, <size_t>n)
        self._tlen += n
        return 0

    cdef int _reset_block(self) except -1:
        self._event = ""
        self._retry = None
        return 0

    cdef int _dispatch(self) except -1:
        """End of the event block (an empty line)."""
        cdef _DataBuf acc = self._acc
        cdef str data = None
        if not acc.has_data:
            self._reset_block()
            return 0
        if _may_be_done(acc.buf, acc.length):
            data = PyUnicode_DecodeUTF8(acc.buf, acc.length, "replace")
            if data.strip() == _DONE:
                self._done = True
        if self._deltas:
            self._sink_put()
        else:
            if data is None:
                data = PyUnicode_DecodeUTF8(acc.buf, acc.length, "replace")
            self._out.append(SSEEvent(self._event or "message", data, self._last_id,
                                      self._retry))
        acc.clear()
        self._reset_block()
        return 0

    cdef int _sink_put(self) except -1:
        """Append the pending event's non-empty str content (as _content)."""
        cdef _DataBuf acc = self._acc
        cdef object c
        cdef sse_span sp
        cdef int st
        cdef Py_ssize_t need
        cdef char *nb
        if self._tlp and sse_doc_tmpl_match(<const Py_UCS1 *>acc.buf, acc.length,
                                            <const Py_UCS1 *>self._tpl, self._tlp,
                                            <const Py_UCS1 *>(self._tpl + self._tlp),
                                            self._tls, &sp):
            st = SSE_J_STR
            self._thits += 1
        else:
            st = sse_json_delta(1, acc.buf, 0, acc.length, &sp)
            if st == SSE_J_STR and not self._tgave_up:
                self._tmisses += 1
                if self._tmisses >= _TEMPLATE_GIVE_UP and self._tmisses > self._thits:
                    self._tgave_up = True
                    self._tlp = 0
            if st == SSE_J_STR and not self._tgave_up and acc.length <= _MAX_TEMPLATE:
                # learn this document as the template for the next ones
                need = sp.start + (acc.length - sp.end)
                if need > self._tplcap:
                    nb = <char *>realloc(self._tpl, <size_t>need)
                    if nb == NULL:
                        raise MemoryError()
                    self._tpl = nb
                    self._tplcap = need
                memcpy(self._tpl, acc.buf, <size_t>sp.start)
                memcpy(self._tpl + sp.start, acc.buf + sp.end, <size_t>(acc.length - sp.end))
                self._tlp = sp.start
                self._tls = acc.length - sp.end
        if st == SSE_J_NONE:
            return 0
        if st == SSE_J_STR:
            if sp.end > sp.start:
                self._out.append(_span_str(1, acc.buf, &sp, True))
            return 0
        c = _json_content(PyUnicode_DecodeUTF8(acc.buf, acc.length, "replace"))
        if type(c) is str and c:
            self._out.append(c)
        return 0

    cdef int _line(self, const char *p, Py_ssize_t a, Py_ssize_t e) except -1:
        """Apply one line p[a:e) (empty: dispatch)."""
        cdef Py_ssize_t colon, v, k
        cdef str value
        if a == e:
            return self._dispatch()
        if p[a] == b':':
            return 0
        colon = _find_colon(1, p, a, e)
        v = colon + 1
        if v < e and p[v] == b' ':
            v += 1
        if v > e:
            v = e
        if _name_is(1, p, a, colon, "data", 4):
            self._acc.add(1, p, v, e)
        elif _name_is(1, p, a, colon, "event", 5):
            self._event = PyUnicode_DecodeUTF8(p + v, e - v, "replace")
        elif _name_is(1, p, a, colon, "id", 2):
            if memchr(p + v, 0, <size_t>(e - v)) == NULL:
                self._last_id = PyUnicode_DecodeUTF8(p + v, e - v, "replace")
        elif _name_is(1, p, a, colon, "retry", 5):
            if e > v and e - v <= _MAX_RETRY_DIGITS:
                for k in range(v, e):
                    if p[k] < b'0' or p[k] > b'9':
                        return 0
                self._retry = int(p[v:e].decode("ascii"))
        return 0

    cdef int _consume(self, object data) except -1:
        cdef bytes bs
        cdef const char *p
        cdef Py_ssize_t n, i = 0, e, k
        cdef bytes joined
        if type(data) is bytes:
            bs = <bytes>data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            bs = bytes(data)
        else:
            raise TypeError(f"feed() expects bytes, not {type(data).__name__}")
        n = PyBytes_GET_SIZE(bs)
        if n == 0:
            return 0
        if self._at_start:
            self._tail_add(PyBytes_AS_STRING(bs), n)
            joined = self._tail[:self._tlen]
            if self._tlen < 3 and _BOM_B.startswith(joined):
                return 0
            self._tlen = 0
            self._at_start = False
            bs = joined[3:] if joined.startswith(_BOM_B) else joined
            n = PyBytes_GET_SIZE(bs)
            if n == 0:
                return 0
        p = PyBytes_AS_STRING(bs)
        if self._skip_lf:
            self._skip_lf = False
            if p[0] == b'\n':
                i = 1
        if self._tlen and i < n:
            e = sse_find_eol(1, p, i, n)
            if e == n:
                self._tail_add(p + i, n - i)
                return 0
            self._tail_add(p + i, e - i)
            k = self._tlen
            self._tlen = 0
            self._line(self._tail, 0, k)
            i = self._after_eol(p, e, n)
        while i < n:
            e = sse_find_eol(1, p, i, n)
            if e == n:
                self._tail_add(p + i, n - i)
                break
            self._line(p, i, e)
            i = self._after_eol(p, e, n)
        return 0

    cdef inline Py_ssize_t _after_eol(self, const char *p, Py_ssize_t e, Py_ssize_t n):
        if p[e] == b'\r':
            if e + 1 < n:
                return e + 2 if p[e + 1] == b'\n' else e + 1
            self._skip_lf = True
        return e + 1

    def feed(self, data) -> list:
        """Events completed by this chunk of bytes."""
        self._deltas = False
        self._out = []
        self._consume(data)
        out, self._out = self._out, None
        return out

    def feed_deltas(self, data) -> list:
        """Non-empty str delta contents of the events completed by this chunk."""
        self._deltas = True
        self._out = []
        self._consume(data)
        out, self._out = self._out, None
        return out

    cdef int _finish(self) except -1:
        cdef Py_ssize_t k
        self._at_start = False
        self._skip_lf = False
        if self._tlen:
            k = self._tlen
            self._tlen = 0
            self._line(self._tail, 0, k)
        return 0

    def flush(self) -> list:
        """End of stream: the pending event (unterminated last line included)."""
        self._deltas = False
        self._out = []
        self._finish()
        self._dispatch()
        out, self._out = self._out, None
        return out

    def flush_deltas(self) -> list:
        """End of stream: the pending event's delta, as :meth:`feed_deltas`."""
        self._deltas = True
        self._out = []
        self._finish()
        self._dispatch()
        out, self._out = self._out, None
        return out
