"""The ``implementation`` fixture really switches what the clients run on, everywhere."""

import importlib
import os

import twins
from vastar_fast.protocol import client_core, codec
from vastar_fast.sse import scanner


def _twin_of(obj: object) -> str:
    module = twins.twin_of(obj)
    assert module is not None, obj
    return "pure" if module in twins.PURE else "compiled"


def test_selectors_point_at_the_twin_under_test(implementation: str) -> None:
    assert implementation in ("compiled", "pure")
    assert _twin_of(codec.FrameBuffer) == implementation
    assert _twin_of(codec.encode_http_request_frame) == implementation
    assert _twin_of(client_core.ClientConnection) == implementation
    assert _twin_of(client_core.BlockingChannel) == implementation
    assert _twin_of(scanner.SSEDecoder) == implementation
    assert os.environ["VASTAR_FAST_NO_EXTENSIONS"] == ("1" if implementation == "pure" else "0")


def test_no_name_anywhere_in_the_package_is_left_on_the_other_twin(implementation: str) -> None:
    """Scan every module (and class) of vastar_fast for functions and classes from a twin
    module: under the twin being tested, none may come from the other one."""
    left = [
        f"{getattr(owner, '__name__', owner)}.{name} -> {twins.twin_of(value)}"
        for owner, name, value in twins.bindings_of(twins.import_package())
        if twins.wrong_twin(value, implementation)
    ]
    assert left == []
    # the scan sees names bound at import time, such as these
    import vastar_fast.sse
    from vastar_fast.protocol import connection

    assert _twin_of(vastar_fast.sse.SSEEvent) == implementation
    assert _twin_of(vastar_fast.SSEDecoder) == implementation
    assert _twin_of(connection.ClientConnection) == implementation


def test_names_the_compiled_twin_shares_with_the_pure_one_are_really_shared() -> None:
    """A name in twins.SHARED must be the pure function itself in the compiled twin; once
    it gets a compiled twin of its own, it must leave the list (or the scan ignores it)."""
    for compiled_name, names in twins.SHARED.items():
        compiled = twins.import_twin(compiled_name)
        if compiled is None:
            continue
        for name in names:
            pure = importlib.import_module("vastar_fast.protocol._codec_py")
            assert getattr(compiled, name) is getattr(pure, name), (
                f"{compiled_name}.{name} is compiled now: remove it from tests/twins.py SHARED"
            )
