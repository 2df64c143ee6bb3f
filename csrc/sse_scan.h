/*
 * sse_scan.h -- plain C scanning helpers for vastar_fast.sse._scanner_c.
 *
 * Everything here works on a read-only character buffer of one of three
 * widths: 1 byte (CPython's latin-1/ASCII str storage, or raw UTF-8 bytes),
 * 2 bytes (UCS-2 str storage) or 4 bytes (UCS-4 str storage).  Working on the
 * str's own storage means a str is never re-encoded or copied before it is
 * scanned.  No Python object is created here; the Cython module builds the
 * results from the spans these functions report.
 *
 * The JSON scanner validates a whole document with exactly the grammar that
 * CPython's json.loads accepts (including NaN / Infinity / -Infinity and the
 * strict "no raw control characters in strings" rule) while following the
 * path  top-level object -> "choices" -> [0] -> "delta" -> "content".  Cases
 * whose json.loads result depends on more than syntax (duplicate keys on the
 * path, escaped keys on the path, non-string content, very long integers,
 * very deep nesting) are reported as SSE_J_FALLBACK so the caller can defer
 * to json.loads itself and stay exactly equal to it.
 */
#ifndef VASTAR_SSE_SCAN_H
#define VASTAR_SSE_SCAN_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Result of sse_json_delta. */
#define SSE_J_NONE 0     /* invalid JSON, or content absent / null: None   */
#define SSE_J_STR 1      /* content is a JSON string at [start, end)        */
#define SSE_J_FALLBACK 2 /* ask json.loads (result depends on semantics)    */

/* Deeper documents go to json.loads, which owns the RecursionError rule. */
#define SSE_MAX_DEPTH 64
/* sys.set_int_max_str_digits() cannot go below 640, so shorter ints are safe. */
#define SSE_MAX_INT_DIGITS 640

typedef struct {
    Py_ssize_t start; /* first char of the content string (after the quote) */
    Py_ssize_t end;   /* index of the closing quote                        */
    int escaped;      /* the raw string contains backslash escapes         */
} sse_span;

/* A learned event template (see sse_tmpl_match): offsets into the buffer
 * being scanned.  lp == 0 means no template. */
typedef struct {
    Py_ssize_t tp; /* start of the template piece ("data: ...")            */
    Py_ssize_t lp; /* length up to and including the content's open quote */
    Py_ssize_t ts; /* index of the content's closing quote                 */
    Py_ssize_t ls; /* length from the closing quote to the piece's end     */
} sse_tmpl;

/* Path roles while walking the document. */
#define SSE_R_NONE 0
#define SSE_R_TOP 1
#define SSE_R_CHOICES 2
#define SSE_R_CHOICE0 3
#define SSE_R_DELTA 4
#define SSE_R_CONTENT 5

/* SWAR lane "ones" per character width: the word-at-a-time scans below read
 * 8 bytes with memcpy (unaligned-safe) and test all lanes at once.  The lane
 * order assumes a little-endian machine; big-endian builds use plain loops. */
#define SSE_ONES_1 0x0101010101010101ULL
#define SSE_ONES_2 0x0001000100010001ULL
#define SSE_ONES_4 0x0000000100000001ULL
#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_ARM64))
/* MSVC (and clang-cl) on x64 / ARM64, both little-endian: the same scans, with the
 * MSVC bit-scan intrinsic */
#include <intrin.h>
#define SSE_SWAR_OK 1
static __inline int sse_ctz64(unsigned long long m) { unsigned long i; _BitScanForward64(&i, m); return (int)i; }
#define SSE_CTZ64(m) sse_ctz64(m)
#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SSE_SWAR_OK 1
#define SSE_CTZ64(m) __builtin_ctzll(m)
#else
#define SSE_SWAR_OK 0
#define SSE_CTZ64(m) 0
#endif

