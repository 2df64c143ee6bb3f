/*
 * sse_scan_tmpl.h -- width-specific body of sse_scan.h.  Included three
 * times with SSE_T (char type), SSE_FN (name suffixer) and SSE_IS_UCS1 set;
 * do not include directly.  See sse_scan.h for the contract.
 */

typedef struct {
    const SSE_T *s;
    Py_ssize_t n;     /* end of the document (exclusive) */
    Py_ssize_t i;     /* cursor */
    int fallback;     /* set when json.loads must decide */
    int found;        /* content string located */
    sse_span span;
} SSE_FN(sse_ctx);

static int SSE_FN(sse_value)(SSE_FN(sse_ctx) *c, int depth, int role);

static inline void SSE_FN(sse_ws)(SSE_FN(sse_ctx) *c) {
    const SSE_T *s = c->s;
    Py_ssize_t i = c->i, n = c->n;
    while (i < n) {
        SSE_T ch = s[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') i++;
        else break;
    }
    c->i = i;
}

/* Lane-wise SWAR over one 64-bit word of SSE_T characters: non-zero iff a
 * lane is '"', '\\' or < 0x20; the lowest set bit marks the first such lane
 * exactly (borrows only propagate upwards, towards later lanes). */
static inline uint64_t SSE_FN(sse_swar_special)(uint64_t v) {
    const uint64_t ones = SSE_FN(SSE_ONES);
    const uint64_t high = ones << (8 * sizeof(SSE_T) - 1);
    uint64_t q = v ^ (ones * 0x22);
    uint64_t b = v ^ (ones * 0x5c);
    uint64_t zq = (q - ones) & ~q;
    uint64_t zb = (b - ones) & ~b;
    uint64_t lt = (v - ones * 0x20) & ~v;
    return (zq | zb | lt) & high;
}

/* Same for a single character value: non-zero iff a lane equals ch. */
static inline uint64_t SSE_FN(sse_swar_eq)(uint64_t v, uint64_t ch) {
    const uint64_t ones = SSE_FN(SSE_ONES);
    uint64_t x = v ^ (ones * ch);
    return (x - ones) & ~x & (ones << (8 * sizeof(SSE_T) - 1));
}

#define SSE_LANES ((Py_ssize_t)(8 / sizeof(SSE_T)))
#define SSE_LANE_OF(m) ((Py_ssize_t)((size_t)SSE_CTZ64(m) / (8 * sizeof(SSE_T))))

/* Scan a string whose opening quote is at c->i.  On success c->i is just past
 * the closing quote and 1 is returned; *esc tells whether it held escapes. */
static inline int SSE_FN(sse_string)(SSE_FN(sse_ctx) *c, int *esc) {
    const SSE_T *s = c->s;
    Py_ssize_t i = c->i + 1, n = c->n;
    int e = 0;
    for (;;) {
        for (;;) {
            if (SSE_SWAR_OK && i + SSE_LANES <= n) {
                uint64_t v, m;
                memcpy(&v, s + i, 8);
                m = SSE_FN(sse_swar_special)(v);
                if (m) {
                    i += SSE_LANE_OF(m);
                    break;
                }
                i += SSE_LANES;
            } else {
                while (i < n) {
                    SSE_T ch = s[i];
                    if (ch == '"' || ch == '\\' || ch < 0x20) break;
                    i++;
                }
                break;
            }
        }
        if (i >= n) return 0;
        SSE_T ch = s[i];
        if (ch == '"') {
            c->i = i + 1;
            *esc = e;
            return 1;
        }
        if (ch < 0x20) return 0;
        /* backslash escape */
        e = 1;
        if (i + 1 >= n) return 0;
        ch = s[i + 1];
        switch (ch) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            break;
        case 'u':
            if (i + 6 > n) return 0;
            if (sse_hexval(s[i + 2]) < 0 || sse_hexval(s[i + 3]) < 0 ||
                sse_hexval(s[i + 4]) < 0 || sse_hexval(s[i + 5]) < 0)
                return 0;
            i += 6;
            break;
        default:
            return 0;
        }
    }
}

/* Number per json.loads: -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?  Anything the
 * regex leaves behind is left for the caller, where it cannot be a valid
 * delimiter, so the document fails exactly as json.loads fails. */
