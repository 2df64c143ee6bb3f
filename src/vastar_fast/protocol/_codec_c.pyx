# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of the Vastar IPC wire codec.

Same names, signatures, result types (the NamedTuples are the pure twin's own classes)
and exceptions as ``_codec_py``; only the speed differs.  Three ideas carry the speed:

* Encoders replay the pure twin's flatbuffers.Builder calls on a C replica of the
  Builder (codec_json.h): once to measure, once to write back to front into ONE
  bytes object of the exact size (length prefix, type byte, FlatBuffers bytes), so the
  frame is byte for byte the pure twin's.  For the http connector the JSON payload is
  escaped straight into the payload vector; byte payloads are memcpy'd.
* Decoders apply the pure twin's ``_Table`` verification rules, in the same order and
  with the same messages, on raw memory; the response JSON is parsed by a purpose-built
  parser for the released runtime's shape that unescapes ``body`` straight into the
  result bytes.
* ``FrameBuffer`` receives into a reusable block and splits frames without moving the
  unconsumed tail on every call.

Whenever an input is anything the fast paths do not model (wrong types, out-of-range
numbers, lone surrogates, unusual JSON, non-bytes buffers), the call is handed to the
pure twin, so results and exceptions stay identical to it by construction.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_SetItem
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_CheckExact, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int32_t, int64_t, int8_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove, memset

from ..errors import FrameTooLargeError, ProtocolError
from ..types import MAX_PAYLOAD_SIZE
from .frames import (
    _KV_MAX_ENTRIES,
    _KV_SLACK,
    _kv_amplified,
    _kv_too_many,
    CancelRequestFrame,
    CreditUpdateFrame,
    ExecuteRequestFrame,
    ExecuteResponseFrame,
    HealthResponseFrame,
    HTTPRequestPayload,
    HTTPResponsePayload,
    StreamChunkFrame,
    StreamStartFrame,
)



class _PureTwin:
    """The pure twin, imported on first use: only inputs the fast paths do not model
    are handed to it, so ``import vastar_fast`` need not import it (nor json)."""

    def __getattr__(self, name):
        global _py
        from . import _codec_py

        _py = _codec_py
        return getattr(_codec_py, name)


_py = _PureTwin()

__all__ = [
    "CancelRequestFrame",
    "CreditUpdateFrame",
    "ExecuteRequestFrame",
    "ExecuteResponseFrame",
    "FrameBuffer",
    "HTTPRequestPayload",
    "HTTPResponsePayload",
    "HealthResponseFrame",
    "StreamChunkFrame",
    "StreamStartFrame",
    "decode_cancel_request",
    "decode_credit_update",
    "decode_execute_request",
    "decode_execute_response",
    "decode_health_response",
    "decode_http_request_payload",
    "decode_http_response_payload",
    "decode_stream_chunk",
    "decode_stream_start",
    "encode_cancel_request",
    "encode_credit_update",
    "encode_execute_request",
    "encode_execute_response",
    "encode_frame",
    "encode_health_check",
    "encode_health_response",
    "encode_http_request_frame",
    "encode_http_request_payload",
    "encode_http_response_frame",
    "encode_http_response_payload",
    "encode_stream_chunk",
    "encode_stream_start",
]


cdef extern from "Python.h":
    # Raw-pointer variants: the fast paths manage errors and references themselves.
    PyObject *_bytes_new "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n)
    int _PyBytes_Resize(PyObject **pv, Py_ssize_t newsize)
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object o)
    long long _as_ll "PyLong_AsLongLong"(object o)
    object _decode_utf8 "PyUnicode_DecodeUTF8"(const char *s, Py_ssize_t n, const char *errors)
    object _bytes_from "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    Py_ssize_t PyList_GET_SIZE(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    PyObject *PyList_GET_ITEM(object o, Py_ssize_t i)
    PyObject *PyTuple_GET_ITEM(object o, Py_ssize_t i)


cdef extern from "codec_json.h":
    ctypedef struct vf_bld:
        Py_ssize_t off

    uint16_t vf_rd_u16(const uint8_t *p) nogil
    uint32_t vf_rd_u32(const uint8_t *p) nogil
    uint64_t vf_rd_u64(const uint8_t *p) nogil
    void vf_wr_u32(uint8_t *p, uint32_t v) nogil
    void vf_wr_u32be(uint8_t *p, uint32_t v) nogil
    int VF_UNESCAPE_SLACK

    void vf_b_init(vf_bld *b, uint8_t *end) nogil
    Py_ssize_t vf_b_string(vf_bld *b, Py_ssize_t len, uint8_t **data) nogil
    Py_ssize_t vf_b_bytes(vf_bld *b, Py_ssize_t len, uint8_t **data) nogil
    void vf_b_start_offsets(vf_bld *b, Py_ssize_t n) nogil
    void vf_b_uoffset(vf_bld *b, Py_ssize_t target) nogil
    Py_ssize_t vf_b_end_vector(vf_bld *b, Py_ssize_t n) nogil
    void vf_b_start_object(vf_bld *b, int nfields) nogil
    void vf_b_slot_u8(vf_bld *b, int slot, uint8_t v) nogil
    void vf_b_slot_u16(vf_bld *b, int slot, uint16_t v) nogil
    void vf_b_slot_u32(vf_bld *b, int slot, uint32_t v) nogil
    void vf_b_slot_u64(vf_bld *b, int slot, uint64_t v) nogil
    void vf_b_slot_ref(vf_bld *b, int slot, Py_ssize_t target) nogil
    Py_ssize_t vf_b_end_object(vf_bld *b) nogil
    Py_ssize_t vf_b_finish(vf_bld *b, Py_ssize_t root) nogil

    Py_ssize_t vf_str_size(object s, int json)
    uint8_t *vf_str_write(object s, uint8_t *o, int json, int upper)
    Py_ssize_t vf_utf8_json_size(const uint8_t *p, Py_ssize_t n) nogil
    uint8_t *vf_utf8_json_write(const uint8_t *p, Py_ssize_t n, uint8_t *o) nogil
    Py_ssize_t vf_find_special(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) nogil
    Py_ssize_t vf_json_unescape(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, uint8_t *out,
                                Py_ssize_t *outlen, int *high) nogil
    int vf_utf8_valid_sp(const uint8_t *p, Py_ssize_t n) nogil
    Py_ssize_t vf_skip_ws(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) nogil
    object vf_new_named(object cls, Py_ssize_t n, PyObject **items)
    int vf_simd_init()
    int vf_simd_set(int level)
    int vf_simd_get()
    int vf_simd_available(int level)


# Message types, as in the pure twin.
cdef enum:
    _EXECUTE_REQUEST = 0
    _EXECUTE_RESPONSE = 1
    _HEALTH_CHECK = 2
    _HEALTH_RESPONSE = 3
    _CREDIT_UPDATE = 4
    _STREAM_START = 5
    _STREAM_CHUNK = 6
    _CANCEL_REQUEST = 7


# ------------------------------------------------------------------ result objects

cdef inline object _named(object cls, PyObject **items, Py_ssize_t n):
    """Fill a NamedTuple without its Python-level __new__ (items are borrowed here)."""
    cdef Py_ssize_t i
    for i in range(n):
        Py_INCREF(<object>items[i])
    return vf_new_named(cls, n, items)


# ------------------------------------------------------------------ number checks

cdef inline bint _u64(object o, uint64_t *out):
    """An exact int in [0, 2**64): what the pure twin packs without complaint."""
    if not PyLong_CheckExact(o):
        return False
    cdef unsigned long long v = _as_ull(o)
    if v == <unsigned long long>-1 and PyErr_Occurred():
        PyErr_Clear()
        return False
    out[0] = v
    return True


cdef inline bint _int_in(object o, long long lo, long long hi, long long *out):
    """An exact int in [lo, hi]."""
    if not PyLong_CheckExact(o):
        return False
    cdef long long v = _as_ll(o)
    if v == -1 and PyErr_Occurred():
        PyErr_Clear()
        return False
    if v < lo or v > hi:
        return False
    out[0] = v
    return True


cdef inline int _truth(object o) noexcept:
    """bool(o), or -1 when __bool__ raises (then the pure twin raises it)."""
    if o is True:
        return 1
    if o is False or o is None:
        return 0
    try:
        return 1 if o else 0
    except BaseException:
        return -1


# ------------------------------------------------------------------ writing helpers
#
# Every encoder is one ``_b_*`` function that issues, through the vf_b_* replica of
# flatbuffers.Builder (codec_json.h), exactly the Builder calls the pure twin makes, in
# its order.  It runs twice: measuring (vf_bld.end == NULL) to get the size, then
# writing back to front into one bytes object of exactly that size plus the 5-byte
# frame header.  The output is therefore byte for byte the pure twin's.

cdef inline Py_ssize_t _str_size(object s):
    """UTF-8 size of an exact str, or -1 (not exact str, or holds a surrogate)."""
    if not PyUnicode_CheckExact(s):
        return -1
    return vf_str_size(s, 0)


cdef inline Py_ssize_t _opt_str_size(object s):
    """-2 for None (field absent), -1 when the pure twin must handle it, else the size."""
    if s is None:
        return -2
    return _str_size(s)


cdef inline Py_ssize_t _b_string(vf_bld *b, object s, Py_ssize_t n):
    """Builder.CreateString(s.encode()) for an exact str of UTF-8 size n."""
    cdef uint8_t *data
    cdef Py_ssize_t off = vf_b_string(b, n, &data)
    if data != NULL:
        vf_str_write(s, data, 0, 0)
    return off


cdef inline Py_ssize_t _b_bytes(vf_bld *b, const char *p, Py_ssize_t n):
    """Builder.CreateByteVector for n bytes at p."""
    cdef uint8_t *data
    cdef Py_ssize_t off = vf_b_bytes(b, n, &data)
    if data != NULL:
        memcpy(data, p, n)
    return off


cdef Py_ssize_t _kv_count(object pairs):
    """Pair count of an exact list/tuple of (str, str) exact tuples without surrogates.

    -1 for anything else (the caller defers to the pure twin); 0 when the sequence is
    empty or None (the pure twin then writes no field at all).
    """
    cdef Py_ssize_t n, i
    cdef object pair
    cdef bint is_list
    if pairs is None:
        return 0
    is_list = PyList_CheckExact(pairs)
    if is_list:
        n = PyList_GET_SIZE(pairs)
    elif PyTuple_CheckExact(pairs):
        n = PyTuple_GET_SIZE(pairs)
    else:
        return -1
    for i in range(n):
        pair = <object>(PyList_GET_ITEM(pairs, i) if is_list else PyTuple_GET_ITEM(pairs, i))
        if not PyTuple_CheckExact(pair) or PyTuple_GET_SIZE(pair) != 2:
            return -1
        if (_str_size(<object>PyTuple_GET_ITEM(pair, 0)) < 0
                or _str_size(<object>PyTuple_GET_ITEM(pair, 1)) < 0):
            return -1
    return n


cdef Py_ssize_t _b_key_values(vf_bld *b, object pairs, Py_ssize_t n) except -1:
    """The pure twin's ``_key_values``: per pair key, value, KeyValue table; then the
    vector of their offsets (n > 0, pairs validated by _kv_count)."""
    cdef Py_ssize_t small[16]
    cdef Py_ssize_t *offs = small
    cdef Py_ssize_t i, ko, vo
    cdef object pair, k, v
    cdef bint is_list = PyList_CheckExact(pairs)
    if n > 16:
        offs = <Py_ssize_t *>PyMem_Malloc(n * sizeof(Py_ssize_t))
        if offs is NULL:
            raise MemoryError()
    try:
        for i in range(n):
            pair = <object>(PyList_GET_ITEM(pairs, i) if is_list else PyTuple_GET_ITEM(pairs, i))
            k = <object>PyTuple_GET_ITEM(pair, 0)
            v = <object>PyTuple_GET_ITEM(pair, 1)
            ko = _b_string(b, k, vf_str_size(k, 0))
            vo = _b_string(b, v, vf_str_size(v, 0))
            vf_b_start_object(b, 2)
            vf_b_slot_ref(b, 0, ko)
            vf_b_slot_ref(b, 1, vo)
            offs[i] = vf_b_end_object(b)
        vf_b_start_offsets(b, n)
        for i in range(n - 1, -1, -1):
            vf_b_uoffset(b, offs[i])
        return vf_b_end_vector(b, n)
    finally:
        if offs is not small:
            PyMem_Free(offs)


cdef inline object _new_frame(vf_bld *b, Py_ssize_t total, int message_type):
    """The frame's bytes object (header written); b set up to write its FlatBuffers."""
    cdef object out = _bytes_from(NULL, total + 5)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    vf_wr_u32be(p, <uint32_t>(total + 1))
    p[4] = <uint8_t>message_type
    vf_b_init(b, p + 5 + total)
    return out


# ------------------------------------------------------------------ framing

