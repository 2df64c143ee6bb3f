# cython: language_level=3
"""Compiled twin of :mod:`vastar_fast.runtime._atomics_py`: 64-bit cells with atomic
load, store, add and compare-and-swap, on a writable buffer (an anonymous shared
mapping, so that worker processes forked from the daemon see the same cells)."""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uintptr_t

__all__ = ["Cells"]


cdef extern from "atomics.h":
    int64_t vf_atomic_load(int64_t *p) nogil
    void vf_atomic_store(int64_t *p, int64_t v) nogil
    int64_t vf_atomic_add(int64_t *p, int64_t d) nogil
    int vf_atomic_cas(int64_t *p, int64_t expected, int64_t desired) nogil


cdef class Cells:
    """``len(buffer) // 8`` int64 cells; every operation is one atomic instruction.

    ``lock`` is accepted for the pure twin's signature and unused here.
    """

    cdef int64_t *p
    cdef Py_ssize_t n
    cdef Py_buffer view
    cdef bint held

    def __cinit__(self, owner, lock=None):
        PyObject_GetBuffer(owner, &self.view, PyBUF_WRITABLE)
        self.held = True
        if (<uintptr_t>self.view.buf) % 8 or self.view.len % 8:
            raise ValueError("Cells need an 8-byte aligned buffer whose size is a multiple of 8")
        self.p = <int64_t *>self.view.buf
        self.n = self.view.len // 8

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    def __len__(self):
        return self.n

    cdef inline int64_t *_at(self, Py_ssize_t i) except NULL:
        if i < 0 or i >= self.n:
            raise IndexError(f"cell {i} out of range 0..{self.n - 1}")
        return self.p + i

    cpdef long long load(self, Py_ssize_t i) except? -1:
        return vf_atomic_load(self._at(i))

    cpdef store(self, Py_ssize_t i, long long value):
        vf_atomic_store(self._at(i), value)

    cpdef long long add(self, Py_ssize_t i, long long delta) except? -1:
        """Add ``delta``; the new value."""
        return vf_atomic_add(self._at(i), delta)

    cpdef bint cas(self, Py_ssize_t i, long long expected, long long new) except -1:
        """Set to ``new`` if it still holds ``expected``; whether it did."""
        return vf_atomic_cas(self._at(i), expected, new)