static inline int SSE_FN(sse_number)(SSE_FN(sse_ctx) *c) {
    const SSE_T *s = c->s;
    Py_ssize_t i = c->i, n = c->n, d0;
    int is_int = 1;
    if (s[i] == '-') {
        i++;
        if (i >= n) return 0;
    }
    d0 = i;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    } else return 0;
    if (i - d0 > SSE_MAX_INT_DIGITS) is_int = 2; /* maybe too long for int() */
    if (i + 1 < n && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
        is_int = 0;
        i += 2;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        Py_ssize_t j = i + 1;
        if (j < n && (s[j] == '-' || s[j] == '+')) j++;
        if (j < n && s[j] >= '0' && s[j] <= '9') {
            while (j < n && s[j] >= '0' && s[j] <= '9') j++;
            is_int = 0;
            i = j;
        }
    }
    if (is_int == 2) c->fallback = 1;
    c->i = i;
    return 1;
}

static inline int SSE_FN(sse_lit)(SSE_FN(sse_ctx) *c, const char *lit, Py_ssize_t len) {
    Py_ssize_t k;
    if (c->i + len > c->n) return 0;
    for (k = 0; k < len; k++)
        if (c->s[c->i + k] != (SSE_T)(unsigned char)lit[k]) return 0;
    c->i += len;
    return 1;
}

/* Is the raw key s[a:b) (no escapes) equal to the ASCII word w? */
static inline int SSE_FN(sse_key_is)(const SSE_T *s, Py_ssize_t a, Py_ssize_t b,
                                     const char *w, Py_ssize_t wl) {
    Py_ssize_t k;
    if (b - a != wl) return 0;
    for (k = 0; k < wl; k++)
        if (s[a + k] != (SSE_T)(unsigned char)w[k]) return 0;
    return 1;
}

static int SSE_FN(sse_object)(SSE_FN(sse_ctx) *c, int depth, int role) {
    const SSE_T *s = c->s;
    int seen = 0; /* the path key of this object has been seen */
    c->i++;       /* '{' */
    SSE_FN(sse_ws)(c);
    if (c->i < c->n && s[c->i] == '}') {
        c->i++;
        return 1;
    }
    for (;;) {
        Py_ssize_t ka, kb;
        int esc = 0, child = SSE_R_NONE;
        if (c->i >= c->n || s[c->i] != '"') return 0;
        ka = c->i + 1;
        if (!SSE_FN(sse_string)(c, &esc)) return 0;
        kb = c->i - 1;
        if (role == SSE_R_TOP || role == SSE_R_CHOICE0 || role == SSE_R_DELTA) {
            int hit;
            if (esc) { /* an escaped key could spell the path key */
                c->fallback = 1;
                return 1;
            }
            if (role == SSE_R_TOP) hit = SSE_FN(sse_key_is)(s, ka, kb, "choices", 7);
            else if (role == SSE_R_CHOICE0) hit = SSE_FN(sse_key_is)(s, ka, kb, "delta", 5);
            else hit = SSE_FN(sse_key_is)(s, ka, kb, "content", 7);
            if (hit) {
                if (seen) { /* duplicate key: json keeps the last one */
                    c->fallback = 1;
                    return 1;
                }
                seen = 1;
                child = role == SSE_R_TOP ? SSE_R_CHOICES
                        : role == SSE_R_CHOICE0 ? SSE_R_DELTA : SSE_R_CONTENT;
            }
        }
        SSE_FN(sse_ws)(c);
        if (c->i >= c->n || s[c->i] != ':') return 0;
        c->i++;
        SSE_FN(sse_ws)(c);
        if (!SSE_FN(sse_value)(c, depth, child)) return 0;
        if (c->fallback) return 1;
        SSE_FN(sse_ws)(c);
        if (c->i >= c->n) return 0;
        if (s[c->i] == ',') {
            c->i++;
            SSE_FN(sse_ws)(c);
            continue;
        }
        if (s[c->i] == '}') {
            c->i++;
            return 1;
        }
        return 0;
    }
}

static int SSE_FN(sse_array)(SSE_FN(sse_ctx) *c, int depth, int role) {
    const SSE_T *s = c->s;
    int child = role == SSE_R_CHOICES ? SSE_R_CHOICE0 : SSE_R_NONE;
    c->i++; /* '[' */
    SSE_FN(sse_ws)(c);
    if (c->i < c->n && s[c->i] == ']') {
        c->i++;
        return 1;
    }
    for (;;) {
        if (!SSE_FN(sse_value)(c, depth, child)) return 0;
        if (c->fallback) return 1;
        child = SSE_R_NONE;
        SSE_FN(sse_ws)(c);
        if (c->i >= c->n) return 0;
        if (s[c->i] == ',') {
            c->i++;
            SSE_FN(sse_ws)(c);
            continue;
        }
        if (s[c->i] == ']') {
            c->i++;
            return 1;
        }
        return 0;
    }
}

