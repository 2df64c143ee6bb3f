"""KeyValue lists cannot amplify: a vector pointing at one table many times is refused
by both twins with the same error instead of being decoded into many copies."""

from __future__ import annotations

from types import ModuleType
from typing import Tuple

import pytest

from fuzzing import kv_request
from vastar_fast.errors import ProtocolError
from vastar_fast.protocol import _codec_py

from .codec_helpers import outcome

request_with_kv = kv_request  # the hostile builder's shape (tests/fuzzing.py)


def test_amplified_vector_is_refused(codec: ModuleType) -> None:
    body = request_with_kv([("k", "v" * 3000)], repeat_first=3000)
    assert len(body) < 20_000  # ~9 MB of strings if decoded naively
    with pytest.raises(ProtocolError, match="decode to more text than the frame holds"):
        codec.decode_execute_request(body)


def test_too_many_entries_is_refused(codec: ModuleType) -> None:
    body = request_with_kv([("k", "v")], repeat_first=_codec_py._KV_MAX_ENTRIES)
    with pytest.raises(ProtocolError, match="more than the 4096"):
        codec.decode_execute_request(body)


def test_ordinary_lists_and_a_little_sharing_still_decode(codec: ModuleType) -> None:
    pairs = [(f"key{i}", f"value{i}") for i in range(200)]
    assert codec.decode_execute_request(request_with_kv(pairs)).headers == pairs
    shared = request_with_kv([("vastar-ext", "stream")], repeat_first=3)
    assert codec.decode_execute_request(shared).headers == [("vastar-ext", "stream")] * 4


def test_twins_refuse_identically(twins: Tuple[ModuleType, ModuleType]) -> None:
    pure, comp = twins
    for body in (
        request_with_kv([("k", "v" * 3000)], repeat_first=3000),
        request_with_kv([("k", "v")], repeat_first=5000),
        request_with_kv([("a" * 70_000, "b")], repeat_first=1),
    ):
        assert outcome(pure.decode_execute_request, body) == outcome(
            comp.decode_execute_request, body
        )
