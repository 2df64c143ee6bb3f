"""The public API of vastar_fast matches ../shared/API.md name for name."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from enum import IntEnum
from pathlib import Path
from typing import List, Tuple

import pytest

import support
import vastar_fast
from vastar_fast import types as vtypes

TOP_LEVEL = [
    "RuntimeClient",
    "RuntimeConfig",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPResponseHelper",
    "SSEParser",
    "ConnectorException",
    "ErrorClass",
    "retry_with_backoff",
]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_names(name: str) -> None:
    assert hasattr(vastar_fast, name)
    assert name in vastar_fast.__all__


def test_types_module_names_and_constants() -> None:
    assert issubclass(vtypes.MessageType, IntEnum)
    assert vtypes.MessageType.EXECUTE_REQUEST == 0 and vtypes.MessageType.EXECUTE_RESPONSE == 1
    assert vtypes.FRAME_LENGTH_SIZE == 4
    assert vtypes.MESSAGE_TYPE_SIZE == 1
    assert vtypes.MAX_PAYLOAD_SIZE == 10 * 1024 * 1024
    assert vtypes.DEFAULT_TIMEOUT_MS == 60000
    assert vtypes.DEFAULT_SOCKET_PATH == "/tmp/vastar-connector-runtime.sock"


def test_error_class_members() -> None:
    assert [(m.name, m.value) for m in vastar_fast.ErrorClass] == [
        ("SUCCESS", 0),
        ("TRANSIENT", 1),
        ("PERMANENT", 2),
        ("RATE_LIMITED", 3),
        ("TIMEOUT", 4),
        ("INVALID_REQUEST", 5),
    ]
    assert issubclass(vastar_fast.ErrorClass, IntEnum)


def fields(cls: type) -> list:
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "<required>"
        out.append((f.name, default))
    return out


def test_dataclass_fields_and_defaults() -> None:
    assert fields(vastar_fast.RuntimeConfig) == [
        ("tenant_id", "default"),
        ("workspace_id", ""),
        ("timeout_ms", 60000),
        ("socket_path", "/tmp/vastar-connector-runtime.sock"),
        ("use_tcp", False),
        ("tcp_host", "127.0.0.1"),
        ("tcp_port", 5000),
    ]
    assert fields(vastar_fast.HTTPRequest) == [
        ("method", "<required>"),
        ("url", "<required>"),
        ("headers", None),
        ("body", None),
        ("timeout_ms", None),
        ("tenant_id", None),
        ("workspace_id", None),
        ("trace_id", None),
    ]
    assert fields(vastar_fast.HTTPResponse) == [
        ("request_id", "<required>"),
        ("status_code", "<required>"),
        ("headers", "<required>"),
        ("body", "<required>"),
        ("duration_us", "<required>"),
        ("error_class", "<required>"),
        ("error_message", None),
    ]


# ------------------------------------------------------------------ signatures
# Every public callable of the released SDK, as ../shared/API.md gives it (and the
# released code has it). Compared by parameter name, kind and default, not position.
SIGNATURES = {
    "RuntimeClient": "(config=None)",
    "RuntimeClient.connect": "(self)",
    "RuntimeClient.execute_http": "(self, request)",
    "RuntimeClient.close": "(self)",
    "RuntimeClient.__enter__": "(self)",
    "RuntimeClient.__exit__": "(self, exc_type, exc_val, exc_tb)",
    "RuntimeConfig": '(tenant_id="default", workspace_id="", timeout_ms=60000, '
    'socket_path="/tmp/vastar-connector-runtime.sock", use_tcp=False, '
    'tcp_host="127.0.0.1", tcp_port=5000)',
    "HTTPRequest": "(method, url, headers=None, body=None, timeout_ms=None, tenant_id=None, "
    "workspace_id=None, trace_id=None)",
    "HTTPResponse": "(request_id, status_code, headers, body, duration_us, error_class, "
    "error_message=None)",
    "ConnectorException": "(message, error_class, request_id)",
    "ConnectorException.is_retryable": "(self)",
    "ConnectorException.get_error_class_name": "(self)",
    "HTTPResponseHelper.is_2xx": "(response)",
    "HTTPResponseHelper.is_3xx": "(response)",
    "HTTPResponseHelper.is_4xx": "(response)",
    "HTTPResponseHelper.is_5xx": "(response)",
    "HTTPResponseHelper.get_body_as_string": '(response, encoding="utf-8")',
    "HTTPResponseHelper.get_body_as_json": "(response)",
    "HTTPResponseHelper.get_header": "(response, name)",
    "SSEParser.parse_chunk": "(sse_chunk)",
    "SSEParser.parse_stream": "(sse_data)",
    "SSEParser.parse_stream_generator": "(sse_data)",
    "retry_with_backoff": "(func, max_retries=3, initial_backoff_ms=1000, max_backoff_ms=30000, "
    "retryable_errors=None)",
}
STATIC = {name for name in SIGNATURES if name.startswith(("HTTPResponseHelper.", "SSEParser."))}


def shape(sig: inspect.Signature) -> List[Tuple[str, str, object]]:
    """(name, kind, default) per parameter: what a caller's code depends on."""
    return [
        (p.name, p.kind.name, "<required>" if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
    ]


def spec_shape(text: str) -> List[Tuple[str, str, object]]:
    """The shape of a signature written as ``(a, b=1)`` (annotations allowed)."""
    fn = ast.parse(f"def f{text}: pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    args = fn.args
    positional = args.posonlyargs + args.args
    defaults: List[object] = ["<required>"] * (len(positional) - len(args.defaults))
    defaults += [ast.literal_eval(d) for d in args.defaults]
    out: List[Tuple[str, str, object]] = [
        (a.arg, "POSITIONAL_ONLY" if a in args.posonlyargs else "POSITIONAL_OR_KEYWORD", d)
        for a, d in zip(positional, defaults)
    ]
    if args.vararg:
        out.append((args.vararg.arg, "VAR_POSITIONAL", "<required>"))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, "KEYWORD_ONLY", "<required>" if d is None else ast.literal_eval(d)))
    if args.kwarg:
        out.append((args.kwarg.arg, "VAR_KEYWORD", "<required>"))
    return out


