"""What ``import vastar_fast`` costs: neither flatbuffers nor numpy when the compiled
twin is live (the pure twin imports flatbuffers on first encode), asyncio only when the
asyncio client is used, and none of the stdlib modules it defers (logging until it
logs; threading, socket, math, contextvars with the compiled twin; typing, dataclasses,
inspect, json and re with the compiled twin, nor json after a round trip). Checked in fresh
interpreters, with numpy installed: which modules are loaded, never how long it took
(``python -m vastar_fast.benchmarks.import_time`` measures that)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import vastar_fast

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])

PROBE = r"""
import json, sys
# What the interpreter loaded before vastar_fast (site-packages' .pth files run at
# startup and may import, say, certifi and with it threading): not ours to count.
STARTUP = set(sys.modules)
def loaded():
    return {m: m in sys.modules and m not in STARTUP for m in ("flatbuffers", "numpy", "asyncio")}
DEFERRED = ("logging", "threading", "socket", "_socket", "math", "contextvars")
import vastar_fast
out = {"import": loaded(), "accelerated": vastar_fast.ACCELERATED}
out["deferred"] = sorted(m for m in DEFERRED if m in sys.modules and m not in STARTUP)
out["startup"] = sorted(m for m in ("flatbuffers", "numpy", "asyncio") if m in STARTUP)
from vastar_fast import HTTPRequest, RuntimeClient, SSEParser
from vastar_fast.protocol import codec
from vastar_fast.protocol.connection import ClientConnection
conn = ClientConnection()
waiter, frame = conn.open_request(HTTPRequest("GET", "http://x/"))
conn.receive_data(codec.encode_execute_response(waiter.request_id, 0, None, b'{"status_code":200}', 1))
RuntimeClient()
SSEParser.parse_stream('data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
out["use"] = loaded()
from vastar_fast import AsyncRuntimeClient
out["async"] = loaded()
print(json.dumps(out))
"""


def probe(no_extensions: str) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=SRC, VASTAR_FAST_NO_EXTENSIONS=no_extensions)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result: Dict[str, object] = json.loads(proc.stdout)
    return result


# Modules import vastar_fast leaves out with the compiled twin: typing and dataclasses
# (with what they import: inspect, re) are for type checkers and for whoever inspects a
# record (vastar_fast._records); json is imported by the first call that parses JSON.
# The probe imports nothing before taking the startup set, so json counts here.
STDLIB_PROBE = r"""
import sys
STARTUP = set(sys.modules)
NOT_AT_IMPORT = ("typing", "dataclasses", "inspect", "json", "re")
def loaded():
    return ",".join(m for m in NOT_AT_IMPORT if m in sys.modules and m not in STARTUP)
import vastar_fast
out = [loaded(), str(vastar_fast.ACCELERATED)]
from vastar_fast import HTTPRequest, HTTPResponse, RuntimeClient, RuntimeConfig, SSEParser
from vastar_fast.client.endpoint import resolve_endpoint
from vastar_fast.protocol import codec
from vastar_fast.protocol.client_core import ClientConnection
conn = ClientConnection()
waiter, frame = conn.open_request(HTTPRequest("GET", "http://x/", headers={"a": "b"}, body=b"x"))
payload = b'{"status_code":200,"headers":{"h":"v"},"body":"ok"}'
conn.receive_data(codec.encode_execute_response(waiter.request_id, 0, None, payload, 1))
response = conn.response(waiter.take())
assert response.status_code == 200 and response.body == b"ok", response
RuntimeClient(); resolve_endpoint(RuntimeConfig()); repr(HTTPRequest("GET", "u"))
SSEParser.parse_stream('data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
out.append(loaded())
print("|".join(out))
"""


def stdlib_probe(no_extensions: str) -> List[str]:
    env = dict(os.environ, PYTHONPATH=SRC, VASTAR_FAST_NO_EXTENSIONS=no_extensions)
    proc = subprocess.run(
        [sys.executable, "-c", STDLIB_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("|")


def test_compiled_twin_imports_no_typing_dataclasses_inspect_json_or_re() -> None:
    try:
        import vastar_fast.protocol._codec_c  # noqa: F401
    except ImportError:
        pytest.skip("compiled twin not built")
    at_import, accelerated, after_round_trip = stdlib_probe("0")
    assert accelerated == "True"
    assert at_import == "", f"import vastar_fast loaded {at_import}"
    # The first request looks for opentelemetry (tracecontext), which, when installed,
    # imports typing and re itself: only json is ours to check after a round trip.
    assert "json" not in after_round_trip.split(","), "a request and its answer loaded json"


def test_numpy_and_flatbuffers_are_installed_so_the_checks_mean_something() -> None:
    assert importlib.util.find_spec("numpy") is not None
    assert importlib.util.find_spec("flatbuffers") is not None


def test_compiled_twin_never_imports_flatbuffers_numpy_or_asyncio_unasked() -> None:
    try:
        import vastar_fast.protocol._codec_c  # noqa: F401
    except ImportError:
        pytest.skip("compiled twin not built")
    out = probe("0")
    assert out["accelerated"] is True
    assert out["startup"] == [], "the interpreter imported these before vastar_fast"
    assert out["import"] == {"flatbuffers": False, "numpy": False, "asyncio": False}
    assert out["deferred"] == []
    assert out["use"] == {"flatbuffers": False, "numpy": False, "asyncio": False}
    assert out["async"] == {"flatbuffers": False, "numpy": False, "asyncio": True}


def test_pure_twin_imports_flatbuffers_only_once_used() -> None:
    out = probe("1")
    assert out["accelerated"] is False
    assert out["startup"] == [], "the interpreter imported these before vastar_fast"
    assert out["import"] == {"flatbuffers": False, "numpy": False, "asyncio": False}
    # the pure client core imports socket and threading at import; logging waits
    deferred = out["deferred"]
    assert isinstance(deferred, list) and "logging" not in deferred
    use = out["use"]
    assert isinstance(use, dict) and use["flatbuffers"] is True and use["asyncio"] is False
    assert out["async"]["asyncio"] is True  # type: ignore[index]
