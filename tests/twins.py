"""Which twin a name belongs to, and every place in the package a twin's name is bound.

The ``implementation`` fixture (conftest.py) points the whole package at one twin by
rebinding, in every module of ``vastar_fast``, each global (and class attribute) whose
value comes from a twin module; ``tests/client/test_twin_selection.py`` scans again and
fails on any binding left on the other twin. Nothing is listed by hand, so a new name
bound at import time cannot be missed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

import vastar_fast

# selector module -> (pure twin, compiled twin)
SELECTORS: Dict[str, Tuple[str, str]] = {
    "vastar_fast.protocol.codec": (
        "vastar_fast.protocol._codec_py",
        "vastar_fast.protocol._codec_c",
    ),
    "vastar_fast.protocol.client_core": (
        "vastar_fast.protocol._client_py",
        "vastar_fast.protocol._codec_c",
    ),
    "vastar_fast.sse.scanner": ("vastar_fast.sse._scanner_py", "vastar_fast.sse._scanner_c"),
    "vastar_fast.runtime.atomics": (
        "vastar_fast.runtime._atomics_py",
        "vastar_fast.runtime._atomics_c",
    ),
}
PURE = frozenset(pure for pure, _ in SELECTORS.values())
COMPILED = frozenset(compiled for _, compiled in SELECTORS.values())
TWIN_MODULES = PURE | COMPILED

# Names the compiled twin still takes from the pure one (the pure function serves both
# twins). test_twin_selection checks each really is shared, so an entry that gets a
# compiled twin must leave this list.
SHARED: Dict[str, frozenset] = {}


def import_twin(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def import_package() -> List[ModuleType]:
    """Every module of vastar_fast (so that nothing binds a twin after the switch)."""
    for info in pkgutil.walk_packages(vastar_fast.__path__, "vastar_fast."):
        if info.name.split(".")[-1] in ("__main__",) or info.name.startswith(BENCHMARKS):
            continue
        importlib.import_module(info.name)
    return [
        m
        for n, m in sorted(sys.modules.items())
        if n.startswith("vastar_fast") and not n.startswith(BENCHMARKS) and m
    ]


BENCHMARKS = "vastar_fast.benchmarks"
"""The benchmark suites import both twins on purpose (to compare them): not scanned."""


def twin_of(value: object) -> Optional[str]:
    """The twin module a function or class comes from, or None (shared or foreign)."""
    if isinstance(value, ModuleType):
        return value.__name__ if value.__name__ in TWIN_MODULES else None
    if not (inspect.isclass(value) or callable(value)):
        return None
    module = getattr(value, "__module__", None)
    return module if module in TWIN_MODULES else None


def bindings_of(modules: List[ModuleType]) -> Iterator[Tuple[object, str, object]]:
    """(owner, attribute, value) for every twin object bound outside the twin modules."""
    for module in modules:
        if module.__name__ in TWIN_MODULES:
            continue
        for name, value in list(vars(module).items()):
            if isinstance(value, ModuleType) and value.__name__ == f"{module.__name__}.{name}":
                continue  # a package's own submodule, set by the import system
            if twin_of(value) is not None:
                yield module, name, value
            if inspect.isclass(value) and value.__module__ == module.__name__:
                for attr, member in list(vars(value).items()):
                    if twin_of(member) is not None:
                        yield value, attr, member


def resolve(value: object, name: str, twin: str) -> object:
    """The same-named object of the other twin."""
    source = twin_of(value)
    assert source is not None
    if isinstance(value, ModuleType):
        raise LookupError(f"a twin module ({source}) is bound as {name!r}: import the selector")
    key = getattr(value, "__name__", name)
    if twin == "compiled":
        candidates = [c for p, c in SELECTORS.values() if p == source] or [source]
    else:
        candidates = [p for p, c in SELECTORS.values() if c == source] or [source]
    for candidate in candidates:
        mod = import_twin(candidate)
        if mod is not None and hasattr(mod, key):
            return getattr(mod, key)
    raise LookupError(f"no {twin} twin of {source}.{key}")


def wrong_twin(value: object, twin: str) -> bool:
    """True when ``value`` belongs to the twin that is NOT under test."""
    source = twin_of(value)
    if source is None:
        return False
    if twin == "pure":
        return source in COMPILED
    if source in PURE:
        shared = {n for c, names in SHARED.items() for n in names}
        return getattr(value, "__name__", None) not in shared
    return False
