"""Run every SSE test on both scanner twins (the aiohttp/yarl pattern)."""

import importlib
from types import ModuleType

import pytest

from vastar_fast.sse import _scanner_py

try:
    _scanner_c: "ModuleType | None" = importlib.import_module("vastar_fast.sse._scanner_c")
except ImportError:  # pragma: no cover - depends on the build
    _scanner_c = None

_SKIP_C = pytest.mark.skipif(
    _scanner_c is None,
    reason="compiled twin not built (cythonize -3 -i src/vastar_fast/sse/_scanner_c.pyx)",
)

TWIN_PARAMS = [
    pytest.param(_scanner_py, id="pure"),
    pytest.param(_scanner_c, id="compiled", marks=_SKIP_C),
]


@pytest.fixture(params=TWIN_PARAMS, scope="module")
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """One scanner twin module: ``_scanner_py`` or ``_scanner_c``."""
    mod: ModuleType = request.param
    return mod


@pytest.fixture(scope="module")
def both() -> "tuple[ModuleType, ModuleType]":
    """Both twins, for parity tests (skipped when the compiled one is missing)."""
    if _scanner_c is None:
        pytest.skip("compiled twin not built; twin parity needs both")
    return _scanner_py, _scanner_c
