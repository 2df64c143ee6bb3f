/* Sequentially consistent 64-bit atomics on memory shared between processes (the
 * runtime's worker processes share tenant counters and circuit breakers in one
 * anonymous shared mapping). GCC and clang builtins; MSVC Interlocked functions. */
#ifndef VF_ATOMICS_H
#define VF_ATOMICS_H

#include <stdint.h>

#if defined(_MSC_VER)
#include <intrin.h>
static __inline int64_t vf_atomic_load(int64_t *p)
{ return _InterlockedCompareExchange64((volatile long long *)p, 0, 0); }
static __inline void vf_atomic_store(int64_t *p, int64_t v)
{ _InterlockedExchange64((volatile long long *)p, v); }
static __inline int64_t vf_atomic_add(int64_t *p, int64_t d)
{ return _InterlockedExchangeAdd64((volatile long long *)p, d) + d; }
static __inline int vf_atomic_cas(int64_t *p, int64_t expected, int64_t desired)
{ return _InterlockedCompareExchange64((volatile long long *)p, desired, expected) == expected; }
#else
static inline int64_t vf_atomic_load(int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void vf_atomic_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int64_t vf_atomic_add(int64_t *p, int64_t d)
{ return __atomic_add_fetch(p, d, __ATOMIC_SEQ_CST); }
static inline int vf_atomic_cas(int64_t *p, int64_t expected, int64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}
#endif

#endif
