"""KeyValue lists cannot amplify: a vector pointing at one table many times is refused
by both twins with the same error instead of being decoded into many copies."""

from __future__ import annotations

from types import ModuleType
from typing import List, Tuple

import flatbuffers
import pytest

from vastar_fast.errors import ProtocolError
from vastar_fast.protocol import _codec_py

from .codec_helpers import outcome


def request_with_kv(pairs: List[Tuple[str, str]], repeat_first: int = 0) -> bytes:
    """ExecuteRequest FlatBuffers bytes; ``repeat_first`` extra vector entries point at
    the first KeyValue table again (what a hostile builder can do)."""
    b = flatbuffers.Builder(1024)
    tables = []
    for k, v in pairs:
        ko, vo = b.CreateString(k), b.CreateString(v)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, ko, 0)
        b.PrependUOffsetTRelativeSlot(1, vo, 0)
        tables.append(b.EndObject())
    entries = tables + [tables[0]] * repeat_first
    b.StartVector(4, len(entries), 4)
    for t in reversed(entries):
        b.PrependUOffsetTRelative(t)
    vec = b.EndVector()
    tenant, conn, op = b.CreateString("t"), b.CreateString("http"), b.CreateString("request")
    payload = b.CreateByteVector(b'{"method":"GET","url":"http://h/"}')
    b.StartObject(9)
    b.PrependUint64Slot(0, 7, 0)
    b.PrependUOffsetTRelativeSlot(1, tenant, 0)
    b.PrependUOffsetTRelativeSlot(4, conn, 0)
    b.PrependUOffsetTRelativeSlot(5, op, 0)
    b.PrependUOffsetTRelativeSlot(7, payload, 0)
    b.PrependUOffsetTRelativeSlot(8, vec, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


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
