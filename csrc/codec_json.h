/*
 * codec_json.h -- plain C helpers for vastar_fast.protocol._codec_c.
 *
 * Three jobs, all on raw memory, no Python objects created here:
 *
 *  1. Little-endian loads/stores and a C replica of flatbuffers.Builder
 *     (vf_b_*) so a whole frame, byte for byte what the Python Builder makes,
 *     is measured and then written into one exactly-sized buffer.
 *  2. JSON string escaping with exactly json.JSONEncoder(ensure_ascii=False)
 *     semantics, sized first (so the frame is allocated once at its exact
 *     size) and then written; for str storage of every width and for UTF-8
 *     bytes (validated strictly, because the pure twin decodes them first).
 *  3. JSON string unescaping straight to UTF-8 bytes, with the semantics of
 *     json.loads(bytes) (which decodes the document with "surrogatepass")
 *     followed by .encode("utf-8", "surrogatepass").  Anything the fast path
 *     does not model returns -1 and the Cython caller defers to the pure twin,
 *     so results and errors always match it.
 *
 * The hot loops look at 16 bytes at a time with SSE2 where available (every
 * x86-64), otherwise 8 at a time with SWAR on little-endian GCC/Clang, else a
 * plain byte loop.
 */
#ifndef VASTAR_CODEC_JSON_H
#define VASTAR_CODEC_JSON_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define VF_SSE2 1
#endif

#if defined(_MSC_VER)
#include <intrin.h>
static __inline int vf_ctz32(unsigned int m) { unsigned long i; _BitScanForward(&i, m); return (int)i; }
#else
#define vf_ctz32(m) __builtin_ctz(m)
#endif

#if !defined(VF_SSE2) && defined(__GNUC__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VF_SWAR 1
#endif

/* Slack the unescaper may write past its logical end (one 16-byte store). */
#define VF_UNESCAPE_SLACK 16

/* ------------------------------------------------------------ little endian */

static inline uint16_t vf_rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t vf_rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t vf_rd_u64(const uint8_t *p)
{
    return (uint64_t)vf_rd_u32(p) | ((uint64_t)vf_rd_u32(p + 4) << 32);
}
static inline void vf_wr_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void vf_wr_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void vf_wr_u64(uint8_t *p, uint64_t v)
{
    vf_wr_u32(p, (uint32_t)v); vf_wr_u32(p + 4, (uint32_t)(v >> 32));
}
static inline void vf_wr_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

#define VF_ALIGN4(x) (((x) + 3) & ~(Py_ssize_t)3)
#define VF_ALIGN8(x) (((x) + 7) & ~(Py_ssize_t)7)

/* ------------------------------------------------- FlatBuffers back-builder */

/*
 * A C replica of the official Python flatbuffers.Builder (25.x), so the compiled
 * twin writes exactly the bytes the pure twin gets from the Builder.  The Builder
 * works back to front and every position, padding and alignment decision depends
 * only on the number of bytes written so far (Offset(), counted from the end), so
 * the same operation sequence is run twice: once with buf == NULL to learn the
 * size, then into one exactly-sized buffer whose END is buf + cap.
 *
 * Mirrored behaviour: Prep (pads with zeros, tracks minalign), CreateString (NUL
 * terminated, length prefix), CreateByteVector, StartVector / PrependUOffsetTRelative
 * / EndVector, StartObject / Prepend<scalar>Slot / PrependUOffsetTRelativeSlot /
 * EndObject (trailing absent slots trimmed from the vtable; vtables deduplicated on
 * the Builder's key: the trimmed, reversed field offsets plus the object size) and
 * Finish (Prep(minalign, 4) then the root uoffset).  Every byte of the output is
 * written explicitly, as in the Builder.
 */
#define VF_MAX_FIELDS 12
#define VF_MAX_VTABLES 4 /* distinct vtables per buffer; our tables need 2 (KeyValue + root) */

