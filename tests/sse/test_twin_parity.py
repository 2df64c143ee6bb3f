"""Both twins, same input -> same output or same exception type."""

from types import ModuleType
from typing import Any, Callable, Tuple

import sse_released as released
from hypothesis import given, settings
from hypothesis import strategies as st
from sse_strategies import chunk_json

_sseish = st.text(
    alphabet=st.sampled_from(
        list('data:event:id:retry: {}[]"\\choices,delta:content[DONE]\n\r\n\r\ufeff\x00é😀01-eE.')
    ),
    max_size=120,
)


def _outcome(f: Callable[..., Any], *args: Any) -> Tuple[str, Any]:
    try:
        r = f(*args)
        if hasattr(r, "__next__"):
            r = list(r)
        return ("ok", r)
    except Exception as exc:  # the type is what must match
        return ("raise", type(exc).__name__)


def _events(evs: Any) -> Any:
    return [(e.event, e.data, e.id, e.retry) for e in evs]


@settings(max_examples=400, deadline=None)
@given(s=_sseish)
def test_str_functions(both: Tuple[ModuleType, ModuleType], s: str) -> None:
    py, c = both
    for name in ("parse_stream", "iter_stream", "parse_chunk", "extract_delta"):
        assert _outcome(getattr(py, name), s) == _outcome(getattr(c, name), s), name


@settings(max_examples=300, deadline=None)
@given(
    body=chunk_json(), cut=st.integers(0, 400), junk=st.sampled_from(["", "x", "}", " ", "\x00"])
)
def test_truncated_and_mutated_chunks(
    both: Tuple[ModuleType, ModuleType], body: str, cut: int, junk: str
) -> None:
    py, c = both
    for doc in (body[:cut], body[:cut] + junk + body[cut:], body + junk):
        for s in (doc, "data: " + doc, "data: " + doc + "\n\n"):
            for name in ("parse_stream", "iter_stream", "parse_chunk", "extract_delta"):
                assert _outcome(getattr(py, name), s) == _outcome(getattr(c, name), s), name
        assert py.extract_delta(doc) == c.extract_delta(doc) == released.json_content(doc)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200) | _sseish.map(lambda s: s.encode("utf-8", "surrogatepass")),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_decoder_on_random_bytes(
    both: Tuple[ModuleType, ModuleType], data: bytes, cuts: list
) -> None:
    py, c = both
    points = sorted({min(k, len(data)) for k in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    dp, dc = py.SSEDecoder(), c.SSEDecoder()
    ep = _events([e for ch in chunks for e in dp.feed(ch)] + dp.flush())
    ec = _events([e for ch in chunks for e in dc.feed(ch)] + dc.flush())
    assert ep == ec
    assert dp.done == dc.done
    dp, dc = py.SSEDecoder(), c.SSEDecoder()
    assert [x for ch in chunks for x in dp.feed_deltas(ch)] + dp.flush_deltas() == [
        x for ch in chunks for x in dc.feed_deltas(ch)
    ] + dc.flush_deltas()
    # bytes and str inputs of extract_delta agree with the decode-first rule
    assert (
        py.extract_delta(data)
        == c.extract_delta(data)
        == released.json_content(data.decode("utf-8", "replace"))
    )


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_decoder_events_independent_of_chunking(
    both: Tuple[ModuleType, ModuleType], data: bytes
) -> None:
    for mod in both:
        whole = mod.SSEDecoder()
        a = _events(whole.feed(data) + whole.flush())
        ones = mod.SSEDecoder()
        b = _events(
            [e for i in range(len(data)) for e in ones.feed(data[i : i + 1])] + ones.flush()
        )
        assert a == b


def test_fallback_paths_agree(both: Tuple[ModuleType, ModuleType]) -> None:
    py, c = both
    docs = [
        '{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}',
        '{"choices":[{"delta":{"content":"a","content":"b"}}]}',
        '{"choic\\u0065s":[{"delta":{"content":"esc"}}]}',
        '{"choices":[{"delta":{"content":' + "1" * 5000 + "}}]}",
        '{"choices":[{"delta":{"content":NaN}}]}',
        '{"x":' + "[" * 3000 + "]" * 3000 + ',"choices":[{"delta":{"content":"deep"}}]}',
        '{"choices":[{"delta":{"content":"\\ud800"}}]}',
        '{"choices":[{"delta":{"content":"\\ud800\\u0041"}}]}',
        '{"choices":"abc"}',
        '{"choices":[{"delta":"content"}]}',
        '{"choices":[{"delta":["content"]}]}',
        '\ufeff{"choices":[{"delta":{"content":"bom"}}]}',
    ]
    for d in docs:
        expect = repr(released.json_content(d))  # repr: NaN != NaN
        assert repr(py.extract_delta(d)) == expect == repr(c.extract_delta(d)), d[:60]
        raw = d.encode("utf-8", "surrogatepass")
        assert (
            repr(py.extract_delta(raw))
            == repr(c.extract_delta(raw))
            == repr(released.json_content(raw.decode("utf-8", "replace")))
        )