/* Parse one value at c->i (no leading whitespace).  Returns 0 when invalid. */
static int SSE_FN(sse_value)(SSE_FN(sse_ctx) *c, int depth, int role) {
    SSE_T ch;
    if (c->i >= c->n) return 0;
    ch = c->s[c->i];
    if (role == SSE_R_CONTENT && ch != '"' && ch != 'n') {
        /* non-string content: json.loads builds the exact object */
        c->fallback = 1;
        return 1;
    }
    switch (ch) {
    case '"': {
        Py_ssize_t a = c->i + 1;
        int esc = 0;
        if (!SSE_FN(sse_string)(c, &esc)) return 0;
        if (role == SSE_R_CONTENT) {
            c->found = 1;
            c->span.start = a;
            c->span.end = c->i - 1;
            c->span.escaped = esc;
        }
        return 1;
    }
    case '{':
        if (depth >= SSE_MAX_DEPTH) {
            c->fallback = 1;
            return 1;
        }
        return SSE_FN(sse_object)(c, depth + 1, role == SSE_R_CHOICE0 || role == SSE_R_DELTA || role == SSE_R_TOP ? role : SSE_R_NONE);
    case '[':
        if (depth >= SSE_MAX_DEPTH) {
            c->fallback = 1;
            return 1;
        }
        return SSE_FN(sse_array)(c, depth + 1, role == SSE_R_CHOICES ? role : SSE_R_NONE);
    case 'n': return SSE_FN(sse_lit)(c, "null", 4);
    case 't': return SSE_FN(sse_lit)(c, "true", 4);
    case 'f': return SSE_FN(sse_lit)(c, "false", 5);
    case 'N': return SSE_FN(sse_lit)(c, "NaN", 3);
    case 'I': return SSE_FN(sse_lit)(c, "Infinity", 8);
    case '-':
        if (c->i + 1 < c->n && c->s[c->i + 1] == 'I') {
            c->i++;
            return SSE_FN(sse_lit)(c, "Infinity", 8);
        }
        return SSE_FN(sse_number)(c);
    default:
        if (ch >= '0' && ch <= '9') return SSE_FN(sse_number)(c);
        return 0;
    }
}

static int SSE_FN(sse_json_delta)(const SSE_T *s, Py_ssize_t start, Py_ssize_t end,
                                  sse_span *out) {
    SSE_FN(sse_ctx) c;
    int ok;
    c.s = s;
    c.n = end;
    c.i = start;
    c.fallback = 0;
    c.found = 0;
    SSE_FN(sse_ws)(&c);
    /* Only an object can carry "choices"; other values still get validated
     * (role NONE) but can only ever give None. */
    ok = SSE_FN(sse_value)(&c, 0, (c.i < end && s[c.i] == '{') ? SSE_R_TOP : SSE_R_NONE);
    if (c.fallback) return SSE_J_FALLBACK;
    if (!ok) return SSE_J_NONE;
    SSE_FN(sse_ws)(&c);
    if (c.i != end) return SSE_J_NONE; /* "Extra data" */
    if (!c.found) return SSE_J_NONE;
    *out = c.span;
    return SSE_J_STR;
}

static inline Py_ssize_t SSE_FN(sse_find_eol)(const SSE_T *s, Py_ssize_t pos, Py_ssize_t end) {
#if SSE_IS_UCS1
    const Py_UCS1 *lf, *cr;
    if (pos >= end) return end;
    lf = (const Py_UCS1 *)memchr(s + pos, '\n', (size_t)(end - pos));
    if (lf == NULL) lf = s + end;
    cr = (const Py_UCS1 *)memchr(s + pos, '\r', (size_t)(lf - (s + pos)));
    return (cr ? cr : lf) - s;
#else
    while (SSE_SWAR_OK && pos + SSE_LANES <= end) {
        uint64_t v, m;
        memcpy(&v, s + pos, 8);
        m = SSE_FN(sse_swar_eq)(v, '\n') | SSE_FN(sse_swar_eq)(v, '\r');
        if (m) return pos + SSE_LANE_OF(m);
        pos += SSE_LANES;
    }
    while (pos < end && s[pos] != '\n' && s[pos] != '\r') pos++;
    return pos;
#endif
}