typedef struct {
    uint8_t *end;          /* one past the last byte; NULL while measuring */
    Py_ssize_t off;        /* Builder.Offset(): bytes written so far          */
    Py_ssize_t minalign;
    Py_ssize_t object_end; /* Offset() at StartObject                          */
    int nfields;
    Py_ssize_t vt[VF_MAX_FIELDS];
    int nvtables;
    int vt_len[VF_MAX_VTABLES];
    Py_ssize_t vt_key[VF_MAX_VTABLES][VF_MAX_FIELDS + 1];
    Py_ssize_t vt_off[VF_MAX_VTABLES];
} vf_bld;

static inline void vf_b_init(vf_bld *b, uint8_t *end)
{
    b->end = end; b->off = 0; b->minalign = 1; b->object_end = 0; b->nfields = 0; b->nvtables = 0;
}

/* Where the byte at Offset() o sits (write mode only). */
#define VF_AT(b, o) ((b)->end - (o))

static inline void vf_b_pad(vf_bld *b, Py_ssize_t n)
{
    if (n <= 0) return;
    b->off += n;
    if (b->end) memset(VF_AT(b, b->off), 0, (size_t)n);
}

static inline void vf_b_prep(vf_bld *b, Py_ssize_t size, Py_ssize_t additional)
{
    if (size > b->minalign) b->minalign = size;
    vf_b_pad(b, (~(b->off + additional) + 1) & (size - 1));
}

static inline void vf_b_place_u8(vf_bld *b, uint8_t v) { b->off += 1; if (b->end) *VF_AT(b, b->off) = v; }
static inline void vf_b_place_u16(vf_bld *b, uint16_t v) { b->off += 2; if (b->end) vf_wr_u16(VF_AT(b, b->off), v); }
static inline void vf_b_place_u32(vf_bld *b, uint32_t v) { b->off += 4; if (b->end) vf_wr_u32(VF_AT(b, b->off), v); }
static inline void vf_b_place_u64(vf_bld *b, uint64_t v) { b->off += 8; if (b->end) vf_wr_u64(VF_AT(b, b->off), v); }

/* CreateString for len bytes; *data (write mode) is where the caller puts them. */
static inline Py_ssize_t vf_b_string(vf_bld *b, Py_ssize_t len, uint8_t **data)
{
    vf_b_prep(b, 4, len + 1);
    vf_b_place_u8(b, 0);
    b->off += len;
    *data = b->end ? VF_AT(b, b->off) : NULL;
    vf_b_place_u32(b, (uint32_t)len);
    return b->off;
}

/* CreateByteVector for len bytes; *data as above. */
static inline Py_ssize_t vf_b_bytes(vf_bld *b, Py_ssize_t len, uint8_t **data)
{
    vf_b_prep(b, 4, len);
    b->off += len;
    *data = b->end ? VF_AT(b, b->off) : NULL;
    vf_b_place_u32(b, (uint32_t)len);
    return b->off;
}

/* StartVector(4, n, 4): the caller then prepends n uoffsets and calls vf_b_end_vector. */
static inline void vf_b_start_offsets(vf_bld *b, Py_ssize_t n)
{
    vf_b_prep(b, 4, 4 * n);
    vf_b_prep(b, 4, 4 * n);
}

static inline void vf_b_uoffset(vf_bld *b, Py_ssize_t target)
{
    vf_b_prep(b, 4, 0);
    vf_b_place_u32(b, (uint32_t)(b->off - target + 4));
}

static inline Py_ssize_t vf_b_end_vector(vf_bld *b, Py_ssize_t n)
{
    vf_b_place_u32(b, (uint32_t)n);
    return b->off;
}

static inline void vf_b_start_object(vf_bld *b, int nfields)
{
    int i;
    b->nfields = nfields;
    for (i = 0; i < nfields; i++) b->vt[i] = 0;
    b->object_end = b->off;
}

