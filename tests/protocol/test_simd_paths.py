"""The compiled twin's JSON unescaper paths (scalar, sse2, avx2, avx512, neon).

Every path this build and CPU can run decodes the same inputs to exactly what the pure
twin gives; VASTAR_FAST_SIMD forces a path at import and falls back, with a log line,
to the best one when the named path is unavailable.  The inputs put each escape kind at
every offset around the 16- and 64-byte window edges (where a vector step stops, or
carries an escape into the next window), and damage them there.  The NEON path is
checked the same way by tools/simd_parity.c under qemu-aarch64 (tools/native_checks.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from types import ModuleType
from typing import Iterator, List, Tuple

import pytest

from .codec_helpers import outcome

Twins = Tuple[ModuleType, ModuleType]
NAMES = ("scalar", "sse2", "avx2", "avx512", "neon")

# Raw JSON-string pieces: every two-character escape, \u forms (joined pair, lone
# halves), backslash runs, raw UTF-8, and invalid ones (a raw control character, bad
# escapes, a truncated \u, a lone backslash, invalid UTF-8).
VALID = [
    b'\\"',
    b"\\\\",
    b"\\/",
    b"\\b",
    b"\\f",
    b"\\n",
    b"\\r",
    b"\\t",
    b"\\u00e9",
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00x",
    b"\\\\\\\\",
    b'\\\\\\"',
    "é".encode(),
    "中".encode(),
]
INVALID = [b"\x01", b"\\x", b"\\u12", b"\\u12g4", b"\\", b"\xff", b"\xc3("]


def _doc(raw: bytes) -> bytes:
    return (
        b'{"body":"' + raw + b'","headers":{"x-long":"' + raw + b'"},'
        b'"is_streaming":false,"status_code":200}'
    )


@pytest.fixture
def paths(twins: Twins) -> Iterator[List[str]]:
    """The paths this build and CPU can run; the selection is restored afterwards."""
    comp = twins[1]
    before = comp._simd()
    available = list(comp._simd_paths())
    yield available
    comp._simd(before)


def _check_all_paths(twins: Twins, paths: List[str], doc: bytes) -> None:
    pure, comp = twins
    want = outcome(pure.decode_http_response_payload, doc)
    for path in paths:
        assert comp._simd(path) == path
        got = outcome(comp.decode_http_response_payload, doc)
        assert got == want, (path, doc)


def test_paths_available(twins: Twins, paths: List[str]) -> None:
    comp = twins[1]
    assert paths[0] == "scalar" and set(paths) <= set(NAMES)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "sse2" in paths
    if platform.machine().lower() in ("aarch64", "arm64"):
        assert "neon" in paths
    with pytest.raises(ValueError, match="unknown SIMD path"):
        comp._simd("mmx")


@pytest.mark.parametrize("piece", VALID + INVALID, ids=repr)
def test_escape_at_every_window_offset(twins: Twins, paths: List[str], piece: bytes) -> None:
    """The piece at each offset 0..140 of a 200-byte plain body (every position in and
    around the first two 64-byte windows), alone and followed by a second escape."""
    for offset in range(0, 141):
        for tail in (b"", b'\\"', b"\\n"):
            raw = b"a" * offset + piece + tail + b"z" * (200 - offset)
            _check_all_paths(twins, paths, _doc(raw))


def test_backslash_runs_across_the_window_edge(twins: Twins, paths: List[str]) -> None:
    """Runs of 1-6 backslashes ending at every byte around offset 64 and 128, followed by
    each byte that can follow a backslash (and some that cannot)."""
    for run in range(1, 7):
        for end in list(range(56, 72)) + list(range(120, 136)):
            for after in (b'"', b"n", b"t", b"/", b"u0041", b"x", b"\x01"):
                raw = b"q" * (end - run) + b"\\" * run + after + b"w" * 90
                _check_all_paths(twins, paths, _doc(raw))


def test_sse_body_decodes_the_same_on_every_path(twins: Twins, paths: List[str]) -> None:
    """A 35 KB escape-dense OpenAI stream body, as the codec benchmark decodes it."""
    events = []
    for i in range(120):
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": f" w{i}\t\\é"}}],
        }
        events.append("data: " + json.dumps(chunk) + "\n\n")
    body = "".join(events) + "data: [DONE]\n\n"
    doc = json.dumps(
        {"body": body, "headers": {}, "is_streaming": True, "status_code": 200}
    ).encode()
    _check_all_paths(twins, paths, doc)
    pure = twins[0].decode_http_response_payload(doc)
    assert pure.body == body.encode()


def _selected(env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VASTAR_FAST_SIMD=env_value)
    env.pop("VASTAR_FAST_NO_EXTENSIONS", None)
    code = (
        "import vastar_fast.protocol._codec_c as c; "
        "print(c._simd()); print(','.join(c._simd_paths()))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_environment_variable_forces_each_path(twins: Twins, paths: List[str]) -> None:
    best = paths[-1]
    for path in paths:
        proc = _selected(path)
        assert proc.stdout.split() == [path, ",".join(paths)]
        # no fallback warning (other import-time warnings, e.g. 3.14t re-enabling the
        # GIL for the compiled twins, may appear)
        assert "VASTAR_FAST_SIMD" not in proc.stderr
    proc = _selected(" AVX2 " if "avx2" in paths else "Scalar")
    assert proc.stdout.split()[0] == ("avx2" if "avx2" in paths else "scalar")
    assert _selected("").stdout.split()[0] == best


def test_environment_variable_falls_back_with_a_log_line(twins: Twins, paths: List[str]) -> None:
    """A path this CPU lacks (neon on x86-64, the x86 ones on ARM) or an unknown name:
    the best available path, and a warning naming the variable and the choice."""
    best = paths[-1]
    unavailable = [name for name in NAMES if name not in paths]
    assert unavailable  # no CPU runs both the x86 paths and neon
    for value in [*unavailable, "bogus"]:
        proc = _selected(value)
        assert proc.stdout.split()[0] == best, value
        assert "VASTAR_FAST_SIMD" in proc.stderr and f"using {best}" in proc.stderr, value