def encode_frame(message_type, body):
    """Prefix ``body`` with its length (type byte included) and the type byte."""
    cdef long long mt
    if not PyBytes_CheckExact(body) or not _int_in(message_type, 0, 255, &mt):
        return _py.encode_frame(message_type, body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    if n + 1 > 0xFFFFFFFF:
        return _py.encode_frame(message_type, body)
    cdef object out = _bytes_from(NULL, n + 5)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    vf_wr_u32be(p, <uint32_t>(n + 1))
    p[4] = <uint8_t>mt
    memcpy(p + 5, PyBytes_AS_STRING(body), n)
    return out


cdef class _RecvBlock:
    """One heap block of FrameBuffer storage, exportable as a writable buffer.

    Memoryviews handed out by ``get_buffer`` keep their block alive, so the
    FrameBuffer can replace or drop a block at any time without leaving a view
    pointing into freed memory.
    """

    cdef uint8_t *data
    cdef Py_ssize_t cap
    cdef Py_ssize_t view_off
    cdef Py_ssize_t view_len

    def __cinit__(self, Py_ssize_t cap):
        self.data = <uint8_t *>PyMem_Malloc(cap if cap > 0 else 1)
        if self.data is NULL:
            raise MemoryError()
        self.cap = cap

    def __dealloc__(self):
        PyMem_Free(self.data)

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data + self.view_off, self.view_len, 0, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef enum:
    _RECV_CHUNK = 65536  # smallest receive window, as the pure twin's recv buffer
    _SHRINK_ABOVE = 1 << 20  # drop a block this big once it is empty


cdef class FrameBuffer:
    """Reassembles frames from a byte stream: the socket read loop's sans-I/O half.

    Bytes live in one reusable block between ``_start`` and ``_end``; a frame is handed
    out by advancing ``_start``, and the block is compacted only when its free tail is
    too small for the next receive.  ``get_buffer`` exposes that free tail directly, so
    ``sock.recv_into`` writes where the bytes will be parsed and ``buffer_updated`` only
    moves ``_end``.  Errors (length 0, length above ``max_frame_size``) stick, as in the
    pure twin: the stream cannot be resynchronised.
    """

    cdef _RecvBlock _blk
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef object _max
    cdef int64_t _limit
    cdef object _error
    cdef _RecvBlock _win
    cdef Py_ssize_t _win_off
    cdef Py_ssize_t _win_len

    def __init__(self, max_frame_size=MAX_PAYLOAD_SIZE):
        self._max = max_frame_size
        if max_frame_size >= 4294967296:
            self._limit = 4294967296
        elif max_frame_size < 0:
            self._limit = -1
        elif type(max_frame_size) is int:  # the default: floor() would return it as is
            self._limit = max_frame_size
        else:
            import math  # only for float caps and the like: not at import

            self._limit = math.floor(max_frame_size)
        self._blk = None
        self._start = 0
        self._end = 0
        self._error = None
        self._win = None

    @property
    def max_frame_size(self):
        return self._max

    @property
    def pending(self):
        """Bytes received but not yet handed out as a frame."""
        return self._end - self._start

    cdef int _reserve(self, Py_ssize_t need) except -1:
        """Make at least ``need`` free bytes after ``_end``, compacting or growing."""
        cdef Py_ssize_t pending = self._end - self._start
        cdef Py_ssize_t cap
        cdef _RecvBlock blk = self._blk
        cdef _RecvBlock nb
        if blk is None:
            cap = need if need > _RECV_CHUNK else _RECV_CHUNK
            self._blk = _RecvBlock(cap)
            self._start = self._end = 0
            return 0
        # a block with an outstanding receive window must not be written over
        if blk is not self._win:
            if blk.cap - self._end >= need:
                return 0
            if pending + need <= blk.cap:
                memmove(blk.data, blk.data + self._start, pending)
                self._start = 0
                self._end = pending
                return 0
        cap = blk.cap * 2
        if cap < pending + need:
            cap = pending + need
        nb = _RecvBlock(cap)
        memcpy(nb.data, blk.data + self._start, pending)
        self._blk = nb
        self._start = 0
        self._end = pending
        return 0

    def feed(self, data):
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len:
                self._reserve(view.len)
                memcpy(self._blk.data + self._end, view.buf, view.len)
                self._end += view.len
        finally:
            PyBuffer_Release(&view)

    def get_buffer(self, sizehint=-1):
        """A writable buffer to ``recv_into``; report what was written with buffer_updated."""
        cdef Py_ssize_t need = sizehint
        cdef Py_ssize_t pending, want
        cdef const uint8_t *hdr
        if need < _RECV_CHUNK:
            need = _RECV_CHUNK
        # room for the rest of a partly received frame, so a big frame needs few reads
        pending = self._end - self._start
        if pending >= 4 and self._blk is not None:
            hdr = self._blk.data + self._start
            want = ((<Py_ssize_t>hdr[0] << 24) | (hdr[1] << 16) | (hdr[2] << 8) | hdr[3]) + 4 - pending
            if want > need and want <= self._limit + 4:
                need = want
        self._win = None
        self._reserve(need)
        blk = self._blk
        self._win = blk
        self._win_off = self._end
        self._win_len = blk.cap - self._end
        blk.view_off = self._win_off
        blk.view_len = self._win_len
        return memoryview(blk)

    def buffer_updated(self, nbytes):
        """Account for ``nbytes`` written into the last ``get_buffer`` view."""
        cdef Py_ssize_t n = nbytes
        cdef _RecvBlock win = self._win
        if win is None:
            if n == 0:
                return
            raise ValueError("buffer_updated() called without a preceding get_buffer()")
        if n < 0 or n > self._win_len:
            raise ValueError(f"nbytes={n} is outside the {self._win_len}-byte receive buffer")
        if win is self._blk and self._win_off == self._end:
            self._end += n
        else:
            # the bytes landed in an older block or at an older position: move them
            self._win = None
            self._reserve(n)
            memmove(self._blk.data + self._end, win.data + self._win_off, n)
            self._end += n
        self._win = None

    def next_frame(self):
        """The next complete ``(message_type, body)``, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        cdef Py_ssize_t avail = self._end - self._start
        if avail < 4:
            return None
        cdef const uint8_t *p = self._blk.data + self._start
        cdef int64_t length = (<int64_t>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]
        if length == 0:
            self._error = ProtocolError(
                "frame length field is 0; every frame carries at least its message-type byte"
            )
            raise self._error
        if length > self._limit:
            self._error = FrameTooLargeError(length, self._max)
            raise self._error
        if avail < 4 + length:
            return None
        cdef object body = _bytes_from(<const char *>p + 5, length - 1)
        cdef object frame = (<int>p[4], body)
        self._start += 4 + length
        if self._start == self._end:
            self._start = self._end = 0
            if self._blk.cap > _SHRINK_ABOVE and self._win is None:
                self._blk = None  # a one-off huge frame should not pin its memory
        return frame

    def frames(self):
        """Every complete frame received so far."""
        out = []
        while True:
            frame = self.next_frame()
            if frame is None:
                return out
            out.append(frame)


# ------------------------------------------------------------------ reading

cdef struct _Tab:
    const uint8_t *buf
    int64_t n
    int64_t pos
    int64_t vt
    int64_t vt_size


cdef int _tab_init(_Tab *t, const uint8_t *buf, int64_t n, int64_t pos, str what) except -1:
    """The pure twin's ``_Table.__init__`` checks, in its order, with its messages."""
    if pos < 0 or pos + 4 > n:
        raise ProtocolError(f"{what}: table offset {pos} is outside the {n}-byte buffer")
    cdef int64_t vt = pos - <int32_t>vf_rd_u32(buf + pos)
    if vt < 0 or vt + 4 > n:
        raise ProtocolError(f"{what}: vtable offset {vt} is outside the {n}-byte buffer")
    cdef int64_t vt_size = vf_rd_u16(buf + vt)
    cdef int64_t obj_size = vf_rd_u16(buf + vt + 2)
    if vt_size < 4 or vt_size & 1 or vt + vt_size > n:
        raise ProtocolError(f"{what}: vtable size {vt_size} is invalid")
    if obj_size < 4 or pos + obj_size > n:
        raise ProtocolError(f"{what}: table size {obj_size} runs past the buffer")
    t.buf = buf
    t.n = n
    t.pos = pos
    t.vt = vt
    t.vt_size = vt_size
    return 0


cdef inline int _root(_Tab *t, bytes body, str what) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    if n < 4:
        raise ProtocolError(f"{what}: {n} bytes is too short for a FlatBuffers root")
    cdef const uint8_t *buf = <const uint8_t *>PyBytes_AS_STRING(body)
    return _tab_init(t, buf, n, vf_rd_u32(buf), what)


cdef inline int64_t _field(_Tab *t, int slot, int size, str what) except -1:
    """Position of a present field, 0 when absent (``_Table._field``)."""
    cdef int64_t voff = 4 + 2 * slot
    if voff + 2 > t.vt_size:
        return 0
    cdef int64_t fo = vf_rd_u16(t.buf + t.vt + voff)
    if fo == 0:
        return 0
    cdef int64_t p = t.pos + fo
    if fo < 4 or p + size > t.n:
        raise ProtocolError(f"{what}: field runs past the buffer")
    return p


cdef inline object _u64_field(_Tab *t, int slot, str what):
    cdef int64_t p = _field(t, slot, 8, what)
    return PyLong_FromUnsignedLongLong(vf_rd_u64(t.buf + p) if p else 0)


cdef inline int64_t _u32_field(_Tab *t, int slot, str what) except -1:
    cdef int64_t p = _field(t, slot, 4, what)
    return vf_rd_u32(t.buf + p) if p else 0


cdef inline int64_t _u16_field(_Tab *t, int slot, str what) except -1:
    cdef int64_t p = _field(t, slot, 2, what)
    return vf_rd_u16(t.buf + p) if p else 0


cdef inline int64_t _u8_field(_Tab *t, int slot, str what) except -1:
    cdef int64_t p = _field(t, slot, 1, what)
    return t.buf[p] if p else 0


cdef int64_t _vector(_Tab *t, int slot, int64_t elem, str what, int64_t *start) except -1:
    """Count of a vector/string field; start is -1 when absent (``_Table._vector``)."""
    cdef int64_t p = _field(t, slot, 4, what)
    if p == 0:
        start[0] = -1
        return 0
    cdef int64_t target = p + vf_rd_u32(t.buf + p)
    if target + 4 > t.n:
        raise ProtocolError(f"{what}: offset points past the buffer")
    cdef int64_t count = vf_rd_u32(t.buf + target)
    start[0] = target + 4
    if start[0] + count * elem > t.n:
        raise ProtocolError(f"{what}: length {count} runs past the buffer")
    return count


cdef object _string(_Tab *t, int slot, str what):
    cdef int64_t start
    cdef int64_t count = _vector(t, slot, 1, what, &start)
    if start < 0:
        return None
    try:
        return _decode_utf8(<const char *>t.buf + start, count, NULL)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: not valid UTF-8 ({exc.reason})") from None


cdef object _required_string(_Tab *t, int slot, str what):
    value = _string(t, slot, what)
    if value is None:
        raise ProtocolError(f"{what} is required but missing")
    return value


cdef object _byte_vector(_Tab *t, int slot, str what):
    cdef int64_t start
    cdef int64_t count = _vector(t, slot, 1, what, &start)
    if start < 0:
        return b""
    return _bytes_from(<const char *>t.buf + start, count)


cdef list _key_values(_Tab *t, int slot, str what):
    cdef int64_t start, i, e
    cdef int64_t count = _vector(t, slot, 4, what, &start)
    cdef list out = []
    cdef _Tab kv
    cdef str kwhat = what + ".key"
    cdef str vwhat = what + ".value"
    cdef int64_t budget = t.n + _KV_SLACK
    if count > _KV_MAX_ENTRIES:
        raise ProtocolError(_kv_too_many(what, count))
    for i in range(count):
        e = start + 4 * i
        _tab_init(&kv, t.buf, t.n, e + vf_rd_u32(t.buf + e), what)
        k = _required_string(&kv, 0, kwhat)
        v = _required_string(&kv, 1, vwhat)
        budget -= PyUnicode_GET_LENGTH(k) + PyUnicode_GET_LENGTH(v)
        if budget < 0:
            raise ProtocolError(_kv_amplified(what))
        out.append((k, v))
    return out


def decode_execute_request(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_execute_request(body)
    cdef _Tab t
    cdef PyObject *items[9]
    cdef object a, b, c, d, e, f, g, h, k
    _root(&t, body, "ExecuteRequest")
    a = _u64_field(&t, 0, "ExecuteRequest.request_id")
    b = _required_string(&t, 1, "ExecuteRequest.tenant_id")
    c = _string(&t, 2, "ExecuteRequest.workspace_id")
    d = _string(&t, 3, "ExecuteRequest.trace_id")
    e = _required_string(&t, 4, "ExecuteRequest.connector_name")
    f = _required_string(&t, 5, "ExecuteRequest.operation")
    g = _u64_field(&t, 6, "ExecuteRequest.deadline_at_ms")
    h = _byte_vector(&t, 7, "ExecuteRequest.payload")
    k = _key_values(&t, 8, "ExecuteRequest.headers")
    items[0] = <PyObject *>a
    items[1] = <PyObject *>b
    items[2] = <PyObject *>c
    items[3] = <PyObject *>d
    items[4] = <PyObject *>e
    items[5] = <PyObject *>f
    items[6] = <PyObject *>g
    items[7] = <PyObject *>h
    items[8] = <PyObject *>k
    return _named(ExecuteRequestFrame, items, 9)


def decode_execute_response(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_execute_response(body)
    cdef _Tab t
    cdef PyObject *items[5]
    cdef object a, b, c, d, e
    _root(&t, body, "ExecuteResponse")
    a = _u64_field(&t, 0, "ExecuteResponse.request_id")
    b = <long>(<int8_t>_u8_field(&t, 1, "ExecuteResponse.error_class"))
    c = _string(&t, 2, "ExecuteResponse.error_message")
    d = _byte_vector(&t, 3, "ExecuteResponse.payload")
    e = _u64_field(&t, 4, "ExecuteResponse.duration_us")
    items[0] = <PyObject *>a
    items[1] = <PyObject *>b
    items[2] = <PyObject *>c
    items[3] = <PyObject *>d
    items[4] = <PyObject *>e
    return _named(ExecuteResponseFrame, items, 5)


def decode_health_response(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_health_response(body)
    cdef _Tab t
    _root(&t, body, "HealthCheckResponse")
    a = _u8_field(&t, 0, "HealthCheckResponse.healthy") != 0
    b = _string(&t, 1, "HealthCheckResponse.message")
    c = _u32_field(&t, 2, "HealthCheckResponse.active_requests")
    d = _u32_field(&t, 3, "HealthCheckResponse.available_credits")
    return HealthResponseFrame(a, b, c, d)


def decode_credit_update(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_credit_update(body)
    cdef _Tab t
    _root(&t, body, "CreditUpdate")
    a = <int32_t><uint32_t>_u32_field(&t, 0, "CreditUpdate.credit_delta")
    b = _u32_field(&t, 1, "CreditUpdate.total_credits")
    return CreditUpdateFrame(a, b)


def decode_stream_start(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_stream_start(body)
    cdef _Tab t
    _root(&t, body, "StreamStart")
    a = _u64_field(&t, 0, "StreamStart.request_id")
    b = _u16_field(&t, 1, "StreamStart.status_code")
    c = _key_values(&t, 2, "StreamStart.headers")
    d = _u8_field(&t, 3, "StreamStart.is_streaming") != 0
    return StreamStartFrame(a, b, c, d)


def decode_stream_chunk(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_stream_chunk(body)
    cdef _Tab t
    cdef PyObject *items[2]
    cdef object a, b
    _root(&t, body, "StreamChunk")
    a = _u64_field(&t, 0, "StreamChunk.request_id")
    b = _byte_vector(&t, 1, "StreamChunk.data")
    items[0] = <PyObject *>a
    items[1] = <PyObject *>b
    return _named(StreamChunkFrame, items, 2)


def decode_cancel_request(body):
    if not PyBytes_CheckExact(body):
        return _py.decode_cancel_request(body)
    cdef _Tab t
    _root(&t, body, "CancelRequest")
    return CancelRequestFrame(_u64_field(&t, 0, "CancelRequest.request_id"))


# ------------------------------------------------------------------ writing

cdef struct _Req:
    uint64_t rid
    uint64_t deadline
    Py_ssize_t ts, ws, trs, cs, os_
    const char *payload  # raw payload bytes, or NULL: the http JSON described by spec
    Py_ssize_t payload_len
    Py_ssize_t kvn


cdef Py_ssize_t _b_execute_request(vf_bld *b, _Req *r, object tenant_id, object workspace_id,
                                   object trace_id, object connector_name, object operation,
                                   object spec, object headers) except -1:
    cdef Py_ssize_t tenant, workspace = 0, trace = 0, connector, op, body, kvs = 0
    cdef uint8_t *data
    tenant = _b_string(b, tenant_id, r.ts)
    if r.ws >= 0:
        workspace = _b_string(b, workspace_id, r.ws)
    if r.trs >= 0:
        trace = _b_string(b, trace_id, r.trs)
    connector = _b_string(b, connector_name, r.cs)
    op = _b_string(b, operation, r.os_)
    if r.payload != NULL:
        body = _b_bytes(b, r.payload, r.payload_len)
    else:
        body = vf_b_bytes(b, r.payload_len, &data)
        if data != NULL:
            _http_json_write(spec, data)
    if r.kvn:
        kvs = _b_key_values(b, headers, r.kvn)
    vf_b_start_object(b, 9)
    if r.rid:
        vf_b_slot_u64(b, 0, r.rid)
    vf_b_slot_ref(b, 1, tenant)
    if workspace:
        vf_b_slot_ref(b, 2, workspace)
    if trace:
        vf_b_slot_ref(b, 3, trace)
    vf_b_slot_ref(b, 4, connector)
    vf_b_slot_ref(b, 5, op)
    if r.deadline:
        vf_b_slot_u64(b, 6, r.deadline)
    vf_b_slot_ref(b, 7, body)
    if kvs:
        vf_b_slot_ref(b, 8, kvs)
    return vf_b_finish(b, vf_b_end_object(b))


cdef object _encode_execute_request(
    object request_id, object tenant_id, object workspace_id, object trace_id,
    object connector_name, object operation, object deadline_at_ms,
    const char *payload, Py_ssize_t payload_len, object spec, object headers,
):
    """The ExecuteRequest frame, or None when the pure twin must handle the input.

    The payload is either raw bytes (payload != NULL) or the http JSON described by
    spec (made by _http_json_size, payload_len bytes), written in place.
    """
    cdef uint64_t rid, deadline
    if not _u64(request_id, &rid) or not _u64(deadline_at_ms, &deadline):
        return None
    return _encode_execute_request_c(rid, deadline, tenant_id, workspace_id, trace_id,
                                     connector_name, operation, payload, payload_len, spec,
                                     headers)


cdef object _encode_execute_request_c(
    uint64_t request_id, uint64_t deadline_at_ms, object tenant_id, object workspace_id,
    object trace_id, object connector_name, object operation,
    const char *payload, Py_ssize_t payload_len, object spec, object headers,
):
    """_encode_execute_request with the two numbers already checked (C values)."""
    cdef _Req r
    cdef vf_bld b
    cdef Py_ssize_t total
    r.rid = request_id
    r.deadline = deadline_at_ms
    r.ts = _str_size(tenant_id)
    r.ws = _opt_str_size(workspace_id)
    r.trs = _opt_str_size(trace_id)
    r.cs = _str_size(connector_name)
    r.os_ = _str_size(operation)
    if r.ts < 0 or r.ws == -1 or r.trs == -1 or r.cs < 0 or r.os_ < 0:
        return None
    r.kvn = _kv_count(headers)
    if r.kvn < 0:
        return None
    r.payload = payload
    r.payload_len = payload_len
    vf_b_init(&b, NULL)
    total = _b_execute_request(&b, &r, tenant_id, workspace_id, trace_id, connector_name,
                               operation, spec, headers)
    out = _new_frame(&b, total, _EXECUTE_REQUEST)
    _b_execute_request(&b, &r, tenant_id, workspace_id, trace_id, connector_name,
                       operation, spec, headers)
    return out


def encode_execute_request(
    request_id,
    tenant_id,
    workspace_id,
    trace_id,
    connector_name,
    operation,
    deadline_at_ms,
    payload,
    headers=None,
):
    """A whole ExecuteRequest frame (length prefix, type byte, FlatBuffers table)."""
    if PyBytes_CheckExact(payload):
        out = _encode_execute_request(
            request_id, tenant_id, workspace_id, trace_id, connector_name, operation,
            deadline_at_ms, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), None,
            headers,
        )
        if out is not None:
            return out
    return _py.encode_execute_request(
        request_id, tenant_id, workspace_id, trace_id, connector_name, operation,
        deadline_at_ms, payload, headers,
    )


cdef Py_ssize_t _b_execute_response(vf_bld *b, uint64_t rid, int8_t ec, object message,
                                    Py_ssize_t ms, object payload, uint64_t dur):
    cdef Py_ssize_t msg = 0, body = 0
    if ms >= 0:
        msg = _b_string(b, message, ms)
    if payload is not None:
        body = _b_bytes(b, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    vf_b_start_object(b, 5)
    if rid:
        vf_b_slot_u64(b, 0, rid)
    if ec:
        vf_b_slot_u8(b, 1, <uint8_t>ec)
    if msg:
        vf_b_slot_ref(b, 2, msg)
    if body:
        vf_b_slot_ref(b, 3, body)
    if dur:
        vf_b_slot_u64(b, 4, dur)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_execute_response(request_id, error_class, error_message, payload, duration_us):
    """A whole ExecuteResponse frame."""
    cdef uint64_t rid, dur
    cdef long long ec
    cdef Py_ssize_t ms, total
    cdef vf_bld b
    if (
        not _u64(request_id, &rid)
        or not _u64(duration_us, &dur)
        or not _int_in(error_class, -128, 127, &ec)
        or not (payload is None or PyBytes_CheckExact(payload))
    ):
        return _py.encode_execute_response(
            request_id, error_class, error_message, payload, duration_us
        )
    ms = _opt_str_size(error_message)
    if ms == -1:
        return _py.encode_execute_response(
            request_id, error_class, error_message, payload, duration_us
        )
    vf_b_init(&b, NULL)
    total = _b_execute_response(&b, rid, <int8_t>ec, error_message, ms, payload, dur)
    out = _new_frame(&b, total, _EXECUTE_RESPONSE)
    _b_execute_response(&b, rid, <int8_t>ec, error_message, ms, payload, dur)
    return out


cdef Py_ssize_t _b_empty(vf_bld *b):
    vf_b_start_object(b, 0)
    return vf_b_finish(b, vf_b_end_object(b))


cdef object _empty_table_frame(int message_type):
    cdef vf_bld b
    vf_b_init(&b, NULL)
    out = _new_frame(&b, _b_empty(&b), message_type)
    _b_empty(&b)
    return out


_HEALTH_CHECK_FRAME = _empty_table_frame(_HEALTH_CHECK)


def encode_health_check():
    """A HealthCheck frame (an empty HealthCheck table); immutable, so built once."""
    return _HEALTH_CHECK_FRAME


cdef Py_ssize_t _b_health_response(vf_bld *b, int ok, object message, Py_ssize_t ms,
                                   uint32_t act, uint32_t cred):
    cdef Py_ssize_t msg = 0
    if ms >= 0:
        msg = _b_string(b, message, ms)
    vf_b_start_object(b, 4)
    if ok:
        vf_b_slot_u8(b, 0, 1)
    if msg:
        vf_b_slot_ref(b, 1, msg)
    if act:
        vf_b_slot_u32(b, 2, act)
    if cred:
        vf_b_slot_u32(b, 3, cred)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_health_response(healthy, message, active_requests, available_credits):
    cdef long long act = 0, cred = 0
    cdef Py_ssize_t ms, total
    cdef int ok = _truth(healthy)
    cdef vf_bld b
    ms = _opt_str_size(message)
    if (
        ok < 0
        or ms == -1
        or not _int_in(active_requests, 0, 0xFFFFFFFF, &act)
        or not _int_in(available_credits, 0, 0xFFFFFFFF, &cred)
    ):
        return _py.encode_health_response(healthy, message, active_requests, available_credits)
    vf_b_init(&b, NULL)
    total = _b_health_response(&b, ok, message, ms, <uint32_t>act, <uint32_t>cred)
    out = _new_frame(&b, total, _HEALTH_RESPONSE)
    _b_health_response(&b, ok, message, ms, <uint32_t>act, <uint32_t>cred)
    return out


cdef Py_ssize_t _b_credit_update(vf_bld *b, int32_t delta, uint32_t total):
    vf_b_start_object(b, 2)
    if delta:
        vf_b_slot_u32(b, 0, <uint32_t>delta)
    if total:
        vf_b_slot_u32(b, 1, total)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_credit_update(credit_delta, total_credits):
    cdef long long delta, total
    cdef vf_bld b
    if not _int_in(credit_delta, -2147483648, 2147483647, &delta) or not _int_in(
        total_credits, 0, 0xFFFFFFFF, &total
    ):
        return _py.encode_credit_update(credit_delta, total_credits)
    vf_b_init(&b, NULL)
    size = _b_credit_update(&b, <int32_t>delta, <uint32_t>total)
    out = _new_frame(&b, size, _CREDIT_UPDATE)
    _b_credit_update(&b, <int32_t>delta, <uint32_t>total)
    return out


cdef Py_ssize_t _b_stream_start(vf_bld *b, uint64_t rid, uint16_t status, object headers,
                                Py_ssize_t kvn, int streaming) except -1:
    cdef Py_ssize_t kvs = 0
    if kvn:
        kvs = _b_key_values(b, headers, kvn)
    vf_b_start_object(b, 4)
    if rid:
        vf_b_slot_u64(b, 0, rid)
    if status:
        vf_b_slot_u16(b, 1, status)
    if kvs:
        vf_b_slot_ref(b, 2, kvs)
    if streaming:
        vf_b_slot_u8(b, 3, 1)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_stream_start(request_id, status_code, headers, is_streaming):
    cdef uint64_t rid
    cdef long long status
    cdef Py_ssize_t kvn, total
    cdef int streaming = _truth(is_streaming)
    cdef vf_bld b
    kvn = _kv_count(headers)
    if (
        streaming < 0
        or kvn < 0
        or not _u64(request_id, &rid)
        or not _int_in(status_code, 0, 0xFFFF, &status)
    ):
        return _py.encode_stream_start(request_id, status_code, headers, is_streaming)
    vf_b_init(&b, NULL)
    total = _b_stream_start(&b, rid, <uint16_t>status, headers, kvn, streaming)
    out = _new_frame(&b, total, _STREAM_START)
    _b_stream_start(&b, rid, <uint16_t>status, headers, kvn, streaming)
    return out


cdef Py_ssize_t _b_stream_chunk(vf_bld *b, uint64_t rid, object data):
    cdef Py_ssize_t vec = _b_bytes(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    vf_b_start_object(b, 2)
    if rid:
        vf_b_slot_u64(b, 0, rid)
    vf_b_slot_ref(b, 1, vec)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_stream_chunk(request_id, data):
    cdef uint64_t rid
    cdef vf_bld b
    if not PyBytes_CheckExact(data) or not _u64(request_id, &rid):
        return _py.encode_stream_chunk(request_id, data)
    vf_b_init(&b, NULL)
    out = _new_frame(&b, _b_stream_chunk(&b, rid, data), _STREAM_CHUNK)
    _b_stream_chunk(&b, rid, data)
    return out


cdef Py_ssize_t _b_cancel_request(vf_bld *b, uint64_t rid):
    vf_b_start_object(b, 1)
    if rid:
        vf_b_slot_u64(b, 0, rid)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_cancel_request(request_id):
    cdef uint64_t rid
    cdef vf_bld b
    if not _u64(request_id, &rid):
        return _py.encode_cancel_request(request_id)
    vf_b_init(&b, NULL)
    out = _new_frame(&b, _b_cancel_request(&b, rid), _CANCEL_REQUEST)
    _b_cancel_request(&b, rid)
    return out


# ------------------------------------------------------------------ http connector JSON

# The request JSON is described by a small tuple so it can be sized once and then
# written straight into its destination (the frame's payload vector, or a bytes):
#   (method_str, upper_flag, url, headers_dict_or_None, body_or_None)
# body is an exact str or exact bytes (validated UTF-8).

cdef Py_ssize_t _http_json_size(object method, object url, object headers, object body,
                                list spec):
    """Exact size of the request JSON, or -1 when the pure twin must build it."""
    cdef Py_ssize_t size, s, pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef int upper = 1
    if not PyUnicode_CheckExact(method) or not PyUnicode_CheckExact(url):
        return -1
    if not PyUnicode_IS_ASCII(method):
        method = method.upper()  # full Unicode case mapping: leave it to str.upper
        upper = 0
        if not PyUnicode_CheckExact(method):
            return -1
    s = vf_str_size(method, 1)
    if s < 0:
        return -1
    size = 11 + s + 9
    s = vf_str_size(url, 1)
    if s < 0:
        return -1
    size += s + 1
    if headers is not None:
        if not PyDict_CheckExact(headers):
            return -1
        if headers:
            size += 12 + 1 - 1  # ,"headers":{ ... }  (the closing brace replaces one comma)
            while PyDict_Next(headers, &pos, &k, &v):
                if not PyUnicode_CheckExact(<object>k) or not PyUnicode_CheckExact(<object>v):
                    return -1
                s = vf_str_size(<object>k, 1)
                if s < 0:
                    return -1
                size += s + 5
                s = vf_str_size(<object>v, 1)
                if s < 0:
                    return -1
                size += s + 1  # the comma after the pair, or the closing brace
        else:
            headers = None
    if body is not None:
        if PyUnicode_CheckExact(body):
            if PyUnicode_GET_LENGTH(body) == 0:
                body = None
            else:
                s = vf_str_size(body, 1)
                if s < 0:
                    return -1
                size += 9 + s + 1
        elif PyBytes_CheckExact(body):
            if PyBytes_GET_SIZE(body) == 0:
                body = None
            else:
                s = vf_utf8_json_size(<const uint8_t *>PyBytes_AS_STRING(body),
                                      PyBytes_GET_SIZE(body))
                if s < 0:
                    return -1
                size += 9 + s + 1
        else:
            return -1
    size += 1
    spec.append((method, upper, url, headers, body))
    return size


cdef inline uint8_t *_lit(uint8_t *o, const char *s, Py_ssize_t n):
    memcpy(o, s, n)
    return o + n


cdef uint8_t *_http_json_write(object spec, uint8_t *o):
    """Write the JSON sized by _http_json_size, byte for byte what json.dumps emits."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef bint first = True
    method, upper, url, headers, body = spec
    o = _lit(o, b'{"method":"', 11)
    o = vf_str_write(method, o, 1, upper)
    o = _lit(o, b'","url":"', 9)
    o = vf_str_write(url, o, 1, 0)
    o[0] = c'"'
    o += 1
    if headers is not None:
        o = _lit(o, b',"headers":{', 12)
        while PyDict_Next(headers, &pos, &k, &v):
            if not first:
                o[0] = c','
                o += 1
            first = False
            o[0] = c'"'
            o = vf_str_write(<object>k, o + 1, 1, 0)
            o = _lit(o, b'":"', 3)
            o = vf_str_write(<object>v, o, 1, 0)
            o[0] = c'"'
            o += 1
        o[0] = c'}'
        o += 1
    if body is not None:
        o = _lit(o, b',"body":"', 9)
        if PyBytes_CheckExact(body):
            o = vf_utf8_json_write(<const uint8_t *>PyBytes_AS_STRING(body),
                                   PyBytes_GET_SIZE(body), o)
        else:
            o = vf_str_write(body, o, 1, 0)
        o[0] = c'"'
        o += 1
    o[0] = c'}'
    return o + 1


def encode_http_request_payload(method, url, headers, body):
    """The ``http`` connector's request JSON: method (upper case), url, headers, body."""
    cdef list spec = []
    cdef Py_ssize_t n = _http_json_size(method, url, headers, body, spec)
    if n < 0:
        return _py.encode_http_request_payload(method, url, headers, body)
    out = _bytes_from(NULL, n)
    _http_json_write(spec[0], <uint8_t *>PyBytes_AS_STRING(out))
    return out


def encode_http_request_frame(
    request_id,
    tenant_id,
    workspace_id,
    trace_id,
    deadline_at_ms,
    method,
    url,
    headers,
    body,
    ext_headers=None,
):
    """The hot path: an ``http``/``request`` ExecuteRequest frame in one allocation."""
    return _http_request_frame(
        request_id, tenant_id, workspace_id, trace_id, deadline_at_ms, method, url,
        headers, body, ext_headers,
    )


cdef object _http_request_frame(
    object request_id, object tenant_id, object workspace_id, object trace_id,
    object deadline_at_ms, object method, object url, object headers, object body,
    object ext_headers,
):
    cdef list spec = []
    cdef Py_ssize_t n = _http_json_size(method, url, headers, body, spec)
    if n >= 0:
        out = _encode_execute_request(
            request_id, tenant_id, workspace_id, trace_id, "http", "request",
            deadline_at_ms, NULL, n, spec[0], ext_headers,
        )
        if out is not None:
            return out
    return _py.encode_http_request_frame(
        request_id, tenant_id, workspace_id, trace_id, deadline_at_ms, method, url,
        headers, body, ext_headers,
    )


# ------------------------------------------------------------------ SIMD selection

# The JSON unescaper's paths (csrc/vf_simd.h), by their VASTAR_FAST_SIMD names.
_SIMD_NAMES = ("scalar", "sse2", "avx2", "avx512", "neon")


def _simd_paths():
    """Private: the SIMD paths this build and CPU can run, slowest first."""
    return tuple(name for k, name in enumerate(_SIMD_NAMES) if vf_simd_available(k))


def _simd(name=None):
    """Private, for tests and benchmarks: the SIMD path in use, after switching to
    ``name`` when given (one of ``_SIMD_NAMES``; an unavailable one selects the best
    available path, which is then returned).  Not for use while other threads decode.
    """
    if name is not None:
        if name not in _SIMD_NAMES:
            raise ValueError(f"unknown SIMD path {name!r}: expected one of {_SIMD_NAMES}")
        vf_simd_set(_SIMD_NAMES.index(name))
    return _SIMD_NAMES[vf_simd_get()]


def _simd_from_env():
    """VASTAR_FAST_SIMD, read once at import: force a path, or the best this CPU has."""
    import os

    best = _SIMD_NAMES[vf_simd_init()]
    want = os.environ.get("VASTAR_FAST_SIMD", "").strip().lower()
    if not want:
        return
    # The plain logger, not _log's: this runs while vastar_fast is being imported, before
    # the package's NullHandler exists, so with logging unconfigured the warning reaches
    # stderr through Python's last-resort handler (a misspelt variable must be seen).
    import logging

    log = logging.getLogger("vastar_fast.protocol")
    if want not in _SIMD_NAMES:
        log.warning("VASTAR_FAST_SIMD=%r is not one of %s; using %s, the best this CPU has",
                    want, ", ".join(_SIMD_NAMES), best)
    elif _simd(want) != want:
        log.warning("VASTAR_FAST_SIMD=%s is not available in this build on this CPU "
                    "(available: %s); using %s", want, ", ".join(_simd_paths()), _simd())
    else:
        log.debug("VASTAR_FAST_SIMD=%s: JSON unescaping uses the %s path", want, want)


_simd_from_env()




cdef enum:
    _K_BODY = 1
    _K_HEADERS = 2
    _K_STREAMING = 4
    _K_STATUS = 8


# Short plain-ASCII strings (header names, and values such as "keep-alive") repeat from
# one response to the next: a small direct-mapped cache hands out the str made last time
# (its hash already computed, which also speeds up the dict insert). Entries are
# verified byte for byte, so a collision only costs a fresh str. Bounded: 256 strs of at
# most 48 characters, held for the life of the process.
cdef enum:
    _STR_CACHE_SIZE = 256
    _STR_CACHE_MAX_LEN = 48
cdef PyObject *_str_cache[_STR_CACHE_SIZE]


cdef inline object _ascii_str(const uint8_t *p, Py_ssize_t n):
    """A str of the n ASCII bytes at p, from the cache when the same text was seen."""
    cdef Py_ssize_t k
    cdef unsigned int h
    cdef uint64_t h64
    cdef PyObject *hit
    if n == 0 or n > _STR_CACHE_MAX_LEN:
        s = PyUnicode_New(n, 127)
        memcpy(PyUnicode_DATA(s), p, n)
        return s
    if n >= 8:
        # O(1): length and the first and last 8 bytes (a hit is verified in full below)
        h64 = (vf_rd_u64(p) * <uint64_t>0x9E3779B97F4A7C15u) ^ vf_rd_u64(p + n - 8) ^ <uint64_t>n
        h = <unsigned int>(h64 ^ (h64 >> 29) ^ (h64 >> 47))
    else:
        h = <unsigned int>n
        for k in range(n):
            h = h * 31u + p[k]
    h = (h ^ (h >> 11)) & (_STR_CACHE_SIZE - 1)
    hit = _str_cache[h]
    if hit is not NULL and PyUnicode_GET_LENGTH(<object>hit) == n and memcmp(
        PyUnicode_DATA(<object>hit), p, n
    ) == 0:
        return <object>hit
    s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    Py_INCREF(s)
    _str_cache[h] = <PyObject *>s
    if hit is not NULL:
        Py_DECREF(<object>hit)  # the cache's reference to the entry it replaces
    return s


cdef object _json_str(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *end):
    """The str of the JSON string starting after its quote at p[i], or None (fall back)."""
    cdef Py_ssize_t j = vf_find_special(p, i, n)
    cdef Py_ssize_t outlen
    cdef int high = 0
    cdef uint8_t small[256]
    cdef uint8_t *tmp
    if j < n and p[j] == c'"':  # plain ASCII, the usual header
        end[0] = j + 1
        return _ascii_str(p + i, j - i)
    if n - i + VF_UNESCAPE_SLACK <= 256:
        tmp = small
    else:
        tmp = <uint8_t *>PyMem_Malloc(n - i + VF_UNESCAPE_SLACK)
        if tmp is NULL:
            raise MemoryError()
    try:
        j = vf_json_unescape(p, i, n, tmp, &outlen, &high)
        if j < 0:
            return None
        end[0] = j
        try:
            return _decode_utf8(<const char *>tmp, outlen, "surrogatepass")
        except UnicodeDecodeError:
            return None  # invalid UTF-8: json.loads fails on it, let the pure twin say so
    finally:
        if tmp is not small:
            PyMem_Free(tmp)


cdef object _json_body(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *end):
    """The body string decoded straight into its bytes object, or None (fall back)."""
    cdef Py_ssize_t outlen
    cdef int high = 0
    cdef PyObject *raw = _bytes_new(NULL, n - i + VF_UNESCAPE_SLACK)
    if raw is NULL:
        raise MemoryError()
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(<object>raw)
    cdef Py_ssize_t j = vf_json_unescape(p, i, n, o, &outlen, &high)
    if j < 0 or (high and not vf_utf8_valid_sp(o, outlen)):
        Py_DECREF(<object>raw)
        return None
    if _PyBytes_Resize(&raw, outlen) < 0:
        raise MemoryError()
    end[0] = j
    out = <object>raw
    Py_DECREF(out)
    return out


cdef extern from "Python.h":
    dict _PyDict_NewPresized(Py_ssize_t minused)  # what Cython's own dict literals use


cdef object _fast_response(const uint8_t *p, Py_ssize_t n):
    """The released runtime's response JSON (the n bytes at p), or None for anything else.

    Accepts exactly one object with keys among body / headers / is_streaming /
    status_code, each at most once, with the value types the released runtime sends
    (null where the pure twin treats null as absent).  Everything else (unknown or
    escaped keys, duplicates, floats, big or odd numbers, invalid JSON) returns None so
    the pure twin's json.loads path decides, and results stay identical to it.
    """
    cdef Py_ssize_t i, e, digits
    cdef int seen = 0, key
    cdef bint neg
    cdef long long status_v = 0
    cdef bint streaming = False
    cdef object body = b""
    cdef object headers = None
    cdef object k, v, status, streaming_obj
    cdef PyObject *items[4]
    i = vf_skip_ws(p, 0, n)
    if i >= n or p[i] != c'{':
        return None
    i = vf_skip_ws(p, i + 1, n)
    while True:
        if i >= n or p[i] != c'"':
            return None
        i += 1
        if n - i >= 5 and memcmp(p + i, b'body"', 5) == 0:
            key = _K_BODY
            i += 5
        elif n - i >= 8 and memcmp(p + i, b'headers"', 8) == 0:
            key = _K_HEADERS
            i += 8
        elif n - i >= 13 and memcmp(p + i, b'is_streaming"', 13) == 0:
            key = _K_STREAMING
            i += 13
        elif n - i >= 12 and memcmp(p + i, b'status_code"', 12) == 0:
            key = _K_STATUS
            i += 12
        else:
            return None
        if seen & key:
            return None
        seen |= key
        i = vf_skip_ws(p, i, n)
        if i >= n or p[i] != c':':
            return None
        i = vf_skip_ws(p, i + 1, n)
        if i >= n:
            return None
        if n - i >= 4 and memcmp(p + i, b"null", 4) == 0 and key != _K_STATUS:
            i += 4  # the pure twin reads null as absent for these three keys
        elif key == _K_BODY:
            if p[i] != c'"':
                return None
            body = _json_body(p, i + 1, n, &e)
            if body is None:
                return None
            i = e
        elif key == _K_HEADERS:
            if p[i] != c'{':
                return None
            # room for 10 entries at once (the 16-slot table a dict grows into by its
            # 6th): no resize while reading a typical answer's headers
            headers = _PyDict_NewPresized(10)
            i = vf_skip_ws(p, i + 1, n)
            if i < n and p[i] == c'}':
                i += 1
            else:
                while True:
                    if i >= n or p[i] != c'"':
                        return None
                    k = _json_str(p, i + 1, n, &e)
                    if k is None:
                        return None
                    i = vf_skip_ws(p, e, n)
                    if i >= n or p[i] != c':':
                        return None
                    i = vf_skip_ws(p, i + 1, n)
                    if i >= n or p[i] != c'"':
                        return None
                    v = _json_str(p, i + 1, n, &e)
                    if v is None:
                        return None
                    PyDict_SetItem(headers, k, v)  # duplicates: last wins, like json
                    i = vf_skip_ws(p, e, n)
                    if i < n and p[i] == c',':
                        i = vf_skip_ws(p, i + 1, n)
                        continue
                    if i < n and p[i] == c'}':
                        i += 1
                        break
                    return None
        elif key == _K_STREAMING:
            if n - i >= 4 and memcmp(p + i, b"true", 4) == 0:
                streaming = True
                i += 4
            elif n - i >= 5 and memcmp(p + i, b"false", 5) == 0:
                i += 5
            else:
                return None
        else:
            neg = p[i] == c'-'
            if neg:
                i += 1
            digits = 0
            status_v = 0
            while i < n and c'0' <= p[i] <= c'9' and digits < 19:
                if digits < 18:  # a 19th digit only rejects: accumulating it could overflow
                    status_v = status_v * 10 + (p[i] - c'0')
                digits += 1
                i += 1
            if digits == 0 or digits > 18:
                return None
            if digits > 1 and p[i - digits] == c'0':
                return None  # leading zero: json.loads rejects it, let it say so
            if i < n and (p[i] == c'.' or p[i] == c'e' or p[i] == c'E'):
                return None
            if neg:
                status_v = -status_v
        i = vf_skip_ws(p, i, n)
        if i < n and p[i] == c',':
            i = vf_skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == c'}':
            i += 1
            break
        return None
    if vf_skip_ws(p, i, n) != n or not (seen & _K_STATUS):
        return None
    if headers is None:
        headers = {}
    status = status_v
    items[0] = <PyObject *>status
    items[1] = <PyObject *>headers
    items[2] = <PyObject *>body
    streaming_obj = True if streaming else False
    items[3] = <PyObject *>streaming_obj
    return _named(HTTPResponsePayload, items, 4)


def decode_http_response_payload(payload):
    """Parse the ``http`` connector's response JSON into status, headers, body bytes."""
    if PyBytes_CheckExact(payload):
        result = _fast_response(<const uint8_t *>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload))
        if result is not None:
            return result
    return _py.decode_http_response_payload(payload)


# ------------------------------------------------------------------ runtime-side http JSON

# The response JSON (keys in the released runtime's order), sized then written in place:
#   {"body":"...","headers":{"k":"v",...},"is_streaming":false,"status_code":200}
# spec: (status_digits_bytes, headers_dict, body (exact str or valid UTF-8 bytes), streaming)

cdef struct _RespSpec:
    # What _http_resp_json_size checked, for _http_resp_json_write: the caller's own
    # references (borrowed; they outlive both calls).
    PyObject *headers
    PyObject *body
    int streaming
    int ndigits
    char digits[12]


cdef Py_ssize_t _http_resp_json_size(object status_code, object headers, object body,
                                     object is_streaming, _RespSpec *spec) except -2:
    """Exact size of the response JSON, or -1 when the pure twin must build it."""
    cdef Py_ssize_t size, s, pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef long long st
    cdef unsigned long long u
    cdef char tmp[12]
    cdef int i = 0, j
    if not _int_in(status_code, -2147483648, 2147483647, &st):
        return -1
    if not PyDict_CheckExact(headers):
        return -1
    size = 9  # {"body":"
    if PyUnicode_CheckExact(body):
        s = vf_str_size(body, 1)
    elif PyBytes_CheckExact(body):
        s = vf_utf8_json_size(<const uint8_t *>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
    else:
        return -1
    if s < 0:
        return -1
    size += s + 13  # ","headers":{
    if headers:
        while PyDict_Next(headers, &pos, &k, &v):
            if not PyUnicode_CheckExact(<object>k) or not PyUnicode_CheckExact(<object>v):
                return -1
            s = vf_str_size(<object>k, 1)
            if s < 0:
                return -1
            size += s + 5  # "k":"v" plus a comma (the last one is the closing brace)
            s = vf_str_size(<object>v, 1)
            if s < 0:
                return -1
            size += s + 1
    else:
        size += 1  # }
    # the status code's decimal digits (what str(int) gives), written here in C
    u = <unsigned long long>(-st) if st < 0 else <unsigned long long>st
    while True:
        tmp[i] = <char>(48 + u % 10)
        i += 1
        u //= 10
        if u == 0:
            break
    if st < 0:
        tmp[i] = c'-'
        i += 1
    for j in range(i):
        spec.digits[j] = tmp[i - 1 - j]
    spec.ndigits = i
    spec.headers = <PyObject *>headers
    spec.body = <PyObject *>body
    spec.streaming = 1 if is_streaming else 0
    size += 16 + (4 if spec.streaming else 5) + 15 + i + 1
    return size


cdef uint8_t *_http_resp_json_write(_RespSpec *spec, uint8_t *o):
    cdef Py_ssize_t pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef bint first = True
    cdef object headers = <object>spec.headers
    cdef object body = <object>spec.body
    o = _lit(o, b'{"body":"', 9)
    if PyBytes_CheckExact(body):
        o = vf_utf8_json_write(<const uint8_t *>PyBytes_AS_STRING(body),
                               PyBytes_GET_SIZE(body), o)
    else:
        o = vf_str_write(body, o, 1, 0)
    o = _lit(o, b'","headers":{', 13)
    while PyDict_Next(headers, &pos, &k, &v):
        if not first:
            o[0] = c','
            o += 1
        first = False
        o[0] = c'"'
        o = vf_str_write(<object>k, o + 1, 1, 0)
        o = _lit(o, b'":"', 3)
        o = vf_str_write(<object>v, o, 1, 0)
        o[0] = c'"'
        o += 1
    o = _lit(o, b'},"is_streaming":', 17)
    if spec.streaming:
        o = _lit(o, b"true", 4)
    else:
        o = _lit(o, b"false", 5)
    o = _lit(o, b',"status_code":', 15)
    o = _lit(o, spec.digits, spec.ndigits)
    o[0] = c'}'
    return o + 1


def encode_http_response_payload(status_code, headers, body, is_streaming):
    """The ``http`` connector's response JSON, keys in the released runtime's order."""
    cdef _RespSpec spec
    cdef Py_ssize_t n = _http_resp_json_size(status_code, headers, body, is_streaming, &spec)
    if n < 0:
        return _py.encode_http_response_payload(status_code, headers, body, is_streaming)
    out = _bytes_from(NULL, n)
    _http_resp_json_write(&spec, <uint8_t *>PyBytes_AS_STRING(out))
    return out


cdef Py_ssize_t _b_http_response(vf_bld *b, uint64_t rid, Py_ssize_t n, _RespSpec *spec,
                                 uint64_t dur):
    cdef uint8_t *data
    cdef Py_ssize_t body = vf_b_bytes(b, n, &data)
    if data != NULL:
        _http_resp_json_write(spec, data)
    vf_b_start_object(b, 5)
    if rid:
        vf_b_slot_u64(b, 0, rid)
    vf_b_slot_ref(b, 3, body)
    if dur:
        vf_b_slot_u64(b, 4, dur)
    return vf_b_finish(b, vf_b_end_object(b))


def encode_http_response_frame(request_id, status_code, headers, body, is_streaming,
                               duration_us):
    """The runtime's hot path: a successful ``http`` ExecuteResponse frame in one
    allocation, the response JSON written straight into the frame."""
    cdef _RespSpec spec
    cdef uint64_t rid, dur
    cdef Py_ssize_t n, total
    cdef vf_bld b
    if _u64(request_id, &rid) and _u64(duration_us, &dur):
        n = _http_resp_json_size(status_code, headers, body, is_streaming, &spec)
        if n >= 0:
            vf_b_init(&b, NULL)
            total = _b_http_response(&b, rid, n, &spec, dur)
            out = _new_frame(&b, total, _EXECUTE_RESPONSE)
            _b_http_response(&b, rid, n, &spec, dur)
            return out
    return _py.encode_http_response_frame(
        request_id, status_code, headers, body, is_streaming, duration_us
    )


cdef enum:
    _K_METHOD = 1
    _K_URL = 2
    _K_RHEADERS = 4
    _K_RBODY = 8


cdef object _fast_request(bytes payload):
    """The http connector's request JSON as the released SDKs send it, or None.

    Accepts exactly one object with keys among method / url / headers / body, each at
    most once, strings where strings belong (null for headers and body), headers
    mapping strings to strings. Everything else (invalid UTF-8 included: strings are
    decoded as json.loads decodes bytes, with surrogatepass) returns None so the pure
    twin's json.loads path decides, with the same result or the same error.
    """
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t i, e
    cdef int seen = 0, key
    cdef object method = None, url = None, headers = None, body = ""
    cdef object k, v
    cdef PyObject *items[4]
    i = vf_skip_ws(p, 0, n)
    if i >= n or p[i] != c'{':
        return None
    i = vf_skip_ws(p, i + 1, n)
    while True:
        if i >= n or p[i] != c'"':
            return None
        i += 1
        if n - i >= 7 and memcmp(p + i, b'method"', 7) == 0:
            key = _K_METHOD
            i += 7
        elif n - i >= 4 and memcmp(p + i, b'url"', 4) == 0:
            key = _K_URL
            i += 4
        elif n - i >= 8 and memcmp(p + i, b'headers"', 8) == 0:
            key = _K_RHEADERS
            i += 8
        elif n - i >= 5 and memcmp(p + i, b'body"', 5) == 0:
            key = _K_RBODY
            i += 5
        else:
            return None
        if seen & key:
            return None
        seen |= key
        i = vf_skip_ws(p, i, n)
        if i >= n or p[i] != c':':
            return None
        i = vf_skip_ws(p, i + 1, n)
        if i >= n:
            return None
        if (key == _K_RHEADERS or key == _K_RBODY) and n - i >= 4 and memcmp(
            p + i, b"null", 4
        ) == 0:
            i += 4  # the pure twin reads null as absent for these two keys
        elif key == _K_RHEADERS:
            if p[i] != c'{':
                return None
            headers = {}
            i = vf_skip_ws(p, i + 1, n)
            if i < n and p[i] == c'}':
                i += 1
            else:
                while True:
                    if i >= n or p[i] != c'"':
                        return None
                    k = _json_str(p, i + 1, n, &e)
                    if k is None:
                        return None
                    i = vf_skip_ws(p, e, n)
                    if i >= n or p[i] != c':':
                        return None
                    i = vf_skip_ws(p, i + 1, n)
                    if i >= n or p[i] != c'"':
                        return None
                    v = _json_str(p, i + 1, n, &e)
                    if v is None:
                        return None
                    PyDict_SetItem(headers, k, v)  # duplicates: last wins, like json
                    i = vf_skip_ws(p, e, n)
                    if i < n and p[i] == c',':
                        i = vf_skip_ws(p, i + 1, n)
                        continue
                    if i < n and p[i] == c'}':
                        i += 1
                        break
                    return None
        else:
            if p[i] != c'"':
                return None
            v = _json_str(p, i + 1, n, &e)
            if v is None:
                return None
            i = e
            if key == _K_METHOD:
                method = v
            elif key == _K_URL:
                url = v
            else:
                body = v
        i = vf_skip_ws(p, i, n)
        if i < n and p[i] == c',':
            i = vf_skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == c'}':
            i += 1
            break
        return None
    if vf_skip_ws(p, i, n) != n or method is None or url is None or not method or not url:
        return None
    if headers is None:
        headers = {}
    items[0] = <PyObject *>method
    items[1] = <PyObject *>url
    items[2] = <PyObject *>headers
    items[3] = <PyObject *>body
    return _named(HTTPRequestPayload, items, 4)


def decode_http_request_payload(payload):
    """Parse the ``http`` connector's request JSON (runtime side)."""
    if PyBytes_CheckExact(payload):
        result = _fast_request(payload)
        if result is not None:
            return result
    return _py.decode_http_request_payload(payload)


# ================================================================== client core
#
# The compiled twin of ``_client_py`` (ClientConnection, Waiter, BlockingChannel): read
# that module first, this section follows it class by class and method by method, and
# both pass one test suite.  What differs is only how:
#
# * the request frame is encoded from the HTTPRequest in C (``_http_request_frame``);
# * BlockingChannel receives with recv(2) into the FrameBuffer's block with the GIL
#   released (csrc/client_io.h), splits the frames where they lie, and decodes its own
#   caller's answer there, straight into an HTTPResponse: no frame, payload or
#   NamedTuple copy on the way, and no Python bytecode between recv returning and
#   execute() returning;
# * shared state (ids, waiters, the reader and sleepers) is guarded by the GIL instead
#   of a lock: no step between reading and writing it runs Python code or releases the
#   GIL. This module is not declared free-threading compatible, so a free-threaded
#   CPython keeps the GIL enabled while it is imported.  Blocking steps (recv, send,
#   sleeping, waiting for the send lock) release the GIL.

from cpython.pythread cimport (
    NOWAIT_LOCK,
    PY_LOCK_ACQUIRED,
    PY_LOCK_INTR,
    PyLockStatus,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)
from cpython.dict cimport PyDict_Contains, PyDict_DelItem, PyDict_GetItem
from cpython.float cimport PyFloat_AsDouble
from cpython.long cimport PyLong_FromLongLong
from libc.errno cimport EINTR

import os as _os
import sys as _sys
import time as _time

from .._log import lazy_logger as _lazy_logger

from ..errors import ConnectorException as _ConnectorException
from ..types import ErrorClass as _ErrorClass
from ..types import HTTPResponse as _HTTPResponse
from ..types import RuntimeConfig as _RuntimeConfig
from . import client_policy as _policy
from .events import CreditsUpdated as _CreditsUpdated
from .events import HealthReceived as _HealthReceived
from .events import StreamDataReceived as _StreamDataReceived
from .events import StreamStarted as _StreamStarted
from .frames import TOKEN_ENV as _TOKEN_ENV
from .frames import extension_headers as _extension_headers
from .tracecontext import context_getter as _context_getter
from .tracecontext import trace_pairs as _trace_pairs


cdef extern from "Python.h":
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long us,
                                             int intr_flag) nogil
    int PyErr_CheckSignals() except -1


cdef extern from "client_io.h":
    int VF_POSIX_IO
    bint VF_EAGAIN(int err) nogil
    Py_ssize_t vf_io_recv(int fd, void *buf, Py_ssize_t n, int *err) nogil
    Py_ssize_t vf_io_send(int fd, const void *buf, Py_ssize_t n, int *err) nogil
    Py_ssize_t vf_io_send_now(int fd, const void *buf, Py_ssize_t n, int *err) nogil
    int vf_io_timeout(int fd, int sending, double seconds) nogil
    int vf_io_shutdown(int fd) nogil
    int VF_HAVE_CLOCKS
    uint64_t vf_next_id(uint64_t *counter) nogil
    double vf_monotonic() nogil
    double vf_wall_ms() nogil


cdef object _log = _lazy_logger("vastar_fast.client")
cdef object _monotonic = _time.monotonic
cdef object _wall_clock = _time.time
cdef tuple _NO_ARGS = ()
cdef extern from "Python.h":
    PyTypeObject PyBaseObject_Type
cdef object _SUCCESS = _ErrorClass.SUCCESS
cdef object _TIMEOUT_CLASS = _ErrorClass.TIMEOUT
cdef Py_ssize_t _MAX_ABANDONED = 4096
cdef bint _use_fd = VF_POSIX_IO != 0
# What an expired socket timeout raises: SO_RCVTIMEO/SO_SNDTIMEO give EAGAIN
# (BlockingIOError); a socket object's own timeout raises socket.timeout, which is
# TimeoutError only from Python 3.10 on (so _socket, a shared library, is loaded only
# before 3.10).
cdef tuple _TIMED_OUT = (BlockingIOError, TimeoutError)
if _sys.version_info < (3, 10):
    from _socket import timeout as _socket_timeout
    _TIMED_OUT = (BlockingIOError, TimeoutError, _socket_timeout)


def _client_io(posix=None):
    """Private, for tests: use recv/send on descriptors (True, POSIX default) or the
    socket objects' methods (False, the path Windows takes) in channels made from now
    on. Returns whether descriptors are used."""
    global _use_fd
    if posix is not None:
        _use_fd = bool(posix) and VF_POSIX_IO != 0
    return _use_fd


cdef double _GRACE_S = _policy.CLIENT_GRACE_MS / 1000.0

# opentelemetry's current-context getter (tracecontext.py): None until the first request
# looks it up, False when opentelemetry is not installed.
cdef object _trace_get = None


cdef object _trace_getter():
    global _trace_get
    getter = _context_getter()
    _trace_get = getter if getter is not None else False
    return _trace_get


def _trace_reset():
    """Private, for tests: look opentelemetry up again on the next request."""
    global _trace_get
    _trace_get = None


cdef inline double _now() except? -1.0:
    """time.monotonic()"""
    if VF_HAVE_CLOCKS:
        return vf_monotonic()
    return PyFloat_AsDouble(_monotonic())


cdef inline double _wall_ms() except? -1.0:
    """time.time() * 1000"""
    if VF_HAVE_CLOCKS:
        return vf_wall_ms()
    return PyFloat_AsDouble(_wall_clock()) * 1000.0


cdef object _new_response(object rid, object status, object headers, object body,
                          object duration):
    """HTTPResponse(rid, status, headers, body, duration, SUCCESS, None) without running
    the dataclass __init__: the same attributes, in its order."""
    # object.__new__(HTTPResponse), called through the slot (no Python-level call)
    cdef object r = PyBaseObject_Type.tp_new(<type>_HTTPResponse, <PyObject *>_NO_ARGS, NULL)
    r.request_id = rid
    r.status_code = status
    r.headers = headers
    r.body = body
    r.duration_us = duration
    r.error_class = _SUCCESS
    r.error_message = None
    return r


cdef object _http_request_frame_c(
    uint64_t rid, uint64_t deadline, object tenant_id, object workspace_id, object trace_id,
    object method, object url, object headers, object body, object ext_headers,
):
    """_http_request_frame with the request id and deadline as C values; None when the
    input needs the object path (which defers to the pure twin)."""
    cdef list spec = []
    cdef Py_ssize_t n = _http_json_size(method, url, headers, body, spec)
    if n < 0:
        return None
    return _encode_execute_request_c(rid, deadline, tenant_id, workspace_id, trace_id,
                                     "http", "request", NULL, n, spec[0], ext_headers)


cdef class Waiter:
    """One caller waiting on a connection: a request, or the pending health check."""

    cdef readonly object request_id
    cdef uint64_t _rid
    cdef readonly bint stream
    cdef readonly bint health
    cdef public double deadline
    cdef public bint finished
    cdef public object error
    cdef public object future
    cdef list _events  # None until the first event arrives
    cdef Py_ssize_t _head
    cdef object _frame
    cdef object _result
    cdef object _failure
    cdef bint _has_result
    cdef PyThread_type_lock _sem
    cdef bint _sleeping
    cdef bint _woken

    def __init__(self, request_id, stream, deadline, health=False):
        self.request_id = request_id
        self._rid = request_id
        self.stream = stream
        self.health = health
        self.deadline = deadline

    def __dealloc__(self):
        if self._sem != NULL and not self._sleeping:  # a sleeping thread holds a reference
            PyThread_free_lock(self._sem)
            self._sem = NULL

    @property
    def events(self):
        """What arrived and was not taken yet (a copy)."""
        return [] if self._events is None else self._events[self._head:]

    @property
    def ready(self):
        """True when take() would not wait: an event arrived, or a failure."""
        return self._queued() or self.error is not None

    def take(self):
        """The oldest event not taken yet; the connection's failure once none is left."""
        if self._queued():
            return self._pop()
        if self.error is not None:
            raise _policy.for_request(self.error, self.request_id)
        raise LookupError("no event has arrived for this waiter yet")

    cdef inline bint _queued(self):
        return self._events is not None and self._head < PyList_GET_SIZE(self._events)

    cdef inline object _pop(self):
        cdef object event = <object>PyList_GET_ITEM(self._events, self._head)
        self._head += 1
        if self._head == PyList_GET_SIZE(self._events):
            self._events = None
            self._head = 0
        return event

    cdef inline int _push(self, object event) except -1:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)
        return self._wake()

    cdef int _wake(self) except -1:
        fut = self.future
        if fut is not None:
            if not fut.done():
                fut.set_result(None)
        elif self._sleeping and not self._woken:
            self._woken = True
            PyThread_release_lock(self._sem)
        return 0


cdef class ClientConnection:
    """The client half of the protocol: requests in, frames out; bytes in, events out.

    The compiled twin of ``_client_py.ClientConnection`` (see there)."""

    cdef FrameBuffer _frames
    cdef readonly object max_frame_size
    cdef Py_ssize_t _cap
    cdef uint64_t _next_id
    cdef public dict outstanding
    cdef dict _waiters
    cdef Waiter _health
    cdef public object credits
    cdef public bint extended
    cdef public bint closed
    cdef public object error
    cdef public object config
    cdef public object where
    cdef public object leftover_hook
    cdef public object broken_hook
    cdef list _leftover
    cdef object _ext_plain
    cdef object _ext_stream

    def __init__(self, max_frame_size=MAX_PAYLOAD_SIZE, request_id_seed=None, config=None,
                 where="(not connected)"):
        self._frames = FrameBuffer(max_frame_size)
        self.max_frame_size = max_frame_size
        self._cap = min(int(max_frame_size), 0x7FFFFFFFFFFF)
        if request_id_seed is None:
            request_id_seed = int(_wall_clock() * 1000)
        self._next_id = request_id_seed
        self.outstanding = {}
        self._waiters = {}
        self._health = None
        self.credits = None
        self.extended = False
        self.closed = False
        self.error = None
        self.config = config if config is not None else _RuntimeConfig()
        self.where = where
        self.leftover_hook = None
        self.broken_hook = None
        self._leftover = None
        self._ext_plain, self._ext_stream = _extension_headers(_os.environ.get(_TOKEN_ENV))

    # ------------------------------------------------------------ requests (low level)
    def next_request_id(self):
        """A counter seeded with the current time in ms, as the released SDK does."""
        return PyLong_FromUnsignedLongLong(vf_next_id(&self._next_id))

    def send_http(self, request_id, tenant_id, workspace_id, trace_id, deadline_at_ms,
                  method, url, headers, body, stream=False):
        """The frame for one http request; registers it as outstanding."""
        frame = _http_request_frame(
            request_id, tenant_id, workspace_id, trace_id, deadline_at_ms, method, url,
            headers, body, self._ext_stream if stream else self._ext_plain,
        )
        if PyBytes_GET_SIZE(frame) - 4 > self._cap:
            raise FrameTooLargeError(PyBytes_GET_SIZE(frame) - 4, self.max_frame_size)
        if self.closed:
            raise ProtocolError("the connection is closed")
        self.outstanding[request_id] = bool(stream)
        return frame

    def send_health_check(self):
        return _HEALTH_CHECK_FRAME

    def send_cancel(self, request_id):
        """Ask the runtime to abandon a request; its terminal response still arrives."""
        return encode_cancel_request(request_id)

    def forget(self, request_id):
        """Stop waiting for a request; late frames for it are dropped."""
        w = self._waiters.pop(request_id, None)
        if w is not None:
            (<Waiter>w).finished = True

    # ------------------------------------------------------------ requests (drivers)
    def open_request(self, request, stream=False):
        """Build the frame for ``request`` and register its waiter: (waiter, frame)."""
        cdef Waiter w = self._open(request, bool(stream))
        frame = w._frame
        w._frame = None
        return w, frame

    cdef Waiter _open(self, object request, bint stream):
        cdef object config = self.config
        cdef object timeout_ms = request.timeout_ms
        cdef double now_ms = _wall_ms()
        cdef long long timeout_c = -1
        cdef uint64_t rid
        cdef Waiter w
        cdef object rid_obj, deadline_ms, frame
        if not timeout_ms:
            timeout_ms = config.timeout_ms
        if PyLong_CheckExact(timeout_ms):
            timeout_c = _as_ll(timeout_ms)
            if timeout_c == -1 and PyErr_Occurred():
                PyErr_Clear()
        if 0 <= timeout_c < (1LL << 40):
            deadline_ms = None  # the C value below serves
        else:
            deadline_ms = int(now_ms) + timeout_ms  # what the pure twin computes, any type
        if self.closed:
            raise _policy.for_request(self._closed_error(), 0)
        rid = vf_next_id(&self._next_id)
        rid_obj = PyLong_FromUnsignedLongLong(rid)
        body = request.body
        if (isinstance(body, (bytes, str))) and len(body) > self._cap:
            raise _policy.too_large(len(body), self.max_frame_size, rid_obj)
        tenant = request.tenant_id or config.tenant_id
        workspace = request.workspace_id or config.workspace_id
        ext = self._ext_stream if stream else self._ext_plain
        getter = _trace_get
        if getter is None:
            getter = _trace_getter()
        if getter is not False:
            ctx = getter()
            if ctx:  # something is current: the span's traceparent, if there is one
                traced = _trace_pairs(ctx)
                if traced is not None:
                    ext = traced if ext is None else ext + traced
        try:
            frame = None
            if deadline_ms is None:
                frame = _http_request_frame_c(
                    rid, <uint64_t>(<long long>now_ms + timeout_c), tenant, workspace,
                    request.trace_id, request.method, request.url, request.headers, body, ext,
                )
                if frame is None:
                    deadline_ms = PyLong_FromLongLong(<long long>now_ms + timeout_c)
            if frame is None:
                frame = _http_request_frame(
                    rid_obj, tenant, workspace, request.trace_id, deadline_ms, request.method,
                    request.url, request.headers, body, ext,
                )
        except ProtocolError as exc:
            raise _policy.invalid_request(exc, rid_obj) from None
        if PyBytes_GET_SIZE(frame) - 4 > self._cap:
            raise _policy.too_large(PyBytes_GET_SIZE(frame) - 4, self.max_frame_size, rid_obj)
        w = Waiter.__new__(Waiter)
        w.request_id = rid_obj
        w._rid = rid
        w.stream = stream
        if timeout_c >= 0:
            w.deadline = _now() + timeout_c / 1000.0 + _GRACE_S
        else:
            w.deadline = _now() + PyFloat_AsDouble(timeout_ms) / 1000.0 + _GRACE_S
        w._frame = frame
        if self.closed:
            raise _policy.for_request(self._closed_error(), rid_obj)
        self.outstanding[rid_obj] = stream
        self._waiters[rid_obj] = w
        return w

    def open_health(self, timeout_ms):
        """Register the (single) pending health check; returns it and the frame."""
        cdef Waiter w = Waiter(0, False, _now() + timeout_ms / 1000.0, True)
        if self.closed:
            raise self._closed_error()
        if self._health is not None:
            raise RuntimeError("a health check is already pending on this connection")
        self._health = w
        return w, _HEALTH_CHECK_FRAME

    def give_up(self, Waiter waiter):
        """Stop waiting; the CancelRequest frame to send when the runtime can act on it."""
        return self._give_up(waiter)

    cdef object _give_up(self, Waiter w):
        cdef Py_ssize_t extra
        w.finished = True
        if w.health:
            if self._health is w:
                self._health = None
            return None
        rid = w.request_id
        if <PyObject *>PyDict_GetItem(self._waiters, rid) == <PyObject *>w:
            PyDict_DelItem(self._waiters, rid)
        extra = len(self.outstanding) - len(self._waiters)
        if extra > _MAX_ABANDONED:
            old = [r for r in self.outstanding if r not in self._waiters][:1024]
            for r in old:
                del self.outstanding[r]
        if PyDict_Contains(self.outstanding, rid) and self.extended and not self.closed:
            return encode_cancel_request(rid)
        return None

    def fail(self, exc):
        """Close the connection: every waiter gets ``exc``. False if already closed."""
        return self._fail(exc)

    cdef bint _fail(self, object exc) except -1:
        cdef Waiter w
        if self.closed:
            return False
        self.closed = True
        self.error = exc
        waiters = list(self._waiters.values())
        if self._health is not None:
            waiters.append(self._health)
        self._waiters.clear()
        self._health = None
        self.outstanding.clear()
        for w in waiters:
            w.error = exc
            w.finished = True
        for w in waiters:
            w._wake()
        return True

    def close(self):
        """Close: waiters still waiting fail with TRANSIENT."""
        self._fail(_policy.client_closed())

    def _closed_error(self):
        return self.error if self.error is not None else _policy.client_closed()

    def response(self, event):
        """An HTTPResponse, or the ConnectorException the released SDK raises for it."""
        return self._response(event)

    cdef object _response(self, object event):
        rid, error_class, error_message, payload, duration_us = event
        if error_class != 0:
            raise _policy.runtime_error(error_class, error_message, rid)
        if not payload:
            raise _policy.empty_payload(rid)
        if PyBytes_CheckExact(payload):
            parts = _fast_response(<const uint8_t *>PyBytes_AS_STRING(payload),
                                   PyBytes_GET_SIZE(payload))
            if parts is not None:
                return _new_response(rid, <object>PyTuple_GET_ITEM(parts, 0),
                                     <object>PyTuple_GET_ITEM(parts, 1),
                                     <object>PyTuple_GET_ITEM(parts, 2), duration_us)
        try:
            status, headers, body, _streaming = _py.decode_http_response_payload(payload)
        except ProtocolError as exc:
            raise _policy.unreadable_payload(exc, rid) from None
        return _new_response(rid, status, headers, body, duration_us)

    # ------------------------------------------------------------ receiving
    def get_buffer(self, sizehint=-1):
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        """Account for bytes received into get_buffer(); deliver what they complete;
        return the events no waiter took (ProtocolError: the connection must close)."""
        if self.closed:
            return []
        self._frames.buffer_updated(nbytes)
        return self._deliver(None) or []

    def receive_data(self, data):
        """Feed received bytes; as buffer_updated()."""
        if self.closed:
            return []
        self._frames.feed(data)
        return self._deliver(None) or []

    def received(self, nbytes):
        """buffer_updated() for a driver with hooks (the asyncio protocol)."""
        cdef list leftover
        try:
            leftover = self.buffer_updated(nbytes)
        except ProtocolError:
            hook = self.broken_hook
            if hook is not None:
                hook(self._closed_error())
            return
        if leftover and self.leftover_hook is not None:
            self.leftover_hook(leftover)

    cdef list _deliver(self, Waiter me):
        """Deliver every complete frame; the events no waiter took (None: none). ``me``:
        the reading thread's own execute() waiter, whose answer is decoded in place."""
        cdef list leftover
        self._leftover = None
        try:
            self._frames_in_place(me)
        except ProtocolError as exc:
            self._fail(_policy.bad_frame(exc, isinstance(exc, FrameTooLargeError)))
            raise
        finally:
            leftover = self._leftover
            self._leftover = None
        return leftover

    cdef inline int _keep(self, object event) except -1:
        if self._leftover is None:
            self._leftover = [event]
        else:
            self._leftover.append(event)
        return 0

    cdef int _frames_in_place(self, Waiter me) except -1:
        cdef FrameBuffer fb = self._frames
        cdef Py_ssize_t avail
        cdef int64_t length
        cdef const uint8_t *p
        while True:
            if fb._error is not None:
                raise fb._error
            avail = fb._end - fb._start
            if avail < 4:
                break
            p = fb._blk.data + fb._start
            length = (<int64_t>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]
            if length == 0 or length > fb._limit:
                fb.next_frame()  # raises, and the error sticks, as for the frame API
            if avail < 4 + length:
                break
            self._on_frame(p[4], p + 5, length - 1, me)
            fb._start += 4 + length
        if fb._start == fb._end and fb._blk is not None:
            fb._start = fb._end = 0
            if fb._blk.cap > _SHRINK_ABOVE and fb._win is None:
                fb._blk = None  # a one-off huge frame should not pin its memory
        return 0

    cdef int _on_frame(self, int mtype, const uint8_t *body, int64_t n, Waiter me) except -1:
        cdef _Tab t
        cdef int64_t p, d_start = -1, d_count
        cdef uint64_t rid
        cdef int ec
        cdef bint ambiguous = False
        cdef Waiter owner
        cdef PyObject *items[5]
        cdef object rid_obj, ec_obj, message, payload, duration, data, event
        if mtype == _EXECUTE_RESPONSE:
            # decode_execute_response's checks, in its order, on the bytes where they lie
            if n < 4:
                raise ProtocolError(f"ExecuteResponse: {n} bytes is too short for a FlatBuffers root")
            _tab_init(&t, body, n, vf_rd_u32(body), "ExecuteResponse")
            p = _field(&t, 0, 8, "ExecuteResponse.request_id")
            rid = vf_rd_u64(t.buf + p) if p else 0
            p = _field(&t, 1, 1, "ExecuteResponse.error_class")
            ec = <int8_t>t.buf[p] if p else 0
            message = _string(&t, 2, "ExecuteResponse.error_message")
            d_count = _vector(&t, 3, 1, "ExecuteResponse.payload", &d_start)
            duration = _u64_field(&t, 4, "ExecuteResponse.duration_us")
            if me is not None and rid == me._rid and not me.health:
                rid_obj = me.request_id  # the usual case: the reader's own answer
            else:
                rid_obj = PyLong_FromUnsignedLongLong(rid)
            owner = self._owner(rid_obj, &ambiguous)
            if owner is me and me is not None and not me.stream and not me._queued():
                self._answer_in_place(me, rid_obj, ec, message, t.buf, d_start, d_count,
                                      duration)
                return 0
            payload = b"" if d_start < 0 else _bytes_from(<const char *>t.buf + d_start, d_count)
            ec_obj = ec
            items[0] = <PyObject *>rid_obj
            items[1] = <PyObject *>ec_obj
            items[2] = <PyObject *>message
            items[3] = <PyObject *>payload
            items[4] = <PyObject *>duration
            event = _named(ExecuteResponseFrame, items, 5)
            if owner is not None:
                owner.finished = True
                owner._push(event)
            else:
                if ambiguous:
                    _log.warning(
                        "dropping a request_id-0 answer from the runtime (%s): it could "
                        "belong to any of several requests in flight", message)
                self._keep(event)
        elif mtype == _STREAM_CHUNK:
            if n < 4:
                raise ProtocolError(f"StreamChunk: {n} bytes is too short for a FlatBuffers root")
            _tab_init(&t, body, n, vf_rd_u32(body), "StreamChunk")
            rid_obj = _u64_field(&t, 0, "StreamChunk.request_id")
            data = _byte_vector(&t, 1, "StreamChunk.data")
            self.extended = True
            if not self.outstanding.get(rid_obj):
                return 0  # stray: finished, unknown, or a request that never opted in
            items[0] = <PyObject *>rid_obj
            items[1] = <PyObject *>data
            event = _named(_StreamDataReceived, items, 2)
            owner = <Waiter>self._waiters.get(rid_obj)
            if owner is not None:
                owner._push(event)
            else:
                self._keep(event)
        elif mtype == _STREAM_START:
            s = decode_stream_start(_bytes_from(<const char *>body, n))
            self.extended = True
            if not self.outstanding.get(s.request_id):
                return 0
            event = _StreamStarted(s.request_id, s.status_code, dict(s.headers), s.is_streaming)
            owner = <Waiter>self._waiters.get(s.request_id)
            if owner is not None:
                owner._push(event)
            else:
                self._keep(event)
        elif mtype == _HEALTH_RESPONSE:
            h = decode_health_response(_bytes_from(<const char *>body, n))
            event = _HealthReceived(h.healthy, h.message, h.active_requests, h.available_credits)
            self.extended = True
            owner = self._health
            if owner is not None:
                self._health = None
                owner.finished = True
                owner._push(event)
            else:
                self._keep(event)
        elif mtype == _CREDIT_UPDATE:
            u = decode_credit_update(_bytes_from(<const char *>body, n))
            self.extended = True
            self.credits = u.total_credits
            self._keep(_CreditsUpdated(u.credit_delta, u.total_credits))
        else:
            _log.debug("ignoring message type %d from the runtime", mtype)
        return 0

    cdef Waiter _owner(self, object rid, bint *ambiguous):
        """The waiter a terminal response belongs to (None: nobody waits), marking the
        request answered; the request_id-0 rule of _client_py."""
        cdef dict outstanding = self.outstanding
        cdef PyObject *w
        cdef Py_ssize_t candidates
        if PyDict_Contains(outstanding, rid):
            PyDict_DelItem(outstanding, rid)
            w = PyDict_GetItem(self._waiters, rid)
            if w == NULL:
                return None
            owner = <Waiter>w
            PyDict_DelItem(self._waiters, rid)
            return owner
        if rid != 0:
            return None  # late (its caller left long ago) or unknown
        health = self._health if not self.extended else None
        candidates = len(outstanding) + (1 if health is not None else 0)
        if candidates != 1:
            ambiguous[0] = candidates > 1
            return None
        if health is not None:
            self._health = None
            return <Waiter>health
        only = next(iter(outstanding))
        del outstanding[only]
        return <Waiter>self._waiters.pop(only, None)

    cdef int _answer_in_place(self, Waiter me, object rid, int ec, object message,
                              const uint8_t *buf, int64_t start, int64_t count,
                              object duration) except -1:
        """The reading thread's own answer, decoded from the receive block: me._result
        (an HTTPResponse) or me._failure (the ConnectorException to raise)."""
        me.finished = True
        me._has_result = True
        if ec != 0:
            me._failure = _policy.runtime_error(ec, message, rid)
            return 0
        if start < 0 or count == 0:
            me._failure = _policy.empty_payload(rid)
            return 0
        parts = _fast_response(buf + start, count)
        if parts is not None:
            me._result = _new_response(rid, <object>PyTuple_GET_ITEM(parts, 0),
                                       <object>PyTuple_GET_ITEM(parts, 1),
                                       <object>PyTuple_GET_ITEM(parts, 2), duration)
            return 0
        try:
            status, headers, body, _streaming = _py.decode_http_response_payload(
                _bytes_from(<const char *>buf + start, count))
        except ProtocolError as exc:
            me._failure = _policy.unreadable_payload(exc, rid)
            return 0
        me._result = _new_response(rid, status, headers, body, duration)
        return 0


cdef class BlockingChannel:
    """The blocking I/O engine of one runtime connection (the sync client's driver).

    The compiled twin of ``_client_py.BlockingChannel`` (see there)."""

    cdef readonly ClientConnection conn
    cdef object _sock
    cdef object _sockio  # the _sockio module, for the socket-methods path
    cdef int _fd
    cdef PyThread_type_lock _send_lock
    cdef bint _reading
    cdef list _sleepers
    cdef int _io
    cdef bint _shut
    cdef double _rcvtimeo
    cdef double _sndtimeo
    cdef list _cancels
    cdef public object reconnect

    def __cinit__(self):
        self._send_lock = PyThread_allocate_lock()
        if self._send_lock == NULL:
            raise MemoryError()

    def __init__(self, ClientConnection conn, sock):
        self.conn = conn
        self._sock = sock
        self._sleepers = []
        self._cancels = []
        self._fd = sock.fileno() if _use_fd else -1
        if self._fd >= 0:
            sock.settimeout(None)  # blocking; SO_RCVTIMEO/SO_SNDTIMEO bound each call
        else:
            # the socket's methods, which share one timeout: never set one (_sockio)
            from . import _sockio
            self._sockio = _sockio
            sock.setblocking(False)

    def __dealloc__(self):
        if self._send_lock != NULL:
            PyThread_free_lock(self._send_lock)
            self._send_lock = NULL

    @property
    def closed(self):
        return self.conn.closed

    # ------------------------------------------------------------ round trips
    def execute(self, request):
        """Send ``request``, wait for its answer, return it as an HTTPResponse."""
        cdef ClientConnection conn = self.conn
        cdef Waiter w
        if conn.closed and self.reconnect is not None:
            return self.reconnect().execute(request)
        w = conn._open(request, False)
        frame = w._frame
        w._frame = None
        try:
            self._send(frame, w)
            event = self._wait(w, True)
        except BaseException:
            if not w.finished:  # interrupted (KeyboardInterrupt): cancel, forget
                self._give_up(w)
            raise
        if w._has_result:
            if w._failure is not None:
                raise w._failure
            return w._result
        return conn._response(event)

    def start(self, request):
        """Send a streaming request; its events come from next_event()."""
        cdef Waiter w = self.conn._open(request, True)
        frame = w._frame
        w._frame = None
        self._send(frame, w)
        return w

    def health(self, timeout_ms):
        """Send a HealthCheck; its answer (HealthReceived, or a released runtime's
        request_id-0 ResponseReceived)."""
        cdef Waiter w
        w, frame = self.conn.open_health(timeout_ms)
        try:
            self._send(frame, w)
            return self._wait(w, False)
        except _ConnectorException as exc:
            if exc.error_class == _TIMEOUT_CLASS:
                raise _policy.health_timed_out(self.conn.where, timeout_ms) from None
            raise
        finally:
            if not w.finished:
                self.conn._give_up(w)

    def next_event(self, Waiter waiter):
        """The waiter's next event, reading the socket for everybody as needed."""
        return self._wait(waiter, False)

    def give_up(self, Waiter waiter):
        """Stop waiting for a request; cancel it at the runtime when it can."""
        self._give_up(waiter)

    def send(self, frame, Waiter waiter):
        """Send one whole frame under the send lock, within the waiter's deadline."""
        self._send(frame, waiter)

    def close(self, exc=None):
        """Close: every waiter fails (with ``exc``, default: the client was closed)."""
        self.conn._fail(exc if exc is not None else _policy.client_closed())
        self._shutdown()

    cdef int _give_up(self, Waiter w) except -1:
        cancel = self.conn._give_up(w)
        if cancel is not None:
            self._send_quietly(cancel)
        return 0

    # ------------------------------------------------------------ sending
    cdef bint _lock_send(self, double deadline) except -1:
        """Take the send lock before ``deadline`` (GIL released while waiting)."""
        cdef PyLockStatus r
        cdef long long us
        cdef double remaining
        if PyThread_acquire_lock(self._send_lock, NOWAIT_LOCK):
            return True
        while True:
            remaining = deadline - _now()
            if remaining <= 0:
                return PyThread_acquire_lock(self._send_lock, NOWAIT_LOCK) != 0
            us = <long long>(remaining * 1e6)
            if us > 0x7FFFFFFFFFFF:
                us = 0x7FFFFFFFFFFF
            with nogil:
                r = PyThread_acquire_lock_timed(self._send_lock, us, 1)
            if r == PY_LOCK_ACQUIRED:
                return True
            if r != PY_LOCK_INTR:
                return False
            PyErr_CheckSignals()

    cdef int _send(self, object frame, Waiter w) except -1:
        cdef double remaining = w.deadline - _now()
        cdef ClientConnection conn = self.conn
        if not self._lock_send(w.deadline):
            conn._give_up(w)
            raise _policy.send_timed_out(conn.where, w.request_id)
        try:
            if self._shut:
                conn._give_up(w)
                raise _policy.for_request(conn._closed_error(), w.request_id)
            err = self._write(frame, remaining)
            if err is not None:
                self._fail(_policy.connection_lost(err, True))
                if isinstance(err, _TIMED_OUT):  # the send timeout expired mid-frame
                    raise _policy.send_stalled(conn.where, w.request_id) from None
                raise _policy.for_request(conn._closed_error(), w.request_id) from err
        finally:
            self._unlock_send()
        return 0

    cdef int _send_quietly(self, object frame) except -1:
        """A CancelRequest: sent now if the socket is free, else queued for the thread
        sending a frame, which sends it right after (never mid-frame, never waiting)."""
        self._cancels.append(frame)
        if PyThread_acquire_lock(self._send_lock, NOWAIT_LOCK):
            self._unlock_send()
        return 0

    cdef int _unlock_send(self) except -1:
        """Release the send lock, first sending the CancelRequests queued meanwhile
        (checking the queue and releasing happen without letting another thread in)."""
        cdef list pending
        while True:
            pending = self._cancels
            if not pending or self._shut:
                self._cancels = []
                PyThread_release_lock(self._send_lock)
                return 0
            self._cancels = []
            for frame in pending:
                err = self._write(frame, self._sndtimeo if self._sndtimeo > 0 else 1.0)
                if err is not None:
                    self._fail(_policy.connection_lost(err, True))
                    break

    cdef object _write(self, object frame, double remaining):
        """Write the whole frame (send lock held); None, or the OSError that ended it
        (after which the byte stream is broken: the caller closes the connection)."""
        cdef const char *p = PyBytes_AS_STRING(frame)
        cdef Py_ssize_t total = PyBytes_GET_SIZE(frame), off = 0, k
        cdef int err = 0
        cdef int fd = self._fd
        self._io += 1
        try:
            if fd < 0:
                try:
                    self._sockio.send_within(self._sock, frame, remaining)
                except OSError as exc:
                    return exc
                return None
            if self._sndtimeo == 0.0 or not (0.9 * self._sndtimeo <= remaining <= self._sndtimeo):
                self._sndtimeo = self._set_timeout(1, remaining)
            # Usually the socket takes the whole frame at once: try without releasing
            # the GIL (MSG_DONTWAIT); only a full socket buffer waits with it released.
            k = vf_io_send_now(fd, p, total, &err)
            if k > 0:
                off = k
            elif k < 0 and not VF_EAGAIN(err) and err != EINTR:
                return OSError(err, _os.strerror(err))
            while off < total:
                with nogil:
                    k = vf_io_send(fd, p + off, total - off, &err)
                if k >= 0:
                    off += k
                elif err == EINTR:
                    try:
                        PyErr_CheckSignals()
                    except BaseException:
                        if off:  # part of the frame is out: the byte stream is broken
                            self._fail(_policy.connection_lost("interrupted while sending", True))
                        raise
                elif VF_EAGAIN(err):
                    return TimeoutError(err, "the runtime stopped reading (send timed out)")
                else:
                    return OSError(err, _os.strerror(err))
            return None
        finally:
            self._exit_io()

    cdef double _set_timeout(self, int sending, double seconds) except -1.0:
        if seconds < 0.001:
            seconds = 0.001
        vf_io_timeout(self._fd, sending, seconds)  # descriptors only (_sockio otherwise)
        return seconds

    # ------------------------------------------------------------ receiving
    cdef object _wait(self, Waiter w, bint execute):
        """The waiter's next event; for execute() also its answer decoded in place
        (then None is returned and w._has_result is set)."""
        cdef double remaining
        try:
            while True:
                if w._has_result:
                    return None
                if w._queued():
                    return w._pop()
                if w.error is not None:
                    raise _policy.for_request(w.error, w.request_id)
                remaining = w.deadline - _now()
                if remaining <= 0:
                    self._give_up(w)
                    raise _policy.timed_out(self.conn.where, w.request_id)
                if not self._reading:
                    self._reading = True
                    try:
                        self._read(remaining, w if execute else None)
                    finally:
                        self._reading = False
                else:
                    self._sleep(w, remaining)
        finally:
            self._hand_off()

    cdef int _sleep(self, Waiter w, double remaining) except -1:
        cdef PyLockStatus r
        cdef long long us = <long long>(remaining * 1e6)
        if w._sem == NULL:
            w._sem = PyThread_allocate_lock()
            if w._sem == NULL:
                raise MemoryError()
            PyThread_acquire_lock(w._sem, NOWAIT_LOCK)  # held: sleeping is acquiring it again
        if us > 0x7FFFFFFFFFFF:
            us = 0x7FFFFFFFFFFF
        w._sleeping = True
        w._woken = False
        self._sleepers.append(w)
        with nogil:
            r = PyThread_acquire_lock_timed(w._sem, us, 1)
        w._sleeping = False
        if r != PY_LOCK_ACQUIRED and w._woken:
            PyThread_acquire_lock(w._sem, NOWAIT_LOCK)  # the wake-up raced the timeout
        if w in self._sleepers:
            self._sleepers.remove(w)
        if r == PY_LOCK_INTR:
            PyErr_CheckSignals()
        return 0

    cdef int _hand_off(self) except -1:
        """Nobody reads: wake a sleeper to take the reading over."""
        cdef Waiter s
        if self._reading:
            return 0
        for s in self._sleepers:
            if not s._woken:
                s._wake()
                return 0
        return 0

    cdef int _read(self, double timeout, Waiter me) except -1:
        """One receive (bounded by ``timeout``), delivered to the waiters."""
        cdef ClientConnection conn = self.conn
        cdef FrameBuffer fb = conn._frames
        cdef Py_ssize_t n = 0, room
        cdef int err = 0
        cdef int fd = self._fd
        cdef uint8_t *dst
        if self._shut:
            return 0
        self._io += 1
        try:
            if fd >= 0:
                if self._rcvtimeo == 0.0 or not (0.9 * self._rcvtimeo <= timeout <= self._rcvtimeo):
                    self._rcvtimeo = self._set_timeout(0, timeout)
                room = _recv_room(fb)
                dst = fb._blk.data + fb._end
                with nogil:
                    n = vf_io_recv(fd, dst, room, &err)
                if n > 0:
                    fb._end += n
            else:
                try:
                    got = self._sockio.recv_within(self._sock, fb.get_buffer(), timeout)
                except OSError as exc:
                    self._fail(_policy.connection_lost(exc))
                    return 0
                if got is None:
                    return 0  # nothing within the timeout
                n = got
                if n > 0:
                    fb.buffer_updated(n)
        finally:
            self._exit_io()
        if n < 0:
            if VF_EAGAIN(err):
                return 0  # the receive timeout expired
            if err == EINTR:
                PyErr_CheckSignals()
                return 0
            self._fail(_policy.connection_lost(OSError(err, _os.strerror(err))))
            return 0
        if n == 0:
            self._fail(_policy.closed_by_runtime())
            return 0
        try:
            leftover = conn._deliver(me)
        except ProtocolError:
            self._fail(conn._closed_error())
            return 0
        if leftover is None:
            return 0
        for event in leftover:
            if type(event) is ExecuteResponseFrame:
                _log.debug("dropping a response for request %d: nobody waits",
                           (<tuple>event)[0])
        return 0

    # ------------------------------------------------------------ the socket's life
    cdef int _exit_io(self) except -1:
        self._io -= 1
        if self._shut and self._io == 0:
            self._sock.close()
        return 0

    cdef int _fail(self, object exc) except -1:
        if self.conn._fail(exc):
            _log.warning("%s", exc.message)
        self._shutdown()
        return 0

    cdef int _shutdown(self) except -1:
        """Wake any thread blocked on the socket; close it once nobody is inside a call."""
        if self._shut:
            return 0
        self._shut = True
        if self._fd >= 0:
            vf_io_shutdown(self._fd)
        else:
            try:
                self._sock.shutdown(2)
            except OSError:
                pass
        if self._io == 0:
            self._sock.close()
        return 0


cdef Py_ssize_t _recv_room(FrameBuffer fb) except -1:
    """FrameBuffer.get_buffer()'s sizing (a whole receive window, or room for the rest of
    a partly received frame), without making a memoryview; the room after fb._end."""
    cdef Py_ssize_t need = _RECV_CHUNK, pending = fb._end - fb._start, want
    cdef const uint8_t *hdr
    if pending >= 4 and fb._blk is not None:
        hdr = fb._blk.data + fb._start
        want = ((<Py_ssize_t>hdr[0] << 24) | (hdr[1] << 16) | (hdr[2] << 8) | hdr[3]) + 4 - pending
        if want > need and want <= fb._limit + 4:
            need = want
    fb._win = None
    fb._reserve(need)
    return fb._blk.cap - fb._end