static inline void vf_b_slot_u8(vf_bld *b, int slot, uint8_t v) { vf_b_prep(b, 1, 0); vf_b_place_u8(b, v); b->vt[slot] = b->off; }
static inline void vf_b_slot_u16(vf_bld *b, int slot, uint16_t v) { vf_b_prep(b, 2, 0); vf_b_place_u16(b, v); b->vt[slot] = b->off; }
static inline void vf_b_slot_u32(vf_bld *b, int slot, uint32_t v) { vf_b_prep(b, 4, 0); vf_b_place_u32(b, v); b->vt[slot] = b->off; }
static inline void vf_b_slot_u64(vf_bld *b, int slot, uint64_t v) { vf_b_prep(b, 8, 0); vf_b_place_u64(b, v); b->vt[slot] = b->off; }
static inline void vf_b_slot_ref(vf_bld *b, int slot, Py_ssize_t target) { vf_b_uoffset(b, target); b->vt[slot] = b->off; }

/* EndObject (WriteVtable); returns the object's offset. */
static Py_ssize_t vf_b_end_object(vf_bld *b)
{
    Py_ssize_t obj, key[VF_MAX_FIELDS + 1];
    int i, k = 0, trim = 1, trailing = 0, found = -1;
    vf_b_prep(b, 4, 0);
    vf_b_place_u32(b, 0); /* the soffset, filled in below */
    obj = b->off;
    for (i = b->nfields - 1; i >= 0; i--) {
        if (b->vt[i] == 0) {
            if (trim) { trailing++; continue; }
            key[k++] = 0;
        } else {
            key[k++] = obj - b->vt[i];
            trim = 0;
        }
    }
    key[k++] = obj - b->object_end;
    for (i = 0; i < b->nvtables && found < 0; i++) {
        if (b->vt_len[i] == k && memcmp(b->vt_key[i], key, sizeof(Py_ssize_t) * (size_t)k) == 0)
            found = i;
    }
    if (found >= 0) {
        if (b->end) vf_wr_u32(VF_AT(b, obj), (uint32_t)(int32_t)(b->vt_off[found] - obj));
        return obj;
    }
    for (i = 0; i < k - 1; i++) { vf_b_prep(b, 2, 0); vf_b_place_u16(b, (uint16_t)key[i]); }
    vf_b_prep(b, 2, 0);
    vf_b_place_u16(b, (uint16_t)key[k - 1]);
    vf_b_prep(b, 2, 0);
    vf_b_place_u16(b, (uint16_t)((b->nfields - trailing + 2) * 2));
    if (b->end) vf_wr_u32(VF_AT(b, obj), (uint32_t)(int32_t)(b->off - obj));
    if (b->nvtables < VF_MAX_VTABLES) {
        memcpy(b->vt_key[b->nvtables], key, sizeof(Py_ssize_t) * (size_t)k);
        b->vt_len[b->nvtables] = k;
        b->vt_off[b->nvtables] = b->off;
        b->nvtables++;
    }
    return obj;
}

/* Finish(root); returns the total size of the FlatBuffers bytes. */
static inline Py_ssize_t vf_b_finish(vf_bld *b, Py_ssize_t root)
{
    vf_b_prep(b, b->minalign, 4);
    vf_b_uoffset(b, root);
    return b->off;
}

/* ------------------------------------------------------------ UTF-8 rules */

/* Length (2..4) of the valid multi-byte UTF-8 sequence at p, else 0.  With
 * surrogates set, ED A0..BF xx (an encoded lone surrogate) is accepted too,
 * exactly what Python's "surrogatepass" decoding accepts. */
