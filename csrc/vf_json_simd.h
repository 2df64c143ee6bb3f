/*
 * vf_json_simd.h -- JSON string scanning and unescaping on raw bytes, one implementation
 * per vector instruction set, the one in use chosen at run time (vf_simd.h).
 *
 * No Python.h: the Cython codec includes this through codec_json.h, and the C parity
 * program (tools/simd_parity.c) includes it alone to check every path against the
 * scalar one on the same inputs, natively and under qemu-user for AArch64.
 *
 * Unescaping has the semantics of json.loads(bytes) (which decodes the document with
 * "surrogatepass") followed by .encode("utf-8", "surrogatepass"); anything the fast
 * path does not model returns -1 and the Cython caller defers to the pure twin.
 *
 * Paths:
 *  - scalar: a byte loop.
 *  - sse2: 16-byte blocks, every special byte of a block handled from one mask.
 *  - avx512 (VBMI2), avx2, neon: 64-byte windows.  The escape backslashes of a window
 *    are found with simdjson's odd/even backslash-run arithmetic on 64-bit masks, the
 *    escaped letters b f n r t are replaced under a mask, and the backslashes are
 *    dropped: by vpcompressb (AVX-512), or by a byte shuffle per 8-byte group from a
 *    256-entry table (AVX2 pshufb, NEON tbl).  Windows start at a byte that is not
 *    escaped (the start of the string, or just after a handled escape), so no state
 *    carries over; a window whose last byte is an escape backslash stops one byte
 *    short.  Anything else -- an unescaped quote (the end), a control character, \u or
 *    an invalid escape -- ends the vector step just before it, and the caller handles
 *    that one byte or escape with the scalar rules.
 */
#ifndef VASTAR_VF_JSON_SIMD_H
#define VASTAR_VF_JSON_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vf_simd.h"

#if defined(Py_PYTHON_H)
typedef Py_ssize_t vf_ssize;
#else
typedef ptrdiff_t vf_ssize;
#endif

/* Slack the unescaper may write past its logical end (one 16-byte store). */
#define VF_UNESCAPE_SLACK 16

#if !defined(VF_SSE2) && !defined(VF_NEON) && (defined(__GNUC__) || defined(__clang__)) && \
    defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VF_SWAR 1
#endif

/* ------------------------------------------------------------ UTF-8 rules */

/* Length (2..4) of the valid multi-byte UTF-8 sequence at p, else 0.  With
 * surrogates set, ED A0..BF xx (an encoded lone surrogate) is accepted too,
 * exactly what Python's "surrogatepass" decoding accepts. */
static inline int vf_utf8_seq(const uint8_t *p, vf_ssize avail, int surrogates)
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

static inline uint8_t *vf_put_utf8(uint8_t *o, uint32_t c)
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

/* ------------------------------------------------------- special byte scan */

/* Index of the first byte at or after i that is '"', '\\', < 0x20 or >= 0x80,
 * or n.  Those are the only bytes either JSON direction must look at. */
static inline vf_ssize vf_find_special(const uint8_t *p, vf_ssize i, vf_ssize n)
{
#if defined(VF_SSE2)
    if (vf_simd_level != VF_SIMD_SCALAR) {
        const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), sp = _mm_set1_epi8(0x20);
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            /* signed compare: bytes >= 0x80 are negative, so "< 0x20" flags them too */
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)),
                                     _mm_cmplt_epi8(v, sp));
            int mask = _mm_movemask_epi8(m);
            if (mask) return i + vf_ctz32((uint32_t)mask);
            i += 16;
        }
    }
#elif defined(VF_NEON)
    if (vf_simd_level != VF_SIMD_SCALAR) {
        const uint8x16_t q = vdupq_n_u8('"'), b = vdupq_n_u8('\\'), sp = vdupq_n_u8(0x20),
                         hi = vdupq_n_u8(0x80);
        while (i + 16 <= n) {
            uint8x16_t v = vld1q_u8(p + i);
            uint8x16_t m = vorrq_u8(vorrq_u8(vceqq_u8(v, q), vceqq_u8(v, b)),
                                    vorrq_u8(vcltq_u8(v, sp), vcgeq_u8(v, hi)));
            if (vmaxvq_u8(m)) {
                /* 4 bits per byte: shift-narrow the 16-bit lanes by 4 */
                uint64_t nib = vget_lane_u64(vreinterpret_u64_u8(vshrn_n_u16(vreinterpretq_u16_u8(m), 4)), 0);
                return i + (vf_ctz64(nib) >> 2);
            }
            i += 16;
        }
    }
