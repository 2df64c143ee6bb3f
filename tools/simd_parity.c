/*
 * simd_parity.c -- every JSON unescaper path this build and CPU can run, checked
 * against the scalar path on the same inputs (csrc/vf_json_simd.h, no Python).
 *
 *   simd_parity [ROUNDS]        parity check; exit 0 and "N passed, 0 failed" when every
 *                               path agrees with scalar on every input
 *   simd_parity --bench FILE    time each path on FILE (a JSON string body, opening
 *                               quote excluded), in MB/s (minimum of many runs)
 *
 * Built natively by tools/native_checks.py, and for AArch64 with `zig cc` and run under
 * qemu-aarch64, which checks the NEON path on a (emulated) ARM CPU.
 *
 * Inputs: a deterministic generator (xorshift) of JSON string bodies made of pieces
 * that stress the 16- and 64-byte windows: plain runs of every length around the block
 * sizes, every two-character escape, backslash runs, \u escapes (surrogate pairs, lone
 * surrogates, bad hex), raw bytes >= 0x80, raw control characters, a raw quote; each
 * body is decoded whole, then truncated at a random point, each starting at several
 * offsets (alignments).  Outcomes compared: the return value (end index or -1), and for
 * successes the output length, the bytes, and the "may contain bytes >= 0x80" flag
 * (which may only differ as a false positive: a path may say 1 where scalar says 0).
 * Each decode reads an exactly-sized copy of its input and writes an output of exactly
 * the documented size, so the sanitizer build catches any access outside them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vf_json_simd.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t put(uint8_t *b, size_t n, size_t cap, const char *s, size_t len)
{
    if (n + len > cap) len = cap - n;
    memcpy(b + n, s, len);
    return n + len;
}

/* One generated body of up to cap bytes, terminated by a quote (not counted). */
static size_t gen(uint8_t *b, size_t cap)
{
    static const char *const pieces[] = {
        "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9",
        "\\u4e2d", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\ud800x", "\\u12", "\\u12g4",
        "\\x", "\\", "\\\\\\", "\\\\\\\\", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
        "\xff", "\xc3", "\x01", "\x1f", "\x7f", " ", "\"", "data: ", "\\n\\n",
    };
    const size_t npieces = sizeof(pieces) / sizeof(pieces[0]);
    size_t n = 0, target = (size_t)(rnd() % cap);
    int dense = (int)(rnd() % 4); /* 0: mostly plain ... 3: escapes only */
    while (n < target) {
        uint64_t r = rnd();
        if ((int)(r % 4) >= dense) {
            size_t k = (size_t)((r >> 8) % 70);
            while (k-- && n < target) b[n++] = (uint8_t)('a' + (r >> 16) % 26);
        } else {
            /* raw quote / control / bad escapes rarely, or almost every body fails early */
            size_t j = (size_t)((r >> 8) % npieces);
            const char *s = pieces[j];
            if ((s[0] == '"' || s[0] == 1 || s[0] == 0x1f || !strcmp(s, "\\x") || !strcmp(s, "\\") ||
                 !strcmp(s, "\\u12") || !strcmp(s, "\\u12g4") || !strcmp(s, "\xff") ||
                 !strcmp(s, "\xc3")) &&
                (r >> 40) % 16)
                s = "\\\"";
            n = put(b, n, target, s, strlen(s));
        }
    }
    b[n] = '"';
    return n;
}

typedef struct {
    vf_ssize ret, outlen;
    int high;
} outcome;

/* Decode p[0:n] with one path from an exactly-sized copy of the input into an output of
 * exactly the documented size (n + VF_UNESCAPE_SLACK), so that a sanitizer build
 * (tools/native_checks.py) reports any read or write outside them; out receives it. */
static outcome run(int level, const uint8_t *p, vf_ssize n, uint8_t *out)
{
    outcome r;
    uint8_t *in = (uint8_t *)malloc(n ? (size_t)n : 1), *o = (uint8_t *)malloc((size_t)n + VF_UNESCAPE_SLACK);
    if (!in || !o) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memcpy(in, p, (size_t)n);
    memset(o, 0xAB, (size_t)n + VF_UNESCAPE_SLACK);
    vf_simd_set(level);
    r.outlen = -1;
    r.high = 0;
    r.ret = vf_json_unescape(in, 0, n, o, &r.outlen, &r.high);
    memcpy(out, o, (size_t)n + VF_UNESCAPE_SLACK);
    free(in);
    free(o);
    return r;
}

