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
from typing import Iterator, List, Optional, Tuple

import pytest

import support  # noqa: F401  (puts the flatc-generated reader on sys.path)
import twins

TWINS = ("compiled", "pure")
# Test directories whose tests are parametrized over both twins.
TWIN_DIRS = frozenset({"client", "connectors", "runtime", "demo", "integrations"})


def _bindings(twin: str) -> List[Tuple[object, str, object]]:
    """(owner, attribute, value) triples that point the whole package at one twin:
    every selector's names, and every twin object bound elsewhere (tests/twins.py)."""
    out: List[Tuple[object, str, object]] = []
    for selector_name, (pure_name, compiled_name) in twins.SELECTORS.items():
        selector = importlib.import_module(selector_name)
        impl = twins.import_twin(compiled_name if twin == "compiled" else pure_name)
        if impl is None:
            pytest.skip(f"{compiled_name} is not built (python setup.py build_ext --inplace)")
        for name in getattr(selector, "__all__", ()):
            if name != "ACCELERATED" and hasattr(impl, name):
                out.append((selector, name, getattr(impl, name)))
    for owner, name, value in twins.bindings_of(twins.import_package()):
        if owner in {importlib.import_module(s) for s in twins.SELECTORS}:
            continue
        if twins.wrong_twin(value, twin):
            out.append((owner, name, twins.resolve(value, name, twin)))
    # The runtime's request path (an in-process RuntimeServer runs it).
    engine = twins.import_twin("vastar_fast.runtime.engine")
    if engine is not None:
        package = "vastar_fast.runtime._compiled" if twin == "compiled" else "vastar_fast.runtime"
        for name in engine.TWINNED:
            mod = twins.import_twin(f"{package}.{name}")
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