static inline int vf_utf8_seq(const uint8_t *p, Py_ssize_t avail, int surrogates)
{
    uint8_t c = p[0];
    if (c >= 0xC2 && c <= 0xDF) return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;
        if (c == 0xED && p[1] >= 0xA0 && !surrogates) return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;
        if (c == 0xF4 && p[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

static inline uint8_t *vf_put_utf8(uint8_t *o, Py_UCS4 c)
{
    if (c < 0x80) { *o++ = (uint8_t)c; }
    else if (c < 0x800) { *o++ = (uint8_t)(0xC0 | (c >> 6)); *o++ = (uint8_t)(0x80 | (c & 0x3F)); }
    else if (c < 0x10000) {
        *o++ = (uint8_t)(0xE0 | (c >> 12)); *o++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        *o++ = (uint8_t)(0x80 | (c & 0x3F));
    } else {
        *o++ = (uint8_t)(0xF0 | (c >> 18)); *o++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        *o++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F)); *o++ = (uint8_t)(0x80 | (c & 0x3F));
    }
    return o;
}

/* ------------------------------------------------------------ JSON escape */

/* Bytes json.JSONEncoder(ensure_ascii=False) emits for ASCII byte c. */
static inline int vf_esc_len(uint8_t c)
{
    if (c >= 0x20) return (c == '"' || c == '\\') ? 2 : 1;
    return (c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r') ? 2 : 6;
}

static inline uint8_t *vf_esc_put(uint8_t *o, uint8_t c)
{
    static const char hex[] = "0123456789abcdef";
    if (c >= 0x20 && c != '"' && c != '\\') { *o++ = c; return o; }
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    default:
        *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = (uint8_t)hex[c >> 4]; *o++ = (uint8_t)hex[c & 15];
    }
    return o;
}

/* Index of the first byte at or after i that is '"', '\\', < 0x20 or >= 0x80,
 * or n.  Those are the only bytes either JSON direction must look at. */
static inline Py_ssize_t vf_find_special(const uint8_t *p, Py_ssize_t i, Py_ssize_t n)
{
#if defined(VF_SSE2)
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), sp = _mm_set1_epi8(0x20);
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* signed compare: bytes >= 0x80 are negative, so "< 0x20" flags them too */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)),
                                 _mm_cmplt_epi8(v, sp));
        int mask = _mm_movemask_epi8(m);
        if (mask) return i + vf_ctz32((unsigned int)mask);
        i += 16;
    }
#elif defined(VF_SWAR)
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (i + 8 <= n) {
        uint64_t w, lt, qq, bb, m;
        memcpy(&w, p + i, 8);
        lt = (w - ones * 0x20) & ~w;
        qq = w ^ (ones * 0x22); qq = (qq - ones) & ~qq;
        bb = w ^ (ones * 0x5C); bb = (bb - ones) & ~bb;
        m = (lt | qq | bb | w) & highs;
        if (m) return i + (__builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') return i;
        i++;
    }
    return n;
}

/* Escaped size of ASCII text. */
static Py_ssize_t vf_ascii_json_size(const uint8_t *p, Py_ssize_t n)
{
    Py_ssize_t i = 0, size = n;
    for (;;) {
        i = vf_find_special(p, i, n);
        if (i >= n) return size;
        size += vf_esc_len(p[i]) - 1;
        i++;
    }
}

static uint8_t *vf_ascii_json_write(const uint8_t *p, Py_ssize_t n, uint8_t *o)
{
    Py_ssize_t i = 0, j;
    for (;;) {
        j = vf_find_special(p, i, n);
        memcpy(o, p + i, (size_t)(j - i));
        o += j - i;
        if (j >= n) return o;
        o = vf_esc_put(o, p[j]);
        i = j + 1;
    }
}

/* Escaped size of UTF-8 bytes, or -1 when they are not strictly valid UTF-8. */
static Py_ssize_t vf_utf8_json_size(const uint8_t *p, Py_ssize_t n)
{
    Py_ssize_t i = 0, size = n;
    int k;
    for (;;) {
        i = vf_find_special(p, i, n);
        if (i >= n) return size;
        if (p[i] < 0x80) { size += vf_esc_len(p[i]) - 1; i++; continue; }
        k = vf_utf8_seq(p + i, n - i, 0);
        if (!k) return -1;
        i += k;
    }
}

