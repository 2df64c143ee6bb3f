"""What the compiled-twin sources need of Cython's ``cython`` module when Cython itself is
not installed (the pure twin of a wheel-less install).

The runtime's request-path modules are written once, in Cython's pure Python mode: run
as they are, they are the pure twin; compiled by Cython (``setup.py``), the compiled
twin. Decorators here do nothing and type names stand for the Python types.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

_F = TypeVar("_F")

compiled = False

bint = bool
int = int
longlong = int
ulonglong = int
Py_ssize_t = int
double = float


def cclass(cls: _F) -> _F:
    return cls


def cfunc(fn: _F) -> _F:
    return fn


def ccall(fn: _F) -> _F:
    return fn


def inline(fn: _F) -> _F:
    return fn


def final(obj: _F) -> _F:
    return obj


def locals(**_types: Any) -> Callable[[_F], _F]:
    return lambda fn: fn


def declare(_type: Any = None, value: Any = None, **_kw: Any) -> Any:
    return value
