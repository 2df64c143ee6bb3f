"""What the decoder fuzzers (tests/protocol/fuzz_decoders.py) found, kept as tests.

Each test names the input shape that once made the twins disagree.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

from vastar_fast import HTTPRequest
from vastar_fast.errors import FrameTooLargeError
from vastar_fast.protocol import _client_py, _codec_py

try:
    _compiled: Any = importlib.import_module("vastar_fast.protocol._codec_c")
    _compiled.ClientConnection  # noqa: B018
except (ImportError, AttributeError):
    _compiled = None


@pytest.fixture(params=["pure", "compiled"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "pure":
        return _client_py
    if _compiled is None:
        pytest.skip("compiled twin not built (python setup.py build_ext --inplace)")
    return _compiled  # type: ignore[no-any-return]


def test_an_answer_before_a_bad_length_field_is_delivered(core: ModuleType) -> None:
    """A whole answer followed, in the same read, by a length field over the cap: the
    answer reaches its waiter, then the connection fails (the pure twin used to split
    every frame out first, so the bad length failed the waiter without its answer)."""
    conn = core.ClientConnection(request_id_seed=1)
    waiter, _ = conn.open_request(HTTPRequest("GET", "http://h/"))
    other, _ = conn.open_request(HTTPRequest("GET", "http://h/"))
    answer = _codec_py.encode_http_response_frame(waiter.request_id, 200, {}, "ok", False, 5)
    with pytest.raises(FrameTooLargeError):
        conn.receive_data(answer + b"\xff\xff\xff\xff")
    assert [e.request_id for e in waiter.events] == [waiter.request_id]
    assert conn.response(waiter.events[0]).body == b"ok"
    assert other.finished and not other.events  # the one without an answer: failed