def resolve(module: object, dotted: str) -> object:
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_matches_the_released_api(name: str) -> None:
    ours = resolve(vastar_fast, name)
    assert shape(inspect.signature(ours)) == spec_shape(SIGNATURES[name])  # type: ignore[arg-type]
    if name in STATIC:
        owner, attr = name.split(".")
        assert isinstance(inspect.getattr_static(getattr(vastar_fast, owner), attr), staticmethod)


API_MD = Path(support.SHARED) / "API.md"


@pytest.mark.skipif(not API_MD.is_file(), reason="../shared/API.md is not beside this checkout")
def test_the_table_above_is_what_api_md_says() -> None:
    """Every signature API.md writes out agrees with SIGNATURES (so the table cannot drift
    from the document); names it lists without a signature are still checked above."""
    text = API_MD.read_text(encoding="utf-8")
    found = 0
    for name, expected in SIGNATURES.items():
        short = name.split(".")[-1]
        for match in re.finditer(rf"(?<![\w.]){re.escape(short)}(\([^()`]*\))", text):
            args = match.group(1)
            try:
                documented = spec_shape(args)
            except (SyntaxError, ValueError):
                continue
            if "." in name and not name.startswith(("HTTPResponseHelper", "SSEParser")):
                documented = [("self", "POSITIONAL_OR_KEYWORD", "<required>"), *documented]
            assert documented == spec_shape(expected), (name, args)
            found += 1
            break
    assert found >= 12