/* Write validated UTF-8 bytes JSON-escaped. */
static uint8_t *vf_utf8_json_write(const uint8_t *p, Py_ssize_t n, uint8_t *o)
{
    Py_ssize_t i = 0, j;
    for (;;) {
        j = vf_find_special(p, i, n);
        memcpy(o, p + i, (size_t)(j - i));
        o += j - i;
        if (j >= n) return o;
        if (p[j] < 0x80) { o = vf_esc_put(o, p[j]); i = j + 1; continue; }
        i = j + vf_utf8_seq(p + j, n - j, 0);
        while (j < i) *o++ = p[j++];
    }
}

/* UTF-8 size of a str, JSON-escaped when json is set; -1 if the str holds a
 * surrogate (the pure twin's .encode("utf-8") would raise). */
static Py_ssize_t vf_str_size(PyObject *s, int json)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), i, size = 0;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (PyUnicode_IS_ASCII(s)) return json ? vf_ascii_json_size((const uint8_t *)data, n) : n;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = (const Py_UCS1 *)data;
        for (i = 0; i < n; i++) size += d[i] < 0x80 ? (json ? vf_esc_len(d[i]) : 1) : 2;
    } else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *d = (const Py_UCS2 *)data;
        for (i = 0; i < n; i++) {
            Py_UCS2 c = d[i];
            if (c < 0x80) size += json ? vf_esc_len((uint8_t)c) : 1;
            else if (c < 0x800) size += 2;
            else if (c >= 0xD800 && c <= 0xDFFF) return -1;
            else size += 3;
        }
    } else {
        const Py_UCS4 *d = (const Py_UCS4 *)data;
        for (i = 0; i < n; i++) {
            Py_UCS4 c = d[i];
            if (c < 0x80) size += json ? vf_esc_len((uint8_t)c) : 1;
            else if (c < 0x800) size += 2;
            else if (c >= 0xD800 && c <= 0xDFFF) return -1;
            else if (c < 0x10000) size += 3;
            else size += 4;
        }
    }
    return size;
}

/* Write a str sized by vf_str_size (which must not have returned -1).  With
 * upper set, ASCII a-z are upper-cased (str.upper on ASCII text). */
static uint8_t *vf_str_write(PyObject *s, uint8_t *o, int json, int upper)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), i;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (PyUnicode_IS_ASCII(s) && !upper) {
        if (json) return vf_ascii_json_write((const uint8_t *)data, n, o);
        memcpy(o, data, (size_t)n);
        return o + n;
    }
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            if (upper && c >= 'a' && c <= 'z') c -= 32;
            if (json) o = vf_esc_put(o, (uint8_t)c);
            else *o++ = (uint8_t)c;
        } else {
            o = vf_put_utf8(o, c);
        }
    }
    return o;
}

/* ---------------------------------------------------------- JSON unescape */

