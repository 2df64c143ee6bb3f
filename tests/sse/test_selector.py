"""The selector honours VASTAR_FAST_NO_EXTENSIONS and reports ACCELERATED."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import vastar_fast

# The probe imports the same vastar_fast this test process does (an installed wheel in
# CI, src/ in a checkout), so both see the same compiled modules.
_SRC = str(Path(vastar_fast.__file__).resolve().parents[1])
_PROBE = (
    "import vastar_fast.sse as s, vastar_fast.sse.scanner as sc;"
    "print(s.ACCELERATED, sc.parse_stream.__module__)"
)


def _probe(env_value: str) -> str:
    env = dict(os.environ, PYTHONPATH=_SRC, VASTAR_FAST_NO_EXTENSIONS=env_value)
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_env_forces_pure() -> None:
    assert _probe("1") == "False vastar_fast.sse._scanner_py"


def test_default_uses_compiled_when_built() -> None:
    try:
        import vastar_fast.sse._scanner_c  # noqa: F401
    except ImportError:
        pytest.skip("compiled twin not built")
    assert _probe("0") == "True vastar_fast.sse._scanner_c"
    assert _probe("") == "True vastar_fast.sse._scanner_c"
