/*
 * vf_simd.h -- which vector instruction set the compiled twins use, chosen at run time.
 *
 * Paths (VF_SIMD_*): scalar (plain C, every build), sse2 (x86-64, always present there),
 * avx2 and avx512 (x86-64 with GCC, Clang or MSVC; used only when the CPU and the OS
 * support them), neon (AArch64, always present there).  vf_simd_init() detects the CPU
 * once (the Cython module calls it at import, before any decode) and selects the best
 * path; vf_simd_set() forces another (VASTAR_FAST_SIMD, and the parity tests).
 *
 * No Python.h here, so the C parity program (tools/simd_parity.c) builds for every
 * target, including under qemu-user for AArch64.
 */
#ifndef VASTAR_VF_SIMD_H
#define VASTAR_VF_SIMD_H

#include <stdint.h>

#define VF_SIMD_SCALAR 0
#define VF_SIMD_SSE2 1
#define VF_SIMD_AVX2 2
#define VF_SIMD_AVX512 3
#define VF_SIMD_NEON 4
#define VF_SIMD_COUNT 5

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#define VF_X86_64 1
#endif

/* SSE2 is part of x86-64; 32-bit x86 has it when the compiler targets it. */
#if defined(VF_X86_64) || defined(__SSE2__) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define VF_SSE2 1
#endif

/* The AVX2 and AVX-512 paths: x86-64 only, compiled with a function-level target
 * attribute (GCC/Clang) or plainly (MSVC, whose intrinsics need no /arch flag), so the
 * rest of the module keeps the baseline instruction set.  VF_NO_AVX2 / VF_NO_AVX512
 * leave them out. */
#if defined(VF_X86_64) && (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER))
#include <immintrin.h>
/* clang in MSVC mode (clang-cl) declares the AVX2 / AVX-512 intrinsics only when the
 * whole file targets them (its immintrin.h gates them on __AVX2__ etc. under _MSC_VER,
 * as tools/native_checks.py found), so there the paths need /arch:AVX2 / AVX512. */
#if defined(_MSC_VER) && defined(__clang__)
#if !defined(__AVX2__) && !defined(VF_NO_AVX2)
#define VF_NO_AVX2 1
#endif
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI2__)) && !defined(VF_NO_AVX512)
#define VF_NO_AVX512 1
#endif
#endif
#if !defined(VF_NO_AVX2)
#define VF_AVX2 1
#endif
#if !defined(VF_NO_AVX512)
#define VF_AVX512 1
#endif
#if defined(__GNUC__) || defined(__clang__)
#define VF_AVX2_TARGET __attribute__((target("avx2,bmi,popcnt")))
#define VF_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi2,bmi,popcnt")))
#else
#define VF_AVX2_TARGET
#define VF_AVX512_TARGET
#endif
#endif

/* NEON (Advanced SIMD) is mandatory on AArch64, so no detection is needed. */
#if (defined(__aarch64__) || defined(_M_ARM64)) && !defined(VF_NO_NEON)
#include <arm_neon.h>
#define VF_NEON 1
#endif

/* The MSVC-only code (cpuid detection, bit-scan intrinsics): under MSVC, or under clang
 * in MSVC mode when VF_MSVC_PATHS is defined, which tools/native_checks.py does so that
 * this code is compiled somewhere other than on a Windows runner. */
#if defined(_MSC_VER) && (!defined(__clang__) || defined(VF_MSVC_PATHS))
#define VF_MSVC 1
#include <intrin.h>
#endif

/* Count trailing zeros of a non-zero mask. */
#if defined(VF_MSVC)
static __inline int vf_ctz32(uint32_t m) { unsigned long i; _BitScanForward(&i, m); return (int)i; }
#if defined(_M_X64) || defined(_M_ARM64)
static __inline int vf_ctz64(uint64_t m) { unsigned long i; _BitScanForward64(&i, m); return (int)i; }
#else
static __inline int vf_ctz64(uint64_t m)
{
    return (uint32_t)m ? vf_ctz32((uint32_t)m) : 32 + vf_ctz32((uint32_t)(m >> 32));
}
#endif
#else
#define vf_ctz32(m) __builtin_ctz(m)
#define vf_ctz64(m) __builtin_ctzll(m)
#endif

/* Lookup tables shared by the AVX2 and NEON unescapers (filled by vf_simd_init):
 * for each 8-bit keep-mask, the byte indices of its set bits in ascending order
 * (the shuffle that packs those bytes to the front), and its population count. */
static uint64_t vf_pack8[256];
static uint64_t vf_pack8hi[256]; /* the same indices + 8: for the high half of 16 bytes */
static uint8_t vf_pop8[256];

