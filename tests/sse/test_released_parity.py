"""Ours == released wherever the released parser returns content."""

import json
from types import ModuleType

import sse_released as _released
from hypothesis import given, settings
from hypothesis import strategies as st
from sse_strategies import chunk_json, released_friendly_stream

from vastar_fast.sse import SSEParser


@settings(max_examples=300, deadline=None)
@given(stream=released_friendly_stream())
def test_stream_equals_released_on_friendly_streams(twin: ModuleType, stream: str) -> None:
    assert twin.parse_stream(stream) == _released.parse_stream(stream)
    assert list(twin.iter_stream(stream)) == list(_released.parse_stream_generator(stream))
    for piece in stream.split("\n\n"):
        if piece.startswith("data: "):
            assert twin.parse_chunk(piece) == _released.parse_chunk(piece)


@settings(max_examples=300, deadline=None)
@given(
    body=chunk_json(),
    prefix=st.sampled_from(["data: ", "data:", "xxxxx ", "data:  ", ""]),
    suffix=st.sampled_from(["", "\n", "\r\n", "  ", "\n\n", "\nmore", "\n\ndata: x"]),
)
def test_parse_chunk_never_loses_released_content(
    twin: ModuleType, body: str, prefix: str, suffix: str
) -> None:
    chunk = prefix + body + suffix
    expected = _released.parse_chunk(chunk)
    if expected is not None:
        assert twin.parse_chunk(chunk) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list('data: {}[]"choices,delta:content\n\r\\01x')), max_size=80
    )
)
def test_random_text_never_loses_released_content(twin: ModuleType, stream: str) -> None:
    # wherever the released parser yields str content, every piece of it is ours too
    try:
        expected = _released.parse_stream(stream)
    except TypeError:  # released += of a non-str; not a released-friendly input
        return
    if expected:
        got = twin.parse_stream(stream)
        assert expected in got or got == expected
    for piece in stream.split("\n\n"):
        rc = _released.parse_chunk(piece)
        if rc is not None:
            assert twin.parse_chunk(piece) == rc


def test_pretty_printed_json_uses_released_fallback(twin: ModuleType) -> None:
    doc = json.dumps({"choices": [{"delta": {"content": "hi"}}]}, indent=2)
    stream = "data: " + doc + "\n\ndata: [DONE]\n\n"
    assert _released.parse_stream(stream) == "hi"
    assert twin.parse_stream(stream) == "hi"
    assert twin.parse_chunk("data: " + doc) == "hi"


def test_non_str_content_is_returned_by_chunk_and_skipped_by_streams(twin: ModuleType) -> None:
    chunk = 'data: {"choices":[{"delta":{"content":5}}]}'
    assert twin.parse_chunk(chunk) == 5 == _released.parse_chunk(chunk)
    stream = chunk + '\n\ndata: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    assert twin.parse_stream(stream) == "a"
    assert list(twin.iter_stream(stream)) == ["a"]


def test_facade_matches_released_examples() -> None:
    s = (
        'data: {"id":"123","choices":[{"delta":{"content":"Hello"}}]}\n\n'
        'data: {"id":"123","choices":[{"delta":{"content":" world"}}]}\n\n'
        "data: [DONE]\n\n"
    )
    assert SSEParser.parse_stream(s) == "Hello world"
    assert list(SSEParser.parse_stream_generator(s)) == ["Hello", " world"]
    assert SSEParser.parse_chunk('data: {"choices":[{"delta":{"content":""}}]}') == ""
    assert SSEParser.parse_chunk("data: [DONE]") is None
    assert SSEParser.parse_chunk('data: {"choices":[{"delta":{}}]}') is None