static inline int vf_hex4(const uint8_t *p, Py_UCS4 *out)
{
    Py_UCS4 v = 0;
    int k;
    for (k = 0; k < 4; k++) {
        uint8_t c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (Py_UCS4)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (Py_UCS4)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (Py_UCS4)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* What a two-character escape \X decodes to; 0 when X is not one of them. */
static const uint8_t vf_simple_unescape[256] = {
    ['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
    ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
};

/* Handle the \uXXXX escape at p[i] (p[i] == '\\', p[i+1] == 'u'); returns the index
 * after it (after both halves of a joined surrogate pair), or -1 (json would reject).
 * Writes the code point as UTF-8; a lone surrogate as its 3-byte form, which is what
 * .encode("utf-8", "surrogatepass") gives. */
static inline Py_ssize_t vf_unescape_u(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, uint8_t **op)
{
    Py_UCS4 u, u2;
    if (i + 6 > n || !vf_hex4(p + i + 2, &u)) return -1;
    i += 6;
    /* json joins \uD8xx\uDCxx into one code point (it needs one more char after the
     * pair, always there in a valid document); any other second escape is decoded on
     * its own */
    if (u >= 0xD800 && u <= 0xDBFF && i + 6 < n && p[i] == '\\' && p[i + 1] == 'u') {
        if (!vf_hex4(p + i + 2, &u2)) return -1;
        if (u2 >= 0xDC00 && u2 <= 0xDFFF) {
            u = 0x10000 + (((u - 0xD800) << 10) | (u2 - 0xDC00));
            i += 6;
        }
    }
    *op = vf_put_utf8(*op, u);
    return i;
}

/*
 * AVX-512 VBMI2 unescaping, chosen at run time (GCC/Clang on x86-64; every other
 * build or CPU uses the SSE2 path below unchanged).  A 64-byte window costs the same
 * whatever its escape count: the escape backslashes are found with simdjson's
 * odd/even backslash-run arithmetic, the escaped letters b f n r t are replaced under
 * masks, and vpcompressb drops the backslashes.  Windows start at a byte that is not
 * escaped (the start of the string, or just after a handled escape), so no state
 * carries over; a window whose last byte is an escape backslash stops one byte short.
 * Anything else -- an unescaped quote (the end), a control character, \u or an
 * invalid escape -- ends the vector step just before it, and the caller handles that
 * one byte or escape with the scalar rules.
 */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(VF_NO_AVX512)
#include <immintrin.h>
#define VF_AVX512 1
#define VF_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi2,popcnt,bmi")))

static int vf_avx512_state = -1;

static inline int vf_use_avx512(void)
{
    if (vf_avx512_state < 0) {
        __builtin_cpu_init();
        vf_avx512_state = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vbmi2");
    }
    return vf_avx512_state;
}

/* Unescape whole windows from p[i] while i + 64 <= n; returns where it stopped:
 * at a byte the scalar rules must handle, or where fewer than 64 bytes remain.
 * Writes at *op (64-byte stores; the output never runs ahead of the input). */
static VF_AVX512_TARGET Py_ssize_t vf_unescape_avx512(const uint8_t *p, Py_ssize_t i, Py_ssize_t n,
                                                      uint8_t **op, uint8_t *hi)
{
    const uint64_t odd = 0xAAAAAAAAAAAAAAAAULL;
    const __m512i vq = _mm512_set1_epi8('"'), vb = _mm512_set1_epi8('\\'), vc = _mm512_set1_epi8(0x1F);
    __m512i seen = _mm512_setzero_si512();
    uint8_t *o = *op;
    while (i + 64 <= n) {
        __m512i v = _mm512_loadu_si512((const void *)(p + i));
        uint64_t bs = _mm512_cmpeq_epi8_mask(v, vb);
        uint64_t qt = _mm512_cmpeq_epi8_mask(v, vq);
        uint64_t ct = _mm512_cmple_epu8_mask(v, vc);
        uint64_t code, esc, escaped, eb, ef, en, er, et, valid, hard, keep, lim;
        int len = 64, stop = 0;
        seen = _mm512_or_si512(seen, v);
        if (!(bs | qt | ct)) {
            _mm512_storeu_si512((void *)o, v);
            o += 64;
            i += 64;
            continue;
        }
        code = (((bs << 1) | odd) - bs) ^ odd;
        esc = code & bs;      /* backslashes that start an escape */
        escaped = code ^ bs;  /* the byte after each of them      */
        eb = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('b'));
        ef = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('f'));
        en = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('n'));
        er = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('r'));
        et = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('t'));
        valid = qt | bs | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('/')) | eb | ef | en | er | et;
        hard = (qt & ~escaped) | ct | ((escaped & ~valid) >> 1);
        if (esc >> 63) len = 63;
        lim = len == 64 ? ~(uint64_t)0 : (((uint64_t)1 << len) - 1);
        if (hard & lim) {
            len = (int)_tzcnt_u64(hard);
            lim = ((uint64_t)1 << len) - 1;
            stop = 1;
        }
        escaped &= lim;
        v = _mm512_mask_mov_epi8(v, escaped & eb, _mm512_set1_epi8('\b'));
        v = _mm512_mask_mov_epi8(v, escaped & ef, _mm512_set1_epi8('\f'));
        v = _mm512_mask_mov_epi8(v, escaped & en, _mm512_set1_epi8('\n'));
        v = _mm512_mask_mov_epi8(v, escaped & er, _mm512_set1_epi8('\r'));
        v = _mm512_mask_mov_epi8(v, escaped & et, _mm512_set1_epi8('\t'));
        keep = ~esc & lim;
        _mm512_storeu_si512((void *)o, _mm512_maskz_compress_epi8(keep, v));
        o += _mm_popcnt_u64(keep);
        i += len;
        if (stop) break;
    }
    if (_mm512_movepi8_mask(seen)) *hi = 0x80;
    *op = o;
    return i;
}
#endif

