"""extract_delta == the json.loads-based reference, on generated JSON."""

import json
from types import ModuleType
from typing import Any

import sse_released as released
from hypothesis import given, settings
from hypothesis import strategies as st

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(["choices", "delta", "content", "index", "x", "é"])
            | st.text(max_size=4),
            kids,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@st.composite
def openai_like(draw: st.DrawFn) -> Any:
    content = draw(_json)
    delta = draw(st.sampled_from([{"content": content}, content, {}, {"role": "assistant"}]))
    choice = draw(st.sampled_from([{"delta": delta}, delta, {"index": 0}]))
    choices = draw(st.sampled_from([[choice], [], choice, [choice, choice]]))
    return draw(st.sampled_from([{"choices": choices}, {"id": "x", "choices": choices}, choices]))


def _dump(draw_obj: Any, ascii_: bool, indent: Any) -> str:
    return json.dumps(draw_obj, ensure_ascii=ascii_, indent=indent)


@settings(max_examples=500, deadline=None)
@given(obj=_json | openai_like(), ascii_=st.booleans(), indent=st.sampled_from([None, 1, "\t"]))
def test_matches_json_loads(twin: ModuleType, obj: Any, ascii_: bool, indent: Any) -> None:
    text = _dump(obj, ascii_, indent)
    expect = released.json_content(text)
    got = twin.extract_delta(text)
    assert got == expect or (got != got and expect != expect)  # NaN content
    assert type(got) is type(expect)
    raw = text.encode("utf-8", "surrogatepass")
    assert (
        twin.extract_delta(raw) == released.json_content(raw.decode("utf-8", "replace"))
        or got != got
    )


@settings(max_examples=500, deadline=None)
@given(obj=openai_like(), cut=st.integers(0, 300), insert=st.text(max_size=3))
def test_mutated(twin: ModuleType, obj: Any, cut: int, insert: str) -> None:
    text = json.dumps(obj)
    for doc in (text[:cut], text[:cut] + insert + text[cut:], text[:cut] + text[cut + 1 :]):
        expect = released.json_content(doc)
        got = twin.extract_delta(doc)
        assert got == expect or (got != got and expect != expect)
        assert type(got) is type(expect)


def test_done_and_garbage(twin: ModuleType) -> None:
    for s in ("[DONE]", " [DONE] ", "", "{", "null", '{"choices":[]}', "1 2", '"\x01"'):
        assert twin.extract_delta(s) is None
        assert twin.extract_delta(s.encode()) is None
    assert twin.extract_delta('{"choices":[{"delta":{"content":"\\u00e9\\t"}}]} ') == "é\t"