#elif defined(VF_SWAR)
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    if (vf_simd_level != VF_SIMD_SCALAR) {
        while (i + 8 <= n) {
            uint64_t w, lt, qq, bb, m;
            memcpy(&w, p + i, 8);
            lt = (w - ones * 0x20) & ~w;
            qq = w ^ (ones * 0x22); qq = (qq - ones) & ~qq;
            bb = w ^ (ones * 0x5C); bb = (bb - ones) & ~bb;
            m = (lt | qq | bb | w) & highs;
            if (m) return i + (vf_ctz64(m) >> 3);
            i += 8;
        }
    }
#endif
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') return i;
        i++;
    }
    return n;
}

/* ---------------------------------------------------------- JSON unescape */

static inline int vf_hex4(const uint8_t *p, uint32_t *out)
{
    uint32_t v = 0;
    int k;
    for (k = 0; k < 4; k++) {
        uint8_t c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
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
static inline vf_ssize vf_unescape_u(const uint8_t *p, vf_ssize i, vf_ssize n, uint8_t **op)
{
    uint32_t u, u2;
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

/* The mask arithmetic every 64-byte-window path shares.  Inputs: bit k of bs / qt / ct
 * / valid says byte k of the window is a backslash / a quote / a control character / one
 * of the bytes that may follow an escape backslash ('"' '\\' '/' b f n r t); carry says
 * byte 0 is escaped by a backslash that ended the previous window.  Outputs: *escaped,
 * the bytes right after an escape backslash; *keep, the bytes to write (all but the
 * escape backslashes).  Returns the "hard" bytes: non-zero means the step ends at the
 * lowest one, which the scalar rules handle (an unescaped quote, a control character,
 * the backslash of \u or of an invalid escape). */
static inline uint64_t vf_window_escapes(uint64_t bs, uint64_t carry, uint64_t *keep)
{
    const uint64_t odd = 0xAAAAAAAAAAAAAAAAULL;
    uint64_t code;
    bs &= ~carry; /* an escaped backslash starts nothing */
    code = (((bs << 1) | odd) - bs) ^ odd;
    *keep = ~(code & bs);        /* all but the backslashes that start an escape */
    return (code ^ bs) | carry;  /* the byte after each of them */
}

static inline uint64_t vf_window_masks(uint64_t bs, uint64_t qt, uint64_t ct, uint64_t valid,
                                       uint64_t carry, uint64_t *escaped, uint64_t *keep)
{
    uint64_t after = vf_window_escapes(bs, carry, keep);
    *escaped = after;
    return (qt & ~after) | ct | ((after & ~valid) >> 1);
}

/* After vf_window_masks: how much of the window the step consumes (*len), and whether
 * it stops there (returned).  A window whose last byte is an escape backslash carries
 * the escape into the next window (*carry) when the byte after the window is one of
 * the two-character escapes; otherwise it stops just before that backslash.  The usual
 * window consumes 64 bytes without a data dependency, so the next load need not wait. */
static inline int vf_window_end(const uint8_t *p, vf_ssize i, vf_ssize n, uint64_t hard,
                                uint64_t *escaped, uint64_t *keep, int *len, uint64_t *carry)
{
    if (hard) {
        uint64_t lim;
        *len = vf_ctz64(hard);
        lim = ((uint64_t)1 << *len) - 1;
        *escaped &= lim;
        *keep &= lim;
        *carry = 0;
        return 1;
    }
    *carry = 0;
    if (!(*keep >> 63)) { /* the last byte is an escape backslash */
        if (i + 64 < n && vf_simple_unescape[p[i + 64]]) {
            *carry = 1;
        } else {
            *len = 63;
            return 1;
        }
    }
    *len = 64;
    return 0;
}

/* The escape a window step carried past its last window, decoded. */
#define VF_WINDOW_FINISH(carry, p, i, o)                 \
    do {                                                 \
        if (carry) *(o)++ = vf_simple_unescape[(p)[(i)++]]; \
    } while (0)

#if defined(VF_AVX512)
/* Unescape whole windows from p[i] while i + 64 <= n; returns where it stopped:
 * at a byte the scalar rules must handle, or where fewer than 64 bytes remain.
 * Writes at *op (64-byte stores; the output never runs ahead of the input). */
static VF_AVX512_TARGET vf_ssize vf_unescape_avx512(const uint8_t *p, vf_ssize i, vf_ssize n,
                                                    uint8_t **op, uint8_t *hi)
{
    const __m512i vq = _mm512_set1_epi8('"'), vb = _mm512_set1_epi8('\\'), vc = _mm512_set1_epi8(0x1F);
    __m512i seen = _mm512_setzero_si512();
    uint64_t carry = 0;
    uint8_t *o = *op;
    while (i + 64 <= n) {
        __m512i v = _mm512_loadu_si512((const void *)(p + i));
        uint64_t bs = _mm512_cmpeq_epi8_mask(v, vb);
        uint64_t qt = _mm512_cmpeq_epi8_mask(v, vq);
        uint64_t ct = _mm512_cmple_epu8_mask(v, vc);
        uint64_t eb, ef, en, er, et, valid, escaped, keep, hard;
        int len, stop;
        seen = _mm512_or_si512(seen, v);
        if (!(bs | qt | ct | carry)) {
            _mm512_storeu_si512((void *)o, v);
            o += 64;
            i += 64;
            continue;
        }
        eb = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('b'));
        ef = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('f'));
        en = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('n'));
        er = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('r'));
        et = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('t'));
        valid = qt | bs | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('/')) | eb | ef | en | er | et;
        hard = vf_window_masks(bs, qt, ct, valid, carry, &escaped, &keep);
        stop = vf_window_end(p, i, n, hard, &escaped, &keep, &len, &carry);
        v = _mm512_mask_mov_epi8(v, escaped & eb, _mm512_set1_epi8('\b'));
        v = _mm512_mask_mov_epi8(v, escaped & ef, _mm512_set1_epi8('\f'));
        v = _mm512_mask_mov_epi8(v, escaped & en, _mm512_set1_epi8('\n'));
        v = _mm512_mask_mov_epi8(v, escaped & er, _mm512_set1_epi8('\r'));
        v = _mm512_mask_mov_epi8(v, escaped & et, _mm512_set1_epi8('\t'));
        _mm512_storeu_si512((void *)o, _mm512_maskz_compress_epi8(keep, v));
        o += _mm_popcnt_u64(keep);
        if (stop) {
            i += len;
            break;
        }
        i += 64;
    }
    VF_WINDOW_FINISH(carry, p, i, o);
    if (_mm512_movepi8_mask(seen)) *hi = 0x80;
    *op = o;
    return i;
}
#endif