/* 1 when the AVX-512 path is in use; vf_simd_allow(0) turns it off (tests use it to
 * run the SSE2 path on the same machine), vf_simd_allow(1) re-detects. */
static int vf_simd_allow(int avx512)
{
#if defined(VF_AVX512)
    vf_avx512_state = -1;
    if (!avx512) vf_avx512_state = 0;
    return vf_use_avx512();
#else
    (void)avx512;
    return 0;
#endif
}

/*
 * Decode the JSON string whose first character (after the opening quote) is
 * p[i], writing its bytes to out.  out must have room for (n - i) +
 * VF_UNESCAPE_SLACK bytes: a JSON string never decodes longer than its source.
 * Returns the index just past the closing quote, or -1 for anything json.loads
 * would reject (or that this path does not model); the caller then defers to
 * the pure twin.
 *
 * Only '"', '\\' and control characters stop the copy loop.  Bytes >= 0x80 are
 * copied as they are and NOT validated here: escapes only ever produce complete
 * sequences (never a continuation byte), so the output is valid UTF-8 (with
 * surrogates allowed) exactly when the raw parts are, and the caller validates
 * the output once (vf_utf8_valid_sp, or the str decoder) -- only when *high says
 * a raw byte >= 0x80 may have been copied (false positives are harmless).
 */
static Py_ssize_t vf_json_unescape(const uint8_t *p, Py_ssize_t i, Py_ssize_t n, uint8_t *out,
                                   Py_ssize_t *outlen, int *high)
{
    uint8_t *o = out;
    uint8_t c, r, hi = 0;
#if defined(VF_AVX512)
    if (vf_use_avx512()) {
        while (i + 64 <= n) {
            i = vf_unescape_avx512(p, i, n, &o, &hi);
            if (i + 64 > n) break;
            /* p[i] is what the vector step leaves to the scalar rules */
            c = p[i];
            if (c == '"') { *outlen = o - out; *high = hi != 0; return i + 1; }
            if (c != '\\') return -1; /* raw control character */
            r = vf_simple_unescape[p[i + 1]];
            if (r) { *o++ = r; i += 2; continue; }
            if (p[i + 1] != 'u') return -1;
            i = vf_unescape_u(p, i, n, &o);
            if (i < 0) return -1;
        }
    }
#endif
#if defined(VF_SSE2)
    /* Every special byte of a 16-byte block is handled from one mask, so the next
     * load does not wait on a ctz per escape (escape-dense SSE bodies have one every
     * few bytes).  Segments are copied with one unaligned 16-byte load/store each;
     * i + 32 <= n keeps every load inside the input. */
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    __m128i seen = _mm_setzero_si128(); /* OR of every block: any byte >= 0x80? */
    while (i + 32 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        seen = _mm_or_si128(seen, v);
        __m128i mm = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)),
                                  _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));
        unsigned int m = (unsigned int)_mm_movemask_epi8(mm);
        int pos = 0, k;
        if (!m) { _mm_storeu_si128((__m128i *)o, v); i += 16; o += 16; continue; }
        for (;;) {
            k = vf_ctz32(m);
            _mm_storeu_si128((__m128i *)o, _mm_loadu_si128((const __m128i *)(p + i + pos)));
            o += k - pos;
            c = p[i + k];
            if (c == '\\') {
                r = vf_simple_unescape[p[i + k + 1]];
                if (r) {
                    *o++ = r;
                    pos = k + 2;
                    m &= ~0u << pos; /* also drops an escaped '"' or '\\' */
                    if (!m) break;
                    continue;
                }
                if (p[i + k + 1] != 'u') return -1;
                i = vf_unescape_u(p, i + k, n, &o);
                if (i < 0) return -1;
                pos = -1; /* reload at the new i */
                break;
            }
            if (c == '"') {
                *outlen = o - out;
                *high = hi || _mm_movemask_epi8(seen) != 0;
                return i + k + 1;
            }
            return -1; /* raw control character: json rejects it */
        }
        if (pos < 0) continue;
        if (pos < 16) {
            _mm_storeu_si128((__m128i *)o, _mm_loadu_si128((const __m128i *)(p + i + pos)));
            o += 16 - pos;
            i += 16;
        } else {
            i += pos;
        }
    }
    hi |= _mm_movemask_epi8(seen) ? 0x80 : 0;
