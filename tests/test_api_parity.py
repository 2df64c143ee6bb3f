"""The public API of vastar_fast matches ../shared/API.md name for name."""

from __future__ import annotations

import dataclasses
import inspect
from enum import IntEnum

import pytest

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


def params(func: object) -> list:
    return [
        (p.name, p.default if p.default is not inspect.Parameter.empty else "<required>")
        for p in inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    ]


def test_function_signatures() -> None:
    assert params(vastar_fast.retry_with_backoff) == [
        ("func", "<required>"),
        ("max_retries", 3),
        ("initial_backoff_ms", 1000),
        ("max_backoff_ms", 30000),
        ("retryable_errors", None),
    ]
    assert params(vastar_fast.RuntimeClient) == [("config", None)]
    client = vastar_fast.RuntimeClient
    assert params(client.connect) == [("self", "<required>")]
    assert params(client.close) == [("self", "<required>")]
    assert params(client.execute_http) == [("self", "<required>"), ("request", "<required>")]
    assert hasattr(client, "__enter__") and hasattr(client, "__exit__")
    assert params(vastar_fast.ConnectorException) == [
        ("message", "<required>"),
        ("error_class", "<required>"),
        ("request_id", "<required>"),
    ]


def test_static_helpers() -> None:
    helper = vastar_fast.HTTPResponseHelper
    for name in ("is_2xx", "is_3xx", "is_4xx", "is_5xx", "get_body_as_json"):
        assert isinstance(inspect.getattr_static(helper, name), staticmethod)
        assert params(getattr(helper, name)) == [("response", "<required>")]
    assert params(helper.get_body_as_string) == [("response", "<required>"), ("encoding", "utf-8")]
    assert params(helper.get_header) == [("response", "<required>"), ("name", "<required>")]
    parser = vastar_fast.SSEParser
    for name, arg in (
        ("parse_chunk", "chunk"),
        ("parse_stream", "data"),
        ("parse_stream_generator", "data"),
    ):
        assert isinstance(inspect.getattr_static(parser, name), staticmethod)
        assert params(getattr(parser, name)) == [(arg, "<required>")]


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
