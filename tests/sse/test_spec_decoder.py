"""Spec cases through SSEDecoder at every two-chunk split and in 1-byte chunks."""

from types import ModuleType
from typing import Any, List, Tuple

import pytest


def _c(text: str) -> str:
    """One OpenAI chunk's JSON with the given content."""
    import json

    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}, ensure_ascii=False)


# (name, stream bytes, expected deltas, expected (event, data, id, retry) list)
CASES: List[Tuple[str, bytes, List[str], List[Tuple[str, str, Any, Any]]]] = [
    (
        "lf",
        f"data: {_c('a')}\n\ndata: {_c('b')}\n\n".encode(),
        ["a", "b"],
        [("message", _c("a"), None, None), ("message", _c("b"), None, None)],
    ),
    (
        "crlf",
        f"data: {_c('a')}\r\n\r\ndata: {_c('b')}\r\n\r\n".encode(),
        ["a", "b"],
        [("message", _c("a"), None, None), ("message", _c("b"), None, None)],
    ),
    (
        "cr",
        f"data: {_c('a')}\r\rdata: {_c('b')}\r\r".encode(),
        ["a", "b"],
        [("message", _c("a"), None, None), ("message", _c("b"), None, None)],
    ),
    ("no-space", f"data:{_c('x')}\n\n".encode(), ["x"], [("message", _c("x"), None, None)]),
    (
        "comment",
        f": keep-alive\ndata: {_c('y')}\n:again\n\n".encode(),
        ["y"],
        [("message", _c("y"), None, None)],
    ),
    (
        "multiline",
        b'data: {"choices":[{"delta":\ndata: {"content":"m"}}]}\n\n',
        ["m"],
        [("message", '{"choices":[{"delta":\n{"content":"m"}}]}', None, None)],
    ),
    (
        "extra-blank",
        f"\n\n\ndata: {_c('z')}\n\n\n\n".encode(),
        ["z"],
        [("message", _c("z"), None, None)],
    ),
    (
        "fields",
        f"event: delta\nid: 7\nretry: 1500\ndata: {_c('f')}\n\n".encode(),
        ["f"],
        [("delta", _c("f"), "7", 1500)],
    ),
    (
        "id-nul-ignored",
        f"id: 1\n\nid: a\0b\nretry: x1\ndata: {_c('n')}\n\n".encode(),
        ["n"],
        [("message", _c("n"), "1", None)],
    ),
    (
        "unknown-field",
        f"foo: bar\ndata: {_c('u')}\nbaz\n\n".encode(),
        ["u"],
        [("message", _c("u"), None, None)],
    ),
    ("bom", f"\ufeffdata: {_c('bom')}\n\n".encode(), ["bom"], [("message", _c("bom"), None, None)]),
    (
        "utf8-multibyte",
        f"data: {_c('日本😀é')}\n\n".encode(),
        ["日本😀é"],
        [("message", _c("日本😀é"), None, None)],
    ),
    (
        "empty-data",
        b"data\n\ndata:\n\n",
        [],
        [("message", "", None, None), ("message", "", None, None)],
    ),
    (
        "done",
        f"data: {_c('d')}\n\ndata: [DONE]\n\n".encode(),
        ["d"],
        [("message", _c("d"), None, None), ("message", "[DONE]", None, None)],
    ),
    (
        "invalid-utf8",
        b'data: {"choices":[{"delta":{"content":"a\xffb"}}]}\n\n',
        ["a\ufffdb"],
        [("message", '{"choices":[{"delta":{"content":"a\ufffdb"}}]}', None, None)],
    ),
    (
        "unterminated-final",
        f"data: {_c('p')}\n\ndata: {_c('q')}".encode(),
        ["p", "q"],
        [("message", _c("p"), None, None), ("message", _c("q"), None, None)],
    ),
    (
        "escapes",
        b'data: {"choices":[{"delta":{"content":"\\ud83d\\ude00\\n\\u00e9\\"\\\\"}}]}\n\n',
        ['\U0001f600\n\u00e9"\\'],
        None,
    ),
]


def _run(twin: ModuleType, chunks: List[bytes], deltas: bool) -> List[Any]:
    d = twin.SSEDecoder()
    out: List[Any] = []
    for ch in chunks:
        out += d.feed_deltas(ch) if deltas else d.feed(ch)
    out += d.flush_deltas() if deltas else d.flush()
    return out


def _events(evs: List[Any]) -> List[Tuple[str, str, Any, Any]]:
    return [(e.event, e.data, e.id, e.retry) for e in evs]


@pytest.mark.parametrize("name,stream,deltas,events", CASES, ids=[c[0] for c in CASES])
def test_every_split_point(
    twin: ModuleType, name: str, stream: bytes, deltas: List[str], events: Any
) -> None:
    whole = _run(twin, [stream], True)
    assert whole == deltas
    if events is not None:
        assert _events(_run(twin, [stream], False)) == events
    for k in range(len(stream) + 1):
        parts = [stream[:k], stream[k:]]
        assert _run(twin, parts, True) == deltas, k
        if events is not None:
            assert _events(_run(twin, parts, False)) == events, k
    ones = [stream[i : i + 1] for i in range(len(stream))]
    assert _run(twin, ones, True) == deltas
    if events is not None:
        assert _events(_run(twin, ones, False)) == events


@pytest.mark.parametrize("name,stream,deltas,events", CASES, ids=[c[0] for c in CASES])
def test_parse_stream_follows_spec(
    twin: ModuleType, name: str, stream: bytes, deltas: List[str], events: Any
) -> None:
    text = stream.decode("utf-8", "replace")
    assert twin.parse_stream(text) == "".join(deltas)
    assert list(twin.iter_stream(text)) == deltas


def test_done_flag(twin: ModuleType) -> None:
    d = twin.SSEDecoder()
    assert not d.done
    d.feed(b"data: [DONE]")
    assert not d.done
    d.feed(b"\n\n")
    assert d.done
    d2 = twin.SSEDecoder()
    d2.feed_deltas(b"data:  [DONE] " + b" " * 100 + b"\n\n")
    assert d2.done


def test_cr_at_chunk_end_then_lf(twin: ModuleType) -> None:
    d = twin.SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n") == []  # the LF belongs to the CR: no empty line yet
    assert [e.data for e in d.feed(b"\r\n")] == ["a"]


def test_event_record(twin: ModuleType) -> None:
    e = twin.SSEEvent("message", "x", None, None)
    assert e == twin.SSEEvent("message", "x", None, None)
    assert e != twin.SSEEvent("message", "y", None, None)
    assert hash(e) == hash(twin.SSEEvent("message", "x", None, None))
    assert repr(e) == "SSEEvent(event='message', data='x', id=None, retry=None)"
    with pytest.raises(AttributeError):
        e.data = "z"


def test_event_equality_across_twins(both: Tuple[ModuleType, ModuleType]) -> None:
    py, c = both
    a, b = py.SSEEvent("t", "d", "1", 5), c.SSEEvent("t", "d", "1", 5)
    assert a == b and b == a and hash(a) == hash(b)
    assert a != c.SSEEvent("t", "d", "1", 6)


def test_type_errors(twin: ModuleType) -> None:
    for f in (twin.parse_stream, twin.parse_chunk, twin.iter_stream):
        with pytest.raises(TypeError):
            f(b"data: x")
    with pytest.raises(TypeError):
        twin.SSEDecoder().feed("data: x")
    with pytest.raises(TypeError):
        twin.extract_delta(5)
