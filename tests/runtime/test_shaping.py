"""The released shape of an answer's headers (shaping.response_headers), both twins."""

from __future__ import annotations

from types import ModuleType

import pytest

from .helpers import runtime_twin


@pytest.fixture(params=["pure", "compiled"])
def mod(request: pytest.FixtureRequest) -> ModuleType:
    return runtime_twin(request.param, "shaping")


def test_names_lowered_repeats_joined_at_their_first_place(mod: ModuleType) -> None:
    raw = [(b"Set-Cookie", b"a=1"), (b"Content-Type", b"text/plain"),
           (b"set-cookie", b"b=2"), (b"SET-COOKIE", b"c=3")]  # fmt: skip
    out = mod.response_headers(raw, False)
    assert list(out.items()) == [("set-cookie", "a=1, b=2, c=3"), ("content-type", "text/plain")]


@pytest.mark.parametrize("value", [b"", b"1", b"a"])
def test_repeats_of_short_values_are_joined_too(mod: ModuleType, value: bytes) -> None:
    # "", "1" and "a" are shared string objects in CPython: a repeat must still be seen
    out = mod.response_headers([(b"X-A", value), (b"x-a", value), (b"X-B", value)], False)
    text = value.decode()
    assert out == {"x-a": f"{text}, {text}", "x-b": text}


def test_values_decode_as_utf8_with_replacement(mod: ModuleType) -> None:
    out = mod.response_headers([(b"X-A", "é".encode()), (b"X-B", b"\xff\xfe")], False)
    assert out == {"x-a": "é", "x-b": "\ufffd\ufffd"}


def test_decoded_bodies_lose_their_encoding_and_length(mod: ModuleType) -> None:
    raw = [(b"Content-Encoding", b"gzip"), (b"Content-Length", b"20"), (b"ETag", b"x")]
    assert mod.response_headers(raw, True) == {"etag": "x"}
    assert mod.response_headers(raw, False) == {
        "content-encoding": "gzip", "content-length": "20", "etag": "x"
    }  # fmt: skip
