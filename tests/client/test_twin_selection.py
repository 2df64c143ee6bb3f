"""The ``implementation`` fixture really switches what the clients run on."""

import os
from typing import Optional

from vastar_fast.client import results
from vastar_fast.protocol import codec
from vastar_fast.sse import scanner


def _twin_of(obj: object) -> str:
    module: Optional[str] = getattr(obj, "__module__", None)
    assert module is not None
    return "pure" if module.endswith("_py") else "compiled"


def test_selectors_point_at_the_twin_under_test(implementation: str) -> None:
    assert implementation in ("compiled", "pure")
    assert _twin_of(codec.FrameBuffer) == implementation
    assert _twin_of(codec.encode_http_request_frame) == implementation
    assert _twin_of(results._decode_payload) == implementation
    assert _twin_of(scanner.SSEDecoder) == implementation
    assert os.environ["VASTAR_FAST_NO_EXTENSIONS"] == ("1" if implementation == "pure" else "0")
