"""Fixtures that run every codec test against both twins.

``codec`` is parametrized over the pure twin and the compiled twin; ``twins`` hands a
test both at once for parity checks.  The compiled twin is imported directly (not
through the selector) and is skipped, with the reason, only when its extension module
has not been built.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional, Tuple

import pytest

import support  # noqa: F401  (puts the flatc-generated reader on sys.path)
from vastar_fast.protocol import _codec_py

_BUILD_HINT = (
    "compiled twin vastar_fast.protocol._codec_c is not built "
    "(run: python setup.py build_ext --inplace)"
)


def _compiled() -> Optional[ModuleType]:
    try:
        return importlib.import_module("vastar_fast.protocol._codec_c")
    except ModuleNotFoundError:
        return None


COMPILED = _compiled()


@pytest.fixture(params=["pure", "compiled"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """One twin per test run: the same assertions must hold for both."""
    if request.param == "pure":
        return _codec_py
    if COMPILED is None:
        pytest.skip(_BUILD_HINT)
    return COMPILED


@pytest.fixture
def twins() -> Tuple[ModuleType, ModuleType]:
    """(pure, compiled) for parity tests."""
    if COMPILED is None:
        pytest.skip(_BUILD_HINT)
    return _codec_py, COMPILED