static int vf_simd_level = VF_SIMD_SCALAR; /* the path in use */
static int vf_simd_cpu[VF_SIMD_COUNT];     /* 1 where this build and CPU can run a path */
static int vf_simd_ready = 0;

static const char *const vf_simd_names[VF_SIMD_COUNT] = {"scalar", "sse2", "avx2", "avx512",
                                                         "neon"};

#if defined(VF_AVX2) || defined(VF_AVX512)
#if defined(VF_MSVC)
/* cpuid leaves 1 and 7 plus XGETBV: the CPU has the feature and the OS saves its
 * registers (YMM for AVX2; opmask, ZMM0-15 high halves and ZMM16-31 for AVX-512). */
#if defined(__clang__)
__attribute__((target("xsave")))
#endif
static void vf_x86_detect(int *avx2, int *avx512)
{
    int r[4], max_leaf;
    unsigned long long xcr0 = 0;
    *avx2 = *avx512 = 0;
    __cpuid(r, 0);
    max_leaf = r[0];
    if (max_leaf < 7) return;
    __cpuidex(r, 1, 0);
    if (!(r[2] & (1 << 27)) || !(r[2] & (1 << 23))) return; /* OSXSAVE, POPCNT */
    xcr0 = _xgetbv(0);
    __cpuidex(r, 7, 0);
    if ((xcr0 & 0x6) == 0x6)
        *avx2 = (r[1] & (1 << 5)) && (r[1] & (1 << 3)); /* AVX2, BMI1 */
    if ((xcr0 & 0xE6) == 0xE6)
        *avx512 = (r[1] & (1 << 16)) && (r[1] & (1 << 30)) && (r[2] & (1 << 6)) &&
                  (r[1] & (1 << 3)); /* AVX512F, AVX512BW, AVX512VBMI2, BMI1 */
}
#else
/* The compiler runtime's CPU model (libgcc / compiler-rt) checks XCR0 as well. */
static void vf_x86_detect(int *avx2, int *avx512)
{
    __builtin_cpu_init();
    *avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
            __builtin_cpu_supports("popcnt");
    *avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("bmi") &&
              __builtin_cpu_supports("popcnt");
}
#endif
#endif

/* The best path this build and CPU can run. */
static int vf_simd_best(void)
{
    int k;
    static const int order[] = {VF_SIMD_AVX512, VF_SIMD_AVX2, VF_SIMD_NEON, VF_SIMD_SSE2};
    for (k = 0; k < 4; k++)
        if (vf_simd_cpu[order[k]]) return order[k];
    return VF_SIMD_SCALAR;
}

/* Detect once, select the best path; returns it.  Not thread-safe: call it before any
 * other thread can decode (the Cython module does, at import). */
static int vf_simd_init(void)
{
    int m, k, avx2 = 0, avx512 = 0;
    if (vf_simd_ready) return vf_simd_level;
    for (m = 0; m < 256; m++) {
        uint64_t idx = 0;
        int cnt = 0;
        for (k = 0; k < 8; k++)
            if (m & (1 << k)) idx |= (uint64_t)k << (8 * cnt++);
        vf_pack8[m] = idx;
        vf_pack8hi[m] = idx + 0x0808080808080808ULL;
        vf_pop8[m] = (uint8_t)cnt;
    }
    vf_simd_cpu[VF_SIMD_SCALAR] = 1;
#if defined(VF_SSE2)
    vf_simd_cpu[VF_SIMD_SSE2] = 1;
#endif
#if defined(VF_AVX2) || defined(VF_AVX512)
    vf_x86_detect(&avx2, &avx512);
#endif
#if defined(VF_AVX2)
    vf_simd_cpu[VF_SIMD_AVX2] = avx2;
#endif
#if defined(VF_AVX512)
    vf_simd_cpu[VF_SIMD_AVX512] = avx512;
#endif
#if defined(VF_NEON)
    vf_simd_cpu[VF_SIMD_NEON] = 1;
#endif
    (void)avx2;
    (void)avx512;
    vf_simd_level = vf_simd_best();
    vf_simd_ready = 1;
    return vf_simd_level;
}

/* 1 when this build and CPU can run the path. */
static int vf_simd_available(int level)
{
    vf_simd_init();
    return level >= 0 && level < VF_SIMD_COUNT && vf_simd_cpu[level];
}

/* Use the path when available, else the best one; returns the path now in use.
 * Switching while another thread decodes is safe only in that each decode reads the
 * level once; tests and import-time selection are the only callers. */
static int vf_simd_set(int level)
{
    vf_simd_init();
    vf_simd_level = vf_simd_available(level) ? level : vf_simd_best();
    return vf_simd_level;
}

static int vf_simd_get(void)
{
    vf_simd_init();
    return vf_simd_level;
}

#endif /* VASTAR_VF_SIMD_H */