static int parity(long rounds)
{
    enum { CAP = 600, PAD = 80 };
    static uint8_t buf[CAP + 1 + PAD];
    static uint8_t want_out[CAP + VF_UNESCAPE_SLACK + PAD], got_out[CAP + VF_UNESCAPE_SLACK + PAD];
    long round, passed = 0, failed = 0, ok = 0, rejected = 0;
    int level, start;
    for (round = 0; round < rounds; round++) {
        size_t len = gen(buf + 8, CAP - 8);
        for (start = 0; start < 8; start++) {
            uint8_t *p = buf + 8 - start; /* the body at a different alignment */
            vf_ssize n;
            int cut;
            memmove(p, buf + 8, len + 1);
            for (cut = 0; cut < 2; cut++) {
                outcome want, got;
                n = cut ? (vf_ssize)(rnd() % (len + 1)) : (vf_ssize)len + 1;
                want = run(VF_SIMD_SCALAR, p, n, want_out);
                if (want.ret >= 0 && (!want.high || vf_utf8_valid_sp(want_out, want.outlen)))
                    ok++;
                else
                    rejected++;
                for (level = 1; level < VF_SIMD_COUNT; level++) {
                    if (!vf_simd_available(level)) continue;
                    got = run(level, p, n, got_out);
                    if (got.ret != want.ret ||
                        (want.ret >= 0 && (got.outlen != want.outlen ||
                                           memcmp(got_out, want_out, (size_t)want.outlen) != 0 ||
                                           got.high < want.high))) {
                        failed++;
                        if (failed <= 5) {
                            fprintf(stderr,
                                    "MISMATCH %s vs scalar (round %ld, start %d, n %ld): ret %ld/%ld "
                                    "len %ld/%ld high %d/%d\n  input: ",
                                    vf_simd_names[level], round, start, (long)n, (long)got.ret,
                                    (long)want.ret, (long)got.outlen, (long)want.outlen, got.high,
                                    want.high);
                            fwrite(p, 1, (size_t)n, stderr);
                            fputc('\n', stderr);
                        }
                    } else {
                        passed++;
                    }
                }
            }
        }
    }
    vf_simd_set(vf_simd_best());
    printf("inputs: %ld decode, %ld rejected (invalid JSON or UTF-8); best path %s\n", ok,
           rejected, vf_simd_names[vf_simd_get()]);
    printf("paths:");
    for (level = 0; level < VF_SIMD_COUNT; level++)
        if (vf_simd_available(level)) printf(" %s", vf_simd_names[level]);
    printf("\n%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}

static double now(void)
{
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int bench(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p, *out;
    long n;
    int level, k;
    if (!f) {
        perror(path);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    /* the body at offset 9 of a 64-byte aligned buffer, as in a frame */
    p = (uint8_t *)malloc((size_t)n + 128) + 9;
    out = (uint8_t *)malloc((size_t)n + VF_UNESCAPE_SLACK + 64);
    if (!p || !out || fread(p, 1, (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    for (level = 0; level < VF_SIMD_COUNT; level++) {
        double best = 1e9;
        vf_ssize outlen = 0, ret = 0;
        int high = 0;
        if (!vf_simd_available(level)) continue;
        vf_simd_set(level);
        for (k = 0; k < 200; k++) {
            double t0 = now();
            int j;
            for (j = 0; j < 20; j++) ret = vf_json_unescape(p, 0, n, out, &outlen, &high);
            t0 = (now() - t0) / 20;
            if (t0 < best) best = t0;
        }
        printf("%-7s %8.2f us %8.0f MB/s (ret %ld, out %ld)\n", vf_simd_names[level], best * 1e6,
               (double)n / best / 1e6, (long)ret, (long)outlen);
    }
    return 0;
}

int main(int argc, char **argv)
{
    vf_simd_init();
    if (argc == 3 && !strcmp(argv[1], "--bench")) return bench(argv[2]);
    return parity(argc > 1 ? atol(argv[1]) : 3000);
}