RELEASED_SDK = os.environ.get("VASTAR_RELEASED_SDK") or str(
    Path(support.SHARED) / "peers/sdk-python"
)
_DUMP = """
import inspect, json, sys
import vastar_connector_sdk as m
out = {}
for name in json.loads(sys.argv[1]):
    obj = m
    for part in name.split("."):
        obj = getattr(obj, part)
    out[name] = [(p.name, p.kind.name, "<required>" if p.default is p.empty else p.default)
                 for p in inspect.signature(obj).parameters.values()]
print(json.dumps(out))
"""


@pytest.mark.skipif(
    not (Path(RELEASED_SDK) / "vastar_connector_sdk").is_dir(),
    reason="the released SDK is not available (VASTAR_RELEASED_SDK or ../shared/peers)",
)
def test_signatures_match_the_released_sdk_itself() -> None:
    env = dict(os.environ, PYTHONPATH=RELEASED_SDK)
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP, json.dumps(sorted(SIGNATURES))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    released = {k: [tuple(p) for p in v] for k, v in json.loads(proc.stdout).items()}
    for name in SIGNATURES:
        assert shape(inspect.signature(resolve(vastar_fast, name))) == released[name], name  # type: ignore[arg-type]


def test_connector_exception_behaviour() -> None:
    exc = vastar_fast.ConnectorException("upstream down", vastar_fast.ErrorClass.TRANSIENT, 7)
    assert (
        str(exc)
        == "ConnectorException(request_id=7, error_class=TRANSIENT, message='upstream down')"
    )
    assert (exc.message, exc.error_class, exc.request_id) == ("upstream down", 1, 7)
    assert exc.get_error_class_name() == "TRANSIENT"
    retryable = {
        c.name
        for c in vastar_fast.ErrorClass
        if vastar_fast.ConnectorException("m", c, 1).is_retryable()
    }
    assert retryable == {"TRANSIENT", "RATE_LIMITED", "TIMEOUT"}
    assert isinstance(exc, Exception)
    odd = vastar_fast.ConnectorException("m", 9, 1)
    assert odd.get_error_class_name() == "UNKNOWN(9)" and not odd.is_retryable()


def test_helpers_behaviour() -> None:
    r = vastar_fast.HTTPResponse(
        1,
        404,
        {"content-type": "application/json"},
        b'{"a": [1]}',
        5,
        vastar_fast.ErrorClass.SUCCESS,
    )
    h = vastar_fast.HTTPResponseHelper
    assert (h.is_2xx(r), h.is_3xx(r), h.is_4xx(r), h.is_5xx(r)) == (False, False, True, False)
    assert h.get_body_as_json(r) == {"a": [1]}
    assert h.get_body_as_string(r) == '{"a": [1]}'
    assert h.get_header(r, "Content-Type") == "application/json"
    assert h.get_header(r, "x-missing") is None
    for status, expect in (
        (199, (False,) * 4),
        (200, (True, False, False, False)),
        (399, (False, True, False, False)),
        (599, (False, False, False, True)),
        (600, (False,) * 4),
    ):
        r.status_code = status
        assert (h.is_2xx(r), h.is_3xx(r), h.is_4xx(r), h.is_5xx(r)) == expect


def test_no_numpy_needed() -> None:
    import subprocess
    import sys

    # Hide numpy from every finder, as on a machine without it, then use the hot paths.
    code = (
        "import importlib.machinery, sys\n"
        "orig = importlib.machinery.PathFinder.find_spec\n"
        "importlib.machinery.PathFinder.find_spec = classmethod(lambda cls, name, *a, **k: None if name == 'numpy' else orig(name, *a, **k))\n"
        "sys.modules['numpy'] = None\n"
        "import vastar_fast, vastar_fast.protocol.codec as c\n"
        "f = c.encode_execute_response(1, 0, None, b'{}', 1)\n"
        "print(c.decode_execute_response(f[5:]).request_id)\n"
        'print(vastar_fast.SSEParser.parse_stream(\'data: {"choices":[{"delta":{"content":"x"}}]}\\n\\n\'))'
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "x"]