static inline Py_ssize_t SSE_FN(sse_find_lflf)(const SSE_T *s, Py_ssize_t pos, Py_ssize_t end) {
#if SSE_IS_UCS1
    while (pos < end) {
        const Py_UCS1 *lf = (const Py_UCS1 *)memchr(s + pos, '\n', (size_t)(end - pos));
        Py_ssize_t k;
        if (lf == NULL) return end;
        k = lf - s;
        if (k + 1 < end && s[k + 1] == '\n') return k;
        pos = k + 1;
    }
    return end;
#else
    while (pos + 1 < end) {
        uint64_t v, m;
        if (SSE_SWAR_OK && pos + SSE_LANES <= end) {
            memcpy(&v, s + pos, 8);
            m = SSE_FN(sse_swar_eq)(v, '\n');
            if (!m) {
                pos += SSE_LANES;
                continue;
            }
            pos += SSE_LANE_OF(m);
        } else if (s[pos] != '\n') {
            pos++;
            continue;
        }
        if (pos + 1 < end && s[pos + 1] == '\n') return pos;
        pos++;
    }
    return end;
#endif
}

static Py_ssize_t SSE_FN(sse_unescape)(const SSE_T *s, Py_ssize_t i, Py_ssize_t end,
                                       Py_UCS4 *out) {
    Py_ssize_t m = 0;
    while (i < end) {
        Py_UCS4 ch = s[i];
        if (ch != '\\') {
            out[m++] = ch;
            i++;
            continue;
        }
        ch = s[i + 1];
        i += 2;
        switch (ch) {
        case 'b': out[m++] = '\b'; break;
        case 'f': out[m++] = '\f'; break;
        case 'n': out[m++] = '\n'; break;
        case 'r': out[m++] = '\r'; break;
        case 't': out[m++] = '\t'; break;
        case 'u': {
            Py_UCS4 u = (Py_UCS4)((sse_hexval(s[i]) << 12) | (sse_hexval(s[i + 1]) << 8) |
                                  (sse_hexval(s[i + 2]) << 4) | sse_hexval(s[i + 3]));
            i += 4;
            if (u >= 0xD800 && u <= 0xDBFF && i + 6 <= end && s[i] == '\\' && s[i + 1] == 'u') {
                Py_UCS4 u2 = (Py_UCS4)((sse_hexval(s[i + 2]) << 12) | (sse_hexval(s[i + 3]) << 8) |
                                       (sse_hexval(s[i + 4]) << 4) | sse_hexval(s[i + 5]));
                if (u2 >= 0xDC00 && u2 <= 0xDFFF) {
                    u = 0x10000 + (((u - 0xD800) << 10) | (u2 - 0xDC00));
                    i += 6;
                }
            }
            out[m++] = u;
            break;
        }
        default: out[m++] = ch; break; /* '"', '\\', '/' */
        }
    }
    return m;
}

/* Template fast path.  t describes a piece of the same buffer that the full
 * scanner parsed as one single-line "data: " event whose content is a JSON
 * string: s[t->tp : t->tp + t->lp) runs up to and including the content's
 * opening quote, s[t->ts : t->ts + t->ls) from its closing quote to the end of
 * the piece.  A piece at pos that equals the prefix, then holds one valid
 * JSON string body (validated by the same sse_string the full scanner uses),
 * then equals the suffix and then ends ("\n\n" or the end of the buffer) is
 * the template with only that string token changed.  The full scanner's
 * decisions before the token depend only on the prefix, after it only on the
 * suffix, so it would report exactly this span: the result is identical.
 * Returns the end of the piece and fills *out, or -1 (use the full scanner). */
static inline Py_ssize_t SSE_FN(sse_tmpl_match)(const SSE_T *s, Py_ssize_t pos, Py_ssize_t n,
                                                const sse_tmpl *t, sse_span *out) {
    SSE_FN(sse_ctx) c;
    int esc = 0;
    Py_ssize_t q, e;
    if (pos + t->lp + t->ls > n) return -1;
    if (memcmp(s + pos, s + t->tp, (size_t)t->lp * sizeof(SSE_T)) != 0) return -1;
    c.s = s;
    c.n = n;
    c.i = pos + t->lp - 1; /* the opening quote */
    c.fallback = 0;
    c.found = 0;
    if (!SSE_FN(sse_string)(&c, &esc)) return -1;
    q = c.i - 1; /* the closing quote */
    e = q + t->ls;
    if (e > n) return -1;
    if (memcmp(s + q, s + t->ts, (size_t)t->ls * sizeof(SSE_T)) != 0) return -1;
    if (e != n && !(e + 1 < n && s[e] == '\n' && s[e + 1] == '\n')) return -1;
    out->start = pos + t->lp;
    out->end = q;
    out->escaped = esc;
    return e;
}

#undef SSE_LANES
#undef SSE_LANE_OF