/* The escaped letters b f n r t by key (c >> 1) & 15 (b 1, f 3, n 7, r 9, t 10), and
 * what they decode to.  Unused slots hold 'b', whose own key is 1, so "the table at
 * c's key equals c" holds exactly for the five letters. */
#define VF_LETTERS 'b', 'b', 'b', 'f', 'b', 'b', 'b', 'n', 'b', 'r', 't', 'b', 'b', 'b', 'b', 'b'
#define VF_DECODED 0, '\b', 0, '\f', 0, 0, 0, '\n', 0, '\r', '\t', 0, 0, 0, 0, 0

#if defined(VF_AVX2)
/* Bit k of m -> byte k all ones: bits 0-31 for the first 32 bytes (half 0), bits 32-63
 * for the next 32 (half 1).  m is one 64-bit broadcast shared by both halves. */
static VF_AVX2_TARGET inline __m256i vf_avx2_expand(__m256i m, int half)
{
    const __m256i shuf0 = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                           2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i shuf1 = _mm256_setr_epi8(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6,
                                           6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(m, half ? shuf1 : shuf0);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Write the bytes of v whose keep bit is set, in order, at o (8-byte stores): each
 * 8-byte group is packed by a pshufb from vf_pack8. */
static VF_AVX2_TARGET inline uint8_t *vf_avx2_pack16(uint8_t *o, __m128i v, unsigned k)
{
    unsigned k0 = k & 0xFF, k1 = (k >> 8) & 0xFF;
    __m128i s = _mm_castpd_si128(_mm_loadh_pd(
        _mm_castsi128_pd(_mm_loadl_epi64((const __m128i *)&vf_pack8[k0])), (const double *)&vf_pack8hi[k1]));
    v = _mm_shuffle_epi8(v, s);
    _mm_storel_epi64((__m128i *)o, v);
    o += vf_pop8[k0];
    _mm_storeh_pd((double *)o, _mm_castsi128_pd(v));
    return o + vf_pop8[k1];
}

static VF_AVX2_TARGET vf_ssize vf_unescape_avx2(const uint8_t *p, vf_ssize i, vf_ssize n,
                                                uint8_t **op, uint8_t *hi)
{
    const __m256i vq = _mm256_set1_epi8('"'), vb = _mm256_set1_epi8('\\'), vc = _mm256_set1_epi8(0x1F),
                  vs = _mm256_set1_epi8('/'), lo4 = _mm256_set1_epi8(0x0F);
    const __m256i letters = _mm256_setr_epi8(VF_LETTERS, VF_LETTERS);
    const __m256i decoded = _mm256_setr_epi8(VF_DECODED, VF_DECODED);
    __m256i seen = _mm256_setzero_si256();
    uint64_t carry = 0;
    uint8_t *o = *op;
    while (i + 64 <= n) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i ab = _mm256_cmpeq_epi8(a, vb), bb = _mm256_cmpeq_epi8(b, vb);
        __m256i aq = _mm256_cmpeq_epi8(a, vq), bq = _mm256_cmpeq_epi8(b, vq);
        /* quotes and control characters: a control character is never valid after a
         * backslash either, so one mask serves both (see vf_window_masks) */
        __m256i aqc = _mm256_or_si256(aq, _mm256_cmpeq_epi8(_mm256_min_epu8(a, vc), a));
        __m256i bqc = _mm256_or_si256(bq, _mm256_cmpeq_epi8(_mm256_min_epu8(b, vc), b));
        uint64_t bs, qc, qt, escaped, keep;
        int len, stop;
        seen = _mm256_or_si256(seen, _mm256_or_si256(a, b));
#define VF_MM2(x, y) ((uint64_t)(uint32_t)_mm256_movemask_epi8(x) | ((uint64_t)(uint32_t)_mm256_movemask_epi8(y) << 32))
        bs = VF_MM2(ab, bb);
        qc = VF_MM2(aqc, bqc);
        if (!(bs | qc | carry)) {
            _mm256_storeu_si256((__m256i *)o, a);
            _mm256_storeu_si256((__m256i *)(o + 32), b);
            o += 64;
            i += 64;
            continue;
        }
        qt = VF_MM2(aq, bq);
        escaped = vf_window_escapes(bs, carry, &keep);
        if (!(escaped & ~(qt | bs))) {
            /* only \" and \\ escapes (the usual window of an escaped JSON document):
             * nothing to validate or replace */
            stop = vf_window_end(p, i, n, qc & ~escaped, &escaped, &keep, &len, &carry);
        } else {
            __m256i ka = _mm256_and_si256(_mm256_srli_epi16(a, 1), lo4);
            __m256i kb = _mm256_and_si256(_mm256_srli_epi16(b, 1), lo4);
            __m256i la = _mm256_cmpeq_epi8(_mm256_shuffle_epi8(letters, ka), a);
            __m256i lb = _mm256_cmpeq_epi8(_mm256_shuffle_epi8(letters, kb), b);
            uint64_t valid = VF_MM2(_mm256_or_si256(_mm256_or_si256(ab, aq), _mm256_or_si256(la, _mm256_cmpeq_epi8(a, vs))),
                                    _mm256_or_si256(_mm256_or_si256(bb, bq), _mm256_or_si256(lb, _mm256_cmpeq_epi8(b, vs))));
            __m256i e;
            stop = vf_window_end(p, i, n, (qc & ~escaped) | ((escaped & ~valid) >> 1), &escaped, &keep,
                                 &len, &carry);
            /* the escaped letters b f n r t: their control characters */
            e = _mm256_set1_epi64x((long long)escaped);
            a = _mm256_blendv_epi8(a, _mm256_shuffle_epi8(decoded, ka), _mm256_and_si256(la, vf_avx2_expand(e, 0)));
            b = _mm256_blendv_epi8(b, _mm256_shuffle_epi8(decoded, kb), _mm256_and_si256(lb, vf_avx2_expand(e, 1)));
        }
#undef VF_MM2
        o = vf_avx2_pack16(o, _mm256_castsi256_si128(a), (unsigned)keep & 0xFFFF);
        o = vf_avx2_pack16(o, _mm256_extracti128_si256(a, 1), (unsigned)(keep >> 16) & 0xFFFF);
        o = vf_avx2_pack16(o, _mm256_castsi256_si128(b), (unsigned)(keep >> 32) & 0xFFFF);
        o = vf_avx2_pack16(o, _mm256_extracti128_si256(b, 1), (unsigned)(keep >> 48));
        if (stop) {
            i += len;
            break;
        }
        i += 64;
    }
    VF_WINDOW_FINISH(carry, p, i, o);
    if (_mm256_movemask_epi8(seen)) *hi = 0x80;
    *op = o;
    return i;
}
#endif

#if defined(VF_NEON)
/* 64 bytes of 0x00 / 0xFF in four vectors -> a 64-bit mask. */
static inline uint64_t vf_neon_mask64(uint8x16_t m0, uint8x16_t m1, uint8x16_t m2, uint8x16_t m3)
{
    static const uint8_t w[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bits = vld1q_u8(w);
    uint8x16_t s0 = vpaddq_u8(vandq_u8(m0, bits), vandq_u8(m1, bits));
    uint8x16_t s1 = vpaddq_u8(vandq_u8(m2, bits), vandq_u8(m3, bits));
    s0 = vpaddq_u8(s0, s1);
    s0 = vpaddq_u8(s0, s0);
    return vgetq_lane_u64(vreinterpretq_u64_u8(s0), 0);
}

/* Bit k of m -> byte k all ones (16 bytes). */
static inline uint8x16_t vf_neon_expand(unsigned m)
{
    static const uint8_t w[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)(m & 0xFF)), vdup_n_u8((uint8_t)(m >> 8)));
    return vtstq_u8(v, vld1q_u8(w));
}

