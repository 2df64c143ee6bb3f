"""Shared test configuration (paths live in support.py so test modules can import them).

Every test outside ``tests/protocol`` and ``tests/sse`` (which take each twin directly
through their own fixtures) that exercises the wire codec or the SSE scanner runs twice:
once on the compiled twins and once on the pure-Python twins. The session-scoped,
parametrized ``implementation`` fixture swaps the selectors' attributes in this process
and sets ``VASTAR_FAST_NO_EXTENSIONS`` for the subprocesses tests start (runtime daemon,
simulator, demo), so a daemon created by a fixture that depends on ``implementation``
runs the same twin as the client talking to it. The compiled run is skipped, with the
reason, when the extension modules are not built.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

import support  # noqa: F401  (puts the flatc-generated reader on sys.path)

TWINS = ("compiled", "pure")
# Test directories whose tests are parametrized over both twins.
TWIN_DIRS = frozenset({"client", "connectors", "runtime", "demo"})

_MODULES = {
    # selector module -> (pure twin, compiled twin)
    "vastar_fast.protocol.codec": (
        "vastar_fast.protocol._codec_py",
        "vastar_fast.protocol._codec_c",
    ),
    "vastar_fast.sse.scanner": ("vastar_fast.sse._scanner_py", "vastar_fast.sse._scanner_c"),
}


def _import(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _bindings(twin: str) -> List[Tuple[object, str, object]]:
    """(module, attribute, value) triples that point every selector at one twin."""
    out: List[Tuple[object, str, object]] = []
    chosen: Dict[str, ModuleType] = {}
    for selector_name, (pure_name, compiled_name) in _MODULES.items():
        selector = importlib.import_module(selector_name)
        impl = _import(compiled_name if twin == "compiled" else pure_name)
        if impl is None:
            pytest.skip(f"{compiled_name} is not built (python setup.py build_ext --inplace)")
        chosen[selector_name] = impl
        for name in getattr(selector, "__all__", ()):
            if name != "ACCELERATED" and hasattr(impl, name):
                out.append((selector, name, getattr(impl, name)))
    # Names bound once at import time by the modules that use the selectors.
    codec = chosen["vastar_fast.protocol.codec"]
    scanner = chosen["vastar_fast.sse.scanner"]
    results = importlib.import_module("vastar_fast.client.results")
    out.append((results, "_decode_payload", codec.decode_http_response_payload))
    for package in ("vastar_fast.sse", "vastar_fast"):
        out.append((importlib.import_module(package), "SSEDecoder", scanner.SSEDecoder))
    # The runtime's request path (an in-process RuntimeServer runs it).
    engine = _import("vastar_fast.runtime.engine")
    if engine is not None:
        package = "vastar_fast.runtime._compiled" if twin == "compiled" else "vastar_fast.runtime"
        for name in engine.TWINNED:
            mod = _import(f"{package}.{name}")
            if mod is None:
                pytest.skip(f"{package}.{name} is not built (python setup.py build_ext --inplace)")
            out.append((engine, name, mod))
        out.append((engine, "ACCELERATED", twin == "compiled"))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    path = Path(str(metafunc.definition.path))
    if "implementation" in metafunc.fixturenames and TWIN_DIRS.intersection(path.parts[-3:-1]):
        metafunc.parametrize("implementation", TWINS, indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def implementation(request: pytest.FixtureRequest) -> Iterator[Optional[str]]:
    """The twin a test runs on ("compiled" or "pure"); None where not parametrized."""
    twin: Optional[str] = getattr(request, "param", None)
    if twin is None:
        yield None
        return
    mp = pytest.MonkeyPatch()
    try:
        for module, name, value in _bindings(twin):
            mp.setattr(module, name, value)
        mp.setenv("VASTAR_FAST_NO_EXTENSIONS", "1" if twin == "pure" else "0")
        yield twin
    finally:
        mp.undo()