#endif
    while (i < n) {
        c = p[i];
        if (c == '"') { *outlen = o - out; *high = hi != 0; return i + 1; }
        if (c == '\\') {
            if (i + 1 >= n) return -1;
            r = vf_simple_unescape[p[i + 1]];
            if (r) { *o++ = r; i += 2; continue; }
            if (p[i + 1] != 'u') return -1;
            i = vf_unescape_u(p, i, n, &o);
            if (i < 0) return -1;
            continue;
        }
        if (c < 0x20) return -1;
        hi |= c & 0x80;
        *o++ = c;
        i++;
    }
    return -1; /* unterminated */
}

/* Valid UTF-8 with encoded surrogates allowed: what bytes.decode("utf-8",
 * "surrogatepass") accepts. */
static int vf_utf8_valid_sp(const uint8_t *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    int k;
    while (i < n) {
#if defined(VF_SSE2)
        while (i + 16 <= n && !_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(p + i))))
            i += 16;
#endif
        while (i < n && p[i] < 0x80) i++;
        if (i >= n) return 1;
        k = vf_utf8_seq(p + i, n - i, 1);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static inline Py_ssize_t vf_skip_ws(const uint8_t *p, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t')) i++;
    return i;
}

/* Build a NamedTuple (tuple subclass) instance without its Python-level
 * __new__: allocate the subtype and fill the slots, as tuple_subtype_new
 * does.  Steals the references in items. */
static PyObject *vf_new_named(PyObject *cls, Py_ssize_t n, PyObject **items)
{
    PyTypeObject *t = (PyTypeObject *)cls;
    Py_ssize_t i;
#if PY_VERSION_HEX >= 0x030E0000
    /* newer tuples carry more than their items (a cached hash): go through tuple.__new__ */
    PyObject *tup = PyTuple_New(n), *args, *r;
    if (!tup) {
        for (i = 0; i < n; i++) Py_DECREF(items[i]);
        return NULL;
    }
    for (i = 0; i < n; i++) PyTuple_SET_ITEM(tup, i, items[i]);
    args = PyTuple_Pack(1, tup);
    Py_DECREF(tup);
    if (!args) return NULL;
    r = PyTuple_Type.tp_new(t, args, NULL);
    Py_DECREF(args);
    return r;
#else
    PyObject *r = t->tp_alloc(t, n);
    if (!r) {
        for (i = 0; i < n; i++) Py_DECREF(items[i]);
        return NULL;
    }
    for (i = 0; i < n; i++) PyTuple_SET_ITEM(r, i, items[i]);
    return r;
#endif
}

#endif /* VASTAR_CODEC_JSON_H */
