"""The package installs and runs as pure Python when the compiled twins cannot be built.

Each test copies the project's build inputs to a temp dir and installs from there with
``pip install --no-build-isolation --no-deps --target`` (setuptools, wheel and Cython come
from the test extras), then imports the result in a fresh interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = (
    "src",
    "csrc",
    "schemas",
    "setup.py",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "MANIFEST.in",
)

pytestmark = pytest.mark.skipif(
    not (ROOT / "setup.py").is_file(), reason="needs the project's source checkout"
)

PROBE = """
import vastar_fast, vastar_fast.protocol.codec as codec, vastar_fast.sse.scanner as sc
from vastar_fast import SSEParser
frame = codec.encode_http_request_frame(7, "t", None, None, 1000, "GET", "http://x/", {}, b"")
assert codec.decode_execute_request(frame[5:]).request_id == 7
assert SSEParser.parse_stream('data: {"choices":[{"delta":{"content":"ok"}}]}\\n\\n') == "ok"
print(vastar_fast.ACCELERATED, codec.FrameBuffer.__module__, sc.parse_stream.__module__)
"""


def _install(tmp_path: Path, env_extra: Dict[str, str]) -> Path:
    src = tmp_path / "project"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path,
                src / name,
                ignore=shutil.ignore_patterns(
                    "*.so", "*.pyd", "*.c", "__pycache__", "build", "*.egg-info"
                ),
            )
        elif path.exists():
            shutil.copy2(path, src / name)
    target = tmp_path / "site"
    env = dict(os.environ, **env_extra)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _probe(target: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("VASTAR_FAST_NO_EXTENSIONS", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(target),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _compiled_modules(target: Path) -> list:
    return sorted(p.name for p in target.rglob("*") if p.suffix in (".so", ".pyd"))


@pytest.mark.slow
def test_install_with_extensions_disabled_is_pure_and_works(tmp_path: Path) -> None:
    target = _install(tmp_path, {"VASTAR_FAST_NO_EXTENSIONS": "1"})
    assert _compiled_modules(target) == []
    assert _probe(target) == ("False vastar_fast.protocol._codec_py vastar_fast.sse._scanner_py")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="CC override is a Unix compiler setting")
def test_install_without_a_working_compiler_falls_back_to_pure(tmp_path: Path) -> None:
    pytest.importorskip("Cython")
    target = _install(
        tmp_path, {"CC": "false", "LDSHARED": "false", "VASTAR_FAST_NO_EXTENSIONS": "0"}
    )
    assert _compiled_modules(target) == []
    assert _probe(target) == ("False vastar_fast.protocol._codec_py vastar_fast.sse._scanner_py")
