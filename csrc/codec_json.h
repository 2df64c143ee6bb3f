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
 *  3. NamedTuple construction without the Python-level __new__.
 *
 * The byte scanning and JSON unescaping live in vf_json_simd.h (no Python.h there),
 * with one implementation per instruction set chosen at run time (vf_simd.h).
 */
#ifndef VASTAR_CODEC_JSON_H
#define VASTAR_CODEC_JSON_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "vf_json_simd.h"

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