static inline uint8_t *vf_neon_pack16(uint8_t *o, uint8x16_t v, unsigned k)
{
    unsigned k0 = k & 0xFF, k1 = (k >> 8) & 0xFF;
    uint8x16_t s = vcombine_u8(vcreate_u8(vf_pack8[k0]), vcreate_u8(vf_pack8hi[k1]));
    v = vqtbl1q_u8(v, s);
    vst1_u8(o, vget_low_u8(v));
    o += vf_pop8[k0];
    vst1_u8(o, vget_high_u8(v));
    return o + vf_pop8[k1];
}

static vf_ssize vf_unescape_neon(const uint8_t *p, vf_ssize i, vf_ssize n, uint8_t **op,
                                 uint8_t *hi)
{
    static const uint8_t lt[16] = {VF_LETTERS}, dt[16] = {VF_DECODED};
    const uint8x16_t letters = vld1q_u8(lt), decoded = vld1q_u8(dt);
    const uint8x16_t vq = vdupq_n_u8('"'), vb = vdupq_n_u8('\\'), vc = vdupq_n_u8(0x1F),
                     vs = vdupq_n_u8('/'), lo4 = vdupq_n_u8(0x0F);
    uint8x16_t seen = vdupq_n_u8(0);
    uint64_t carry = 0;
    uint8_t *o = *op;
    while (i + 64 <= n) {
        uint8x16_t v[4], mb[4], mq[4], mc[4], key[4], ml[4];
        uint64_t bs, qt, ct, letter, valid, escaped, keep, repl;
        int k, len, stop;
        uint8x16_t any = vdupq_n_u8(0);
        for (k = 0; k < 4; k++) {
            v[k] = vld1q_u8(p + i + 16 * k);
            mb[k] = vceqq_u8(v[k], vb);
            mq[k] = vceqq_u8(v[k], vq);
            mc[k] = vcleq_u8(v[k], vc);
            any = vorrq_u8(any, vorrq_u8(vorrq_u8(mb[k], mq[k]), mc[k]));
            seen = vorrq_u8(seen, v[k]);
        }
        if (!vmaxvq_u8(any) && !carry) {
            for (k = 0; k < 4; k++) vst1q_u8(o + 16 * k, v[k]);
            o += 64;
            i += 64;
            continue;
        }
        bs = vf_neon_mask64(mb[0], mb[1], mb[2], mb[3]);
        qt = vf_neon_mask64(mq[0], mq[1], mq[2], mq[3]);
        ct = vf_neon_mask64(mc[0], mc[1], mc[2], mc[3]);
        escaped = vf_window_escapes(bs, carry, &keep);
        if (!(escaped & ~(qt | bs))) {
            /* only \" and \\ escapes: nothing to validate or replace (as for AVX2) */
            stop = vf_window_end(p, i, n, (qt & ~escaped) | ct, &escaped, &keep, &len, &carry);
            for (k = 0; k < 4; k++)
                o = vf_neon_pack16(o, v[k], (unsigned)(keep >> (16 * k)) & 0xFFFF);
        } else {
            for (k = 0; k < 4; k++) {
                key[k] = vandq_u8(vshrq_n_u8(v[k], 1), lo4);
                ml[k] = vceqq_u8(vqtbl1q_u8(letters, key[k]), v[k]);
            }
            letter = vf_neon_mask64(ml[0], ml[1], ml[2], ml[3]);
            for (k = 0; k < 4; k++) mq[k] = vorrq_u8(vorrq_u8(mq[k], mb[k]), vceqq_u8(v[k], vs));
            valid = vf_neon_mask64(mq[0], mq[1], mq[2], mq[3]) | letter;
            stop = vf_window_end(p, i, n, (qt & ~escaped) | ct | ((escaped & ~valid) >> 1), &escaped,
                                 &keep, &len, &carry);
            repl = escaped & letter;
            for (k = 0; k < 4; k++) {
                unsigned r = (unsigned)(repl >> (16 * k)) & 0xFFFF;
                if (r) v[k] = vbslq_u8(vf_neon_expand(r), vqtbl1q_u8(decoded, key[k]), v[k]);
                o = vf_neon_pack16(o, v[k], (unsigned)(keep >> (16 * k)) & 0xFFFF);
            }
        }
        if (stop) {
            i += len;
            break;
        }
        i += 64;
    }
    VF_WINDOW_FINISH(carry, p, i, o);
    if (vmaxvq_u8(seen) & 0x80) *hi = 0x80;
    *op = o;
    return i;
}
#endif