static inline int sse_hexval(Py_UCS4 c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* ---- instantiate the width-specific code three times ------------------- */
#define SSE_T Py_UCS1
#define SSE_FN(name) name##_1
#define SSE_IS_UCS1 1
#include "sse_scan_tmpl.h"
#undef SSE_T
#undef SSE_FN
#undef SSE_IS_UCS1

#define SSE_T Py_UCS2
#define SSE_FN(name) name##_2
#define SSE_IS_UCS1 0
#include "sse_scan_tmpl.h"
#undef SSE_T
#undef SSE_FN
#undef SSE_IS_UCS1

#define SSE_T Py_UCS4
#define SSE_FN(name) name##_4
#define SSE_IS_UCS1 0
#include "sse_scan_tmpl.h"
#undef SSE_T
#undef SSE_FN
#undef SSE_IS_UCS1

/* ---- kind-dispatching entry points used by Cython ---------------------- */

/* Validate buf[start:end) as one JSON document and locate the delta content. */
static inline int sse_json_delta(int kind, const void *buf, Py_ssize_t start,
                                 Py_ssize_t end, sse_span *out) {
    switch (kind) {
    case 1: return sse_json_delta_1((const Py_UCS1 *)buf, start, end, out);
    case 2: return sse_json_delta_2((const Py_UCS2 *)buf, start, end, out);
    default: return sse_json_delta_4((const Py_UCS4 *)buf, start, end, out);
    }
}

/* Index of the first '\r' or '\n' in buf[pos:end), or end. */
static inline Py_ssize_t sse_find_eol(int kind, const void *buf, Py_ssize_t pos,
                                      Py_ssize_t end) {
    switch (kind) {
    case 1: return sse_find_eol_1((const Py_UCS1 *)buf, pos, end);
    case 2: return sse_find_eol_2((const Py_UCS2 *)buf, pos, end);
    default: return sse_find_eol_4((const Py_UCS4 *)buf, pos, end);
    }
}

/* Index of the first "\n\n" in buf[pos:end), or end. */
static inline Py_ssize_t sse_find_lflf(int kind, const void *buf, Py_ssize_t pos,
                                       Py_ssize_t end) {
    switch (kind) {
    case 1: return sse_find_lflf_1((const Py_UCS1 *)buf, pos, end);
    case 2: return sse_find_lflf_2((const Py_UCS2 *)buf, pos, end);
    default: return sse_find_lflf_4((const Py_UCS4 *)buf, pos, end);
    }
}

/* Decode the validated JSON string body buf[start:end) into out (which must
 * hold end - start code points); returns the number of code points written. */
static inline Py_ssize_t sse_unescape(int kind, const void *buf, Py_ssize_t start,
                                      Py_ssize_t end, Py_UCS4 *out) {
    switch (kind) {
    case 1: return sse_unescape_1((const Py_UCS1 *)buf, start, end, out);
    case 2: return sse_unescape_2((const Py_UCS2 *)buf, start, end, out);
    default: return sse_unescape_4((const Py_UCS4 *)buf, start, end, out);
    }
}

/* Match the template t at pos (see the template header); end of the piece
 * or -1. */
static inline Py_ssize_t sse_tmpl_match(int kind, const void *buf, Py_ssize_t pos,
                                        Py_ssize_t end, const sse_tmpl *t, sse_span *out) {
    switch (kind) {
    case 1: return sse_tmpl_match_1((const Py_UCS1 *)buf, pos, end, t, out);
    case 2: return sse_tmpl_match_2((const Py_UCS2 *)buf, pos, end, t, out);
    default: return sse_tmpl_match_4((const Py_UCS4 *)buf, pos, end, t, out);
    }
}

/* Whole-document template for 1-byte (UTF-8) buffers: is s[0:n) the text
 * P + one valid JSON string body + S, where P (ending with the content's open
 * quote) and S (from its closing quote) were cut from a document for which
 * sse_json_delta_1 returned SSE_J_STR?  Then sse_json_delta_1 on s[0:n)
 * returns SSE_J_STR with the span filled here (same argument as
 * sse_tmpl_match: the scanner's decisions depend on P, the validity of the
 * string body, and S only).  1 on a match, else 0. */
static inline int sse_doc_tmpl_match(const Py_UCS1 *s, Py_ssize_t n, const Py_UCS1 *P,
                                     Py_ssize_t lp, const Py_UCS1 *S, Py_ssize_t ls,
                                     sse_span *out) {
    sse_ctx_1 c;
    int esc = 0;
    Py_ssize_t q;
    if (lp <= 0 || ls <= 0 || lp + ls > n) return 0;
    if (memcmp(s, P, (size_t)lp) != 0) return 0;
    c.s = s;
    c.n = n;
    c.i = lp - 1; /* the opening quote */
    c.fallback = 0;
    c.found = 0;
    if (!sse_string_1(&c, &esc)) return 0;
    q = c.i - 1; /* the closing quote */
    if (q + ls != n) return 0;
    if (memcmp(s + q, S, (size_t)ls) != 0) return 0;
    out->start = lp;
    out->end = q;
    out->escaped = esc;
    return 1;
}

#endif /* VASTAR_SSE_SCAN_H */