typedef vf_ssize (*vf_window_fn)(const uint8_t *, vf_ssize, vf_ssize, uint8_t **, uint8_t *);

/* The 64-byte-window unescaper of a path, or NULL. */
static inline vf_window_fn vf_window_step(int level)
{
#if defined(VF_AVX512)
    if (level == VF_SIMD_AVX512) return vf_unescape_avx512;
#endif
#if defined(VF_AVX2)
    if (level == VF_SIMD_AVX2) return vf_unescape_avx2;
#endif
#if defined(VF_NEON)
    if (level == VF_SIMD_NEON) return vf_unescape_neon;
#endif
    (void)level;
    return NULL;
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
static vf_ssize vf_json_unescape(const uint8_t *p, vf_ssize i, vf_ssize n, uint8_t *out,
                                 vf_ssize *outlen, int *high)
{
    uint8_t *o = out;
    uint8_t c, r, hi = 0;
    int level = vf_simd_level;
    vf_window_fn step = vf_window_step(level);
    if (step) {
        while (i + 64 <= n) {
            i = step(p, i, n, &o, &hi);
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
#if defined(VF_SSE2)
    if (level != VF_SIMD_SCALAR) {
        /* Every special byte of a 16-byte block is handled from one mask, so the next
         * load does not wait on a ctz per escape (escape-dense SSE bodies have one every
         * few bytes).  Segments are copied with one unaligned 16-byte load/store each;
         * i + 32 <= n keeps every load inside the input. */
        const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
        __m128i seen = _mm_setzero_si128(); /* OR of every block: any byte >= 0x80? */
        while (i + 32 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i mm;
            unsigned int m;
            int pos = 0, k;
            seen = _mm_or_si128(seen, v);
            mm = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)),
                              _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));
            m = (unsigned int)_mm_movemask_epi8(mm);
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
    }
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
static int vf_utf8_valid_sp(const uint8_t *p, vf_ssize n)
{
    vf_ssize i = 0;
    int k;
    while (i < n) {
#if defined(VF_SSE2)
        if (vf_simd_level != VF_SIMD_SCALAR)
            while (i + 16 <= n && !_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(p + i))))
                i += 16;
#elif defined(VF_NEON)
        if (vf_simd_level != VF_SIMD_SCALAR)
            while (i + 16 <= n && vmaxvq_u8(vld1q_u8(p + i)) < 0x80) i += 16;
#endif
        while (i < n && p[i] < 0x80) i++;
        if (i >= n) return 1;
        k = vf_utf8_seq(p + i, n - i, 1);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

#endif /* VASTAR_VF_JSON_SIMD_H */
