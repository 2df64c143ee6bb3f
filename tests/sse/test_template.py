"""The learned event template of parse_stream / iter_stream (both twins).

Consecutive OpenAI chunks differ only in the content string, so after one
event has been parsed in full, the next ones are matched against its text
with only the content token left free.  These tests change the events'
shape midway in every way that must end that shortcut and check that the
result is what the full parse of each piece on its own gives, what the
other twin gives, and what the released parser gives where it finds content.
"""

import itertools
import json
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

import sse_released as released
from hypothesis import given, settings
from hypothesis import strategies as st

_HEAD: Dict[str, Any] = {
    "id": "chatcmpl-A1b2C3",
    "object": "chat.completion.chunk",
    "created": 1726000000,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
}


def _doc(
    content: Any = "x",
    *,
    head: Optional[Dict[str, Any]] = None,
    finish: Any = None,
    extra_delta: Optional[Dict[str, Any]] = None,
    has_content: bool = True,
    ensure_ascii: bool = False,
    compact: bool = True,
) -> str:
    d: Dict[str, Any] = dict(_HEAD if head is None else head)
    delta: Dict[str, Any] = dict(extra_delta or {})
    if has_content:
        delta["content"] = content
    d["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    seps = (",", ":") if compact else None
    return json.dumps(d, ensure_ascii=ensure_ascii, separators=seps)


def _ev(content: Any = "x", **kw: Any) -> str:
    return "data: " + _doc(content, **kw)


def _raw_token_ev(raw_body: str) -> str:
    """An event whose content token is raw_body verbatim (may break JSON)."""
    return _ev("\x01TOKEN\x01").replace('"\\u0001TOKEN\\u0001"', '"' + raw_body + '"')


def _check(both: Tuple[ModuleType, ModuleType], stream: str) -> None:
    """Whole stream == its pieces parsed one by one (no template can apply to
    a lone piece) on both twins, and every piece where the released parser
    finds text gives that text."""
    py, c = both
    ref: List[str] = []
    for piece in stream.split("\n\n"):
        got = list(py.iter_stream(piece))
        assert list(c.iter_stream(piece)) == got
        rc = released.parse_chunk(piece) if piece.startswith("data: ") else None
        if rc and isinstance(rc, str):
            assert got == [rc]
        ref += got
    for mod in (py, c):
        assert mod.parse_stream(stream) == "".join(ref), mod.__name__
        assert list(mod.iter_stream(stream)) == ref, mod.__name__
    _check_decoders(both, stream.encode("utf-8", "surrogatepass"))
    pieces = [p for p in stream.split("\n\n") if p]
    if all(p.startswith("data: ") and "\n" not in p and "\r" not in p for p in pieces):
        try:
            expected = released.parse_stream(stream)
        except TypeError:  # released += of a non-str content
            return
        assert py.parse_stream(stream) == expected == c.parse_stream(stream)


def _deltas(mod: ModuleType, raw: bytes, size: int) -> List[str]:
    dec = mod.SSEDecoder()
    got: List[str] = []
    for i in range(0, len(raw), size):
        got += dec.feed_deltas(raw[i : i + size])
    return got + dec.flush_deltas()


def _check_decoders(both: Tuple[ModuleType, ModuleType], raw: bytes) -> None:
    """feed_deltas (which learns templates) == the contents of feed's events
    (which never does), on both twins, whatever the chunking."""
    py, c = both
    dec = py.SSEDecoder()
    events = dec.feed(raw) + dec.flush()
    want = [x for e in events for x in [py.extract_delta(e.data)] if type(x) is str and x]
    for mod in (py, c):
        for size in (3, 64, max(len(raw), 1)):
            assert _deltas(mod, raw, size) == want, (mod.__name__, size)


_CONTENTS = [
    "Hello",
    " world",
    "",
    "tab\there",
    'say "hi"',
    "back\\slash",
    "line\nbreak\r\n",
    "café naïve",
    "日本語",
    "😀🚀",
    "\u2028\u2029",
    "\x00\x1f",
    "a/b",
    "\ud800",
    "\udfff lone",
    "😀 \ud83d",
]


def _stream(events: List[str], end: str = "\n\n") -> str:
    return "\n\n".join(events) + end


def test_shapes_change_midway(both: Tuple[ModuleType, ModuleType]) -> None:
    base = [_ev(t) for t in ("a", "b", "c")]
    variants = [
        _ev("d", head={**_HEAD, "id": "chatcmpl-other"}),
        _ev("e", head={**_HEAD, "extra": [1, {"k": None}]}),
        _ev("f", extra_delta={"role": "assistant"}),
        _ev("g", finish="stop"),
        _ev("h", has_content=False),
        _ev(None),
        _ev(5),
        _ev(["x"]),
        _ev({"content": "nested"}),
        _ev("i", ensure_ascii=True),
        _ev("j", compact=False),
        _ev("k", head={**_HEAD, "model": "gpt-4o-😀"}),
        "data: [DONE]",
        ": keep-alive",
        "event: ping",
        "data:" + _doc("no space"),
        "data: " + _doc("crlf") + "\r\n",
    ]
    for v in variants:
        for after in ([], base):
            _check(both, _stream([*base, v, *after]))


def test_every_content_after_a_template(both: Tuple[ModuleType, ModuleType]) -> None:
    for ensure_ascii in (False, True):
        for t in _CONTENTS:
            evs = [_ev(x, ensure_ascii=ensure_ascii) for x in ("a", "b", t, "c", t, t)]
            _check(both, _stream(evs))
        evs = [_ev(x, ensure_ascii=ensure_ascii) for x in ["p", "q", *_CONTENTS]]
        _check(both, _stream(evs))


_RAW_TOKENS = [
    "plain",
    "",
    "\\u0041\\u00e9\\ud83d\\ude00",
    "\\ud83d",
    "\\ude00\\ud83d",
    "\\ud83d\\u0041",
    "\\\\",
    "\\/",
    '\\b\\f\\n\\r\\t\\"',
    "\\",  # dangling backslash: escapes the closing quote
    "\\x",  # invalid escape
    "\\u12",  # short \u escape
    "\\u12G4",
    "a\tb",  # raw control character: invalid JSON
    "a\x00b",
    "a\x7fb",  # DEL is allowed
    'a"b',  # unescaped quote
    '","content":"dup',  # duplicate content key, last wins
    '","x":"',  # still valid JSON, same content key
    '"},"logprobs":null,"finish_reason":null}],"choices":[{"delta":{"content":"other',
    '"}}]}',  # ends the document early: extra data
    "a\u2028b",
    "é😀",
]


def test_raw_tokens_after_a_template(both: Tuple[ModuleType, ModuleType]) -> None:
    for raw in _RAW_TOKENS:
        evs = [_ev("a"), _ev("b"), _raw_token_ev(raw), _ev("c"), _raw_token_ev(raw)]
        _check(both, _stream(evs))
        _check(both, _stream(evs, end=""))


def test_prefix_or_suffix_only_matches(both: Tuple[ModuleType, ModuleType]) -> None:
    a, b = _ev("a"), _ev("b")
    template = _ev("t")
    cut_at = template.index('"t"') + 1  # just after the open quote
    refusal = template.replace('"content":"t"', '"content":"t","refusal":null')
    evs = [
        template[:cut_at],  # the prefix alone
        template[: cut_at + 1],  # prefix and token, no suffix
        template[: cut_at + 2],  # prefix, token, closing quote
        template[:-1],  # everything but the last "}"
        template + "}",  # one "}" too many
        template + " ",  # trailing space: still valid JSON
        template + "\n",  # a lone LF: the piece goes on
        template + "\r",
        template + "\ndata: " + _doc("second line"),
        template.replace('"finish_reason":null', '"finish_reason":"stop"'),
        template.replace('"logprobs":null', '"logprobs":nul'),
        # same length as the template, different suffix
        template.replace('"logprobs":null', '"logprobs":nulx'),
        template.replace('"logprobs":null', '"logprobs":true'),
        template[:-1] + "]",
        refusal,
        refusal.replace('"refusal":null', '"content":"ab"'),
        refusal.replace('"refusal":null', '"refusal":nul]'),
        refusal.replace('"t","refusal":null', '"t"}, "refusal":nul'),
        template.replace("data: ", "data:  "),
        template.replace("data: ", "dat: "),
        "data: " + _doc("t")[:10],
        "data",
        "",
    ]
    for ev in evs:
        for end in ("\n\n", "", "\n", "\n\n\n", "\n\n\n\n"):
            _check(both, _stream([a, b, ev, template], end=end))
            _check(both, _stream([a, b, ev], end=end))
            _check(both, _stream([refusal, refusal.replace('"t"', '"u"'), ev], end=end))


def test_decoy_content_key_in_a_string(both: Tuple[ModuleType, ModuleType]) -> None:
    # the last '"content":' of the text belongs to the key 'x"content', whose
    # value equals the real content in the first event only
    def ev(real: str, decoy: str) -> str:
        return 'data: {"choices":[{"delta":{"content":"R","x\\"content":"D"}}]}'.replace(
            "R", real
        ).replace("D", decoy)

    pairs = [(r, d) for r in "ab" for d in "ab"]
    for seq in itertools.product(pairs, repeat=4):
        _check(both, _stream([ev(r, d) for r, d in seq]))

    # the real content comes last but is a duplicate of an earlier key
    def dup(x: str, y: str) -> str:
        return 'data: {"choices":[{"delta":{"content":"' + x + '","content":"' + y + '"}}]}'

    _check(both, _stream([dup("a", "b"), dup("c", "d"), dup("e", "f"), dup("c", "d")]))


def test_templates_that_keep_missing(both: Tuple[ModuleType, ModuleType]) -> None:
    # every event has its own id: the pure twin stops trying templates after
    # a few dozen misses and finishes with a plain split; results stay equal
    uniq = [_ev(f"u{i}", head={**_HEAD, "id": f"id-{i}"}) for i in range(40)]
    same = [_ev(t) for t in ("a", "b", "c", "\\", "😀")]
    alternating = [_ev(f"v{i}", finish="stop" if i % 2 else None) for i in range(80)]
    for tail in (
        same,
        ["data: [DONE]"],
        [": c\ndata: " + _doc("multi"), "data:" + _doc("nospace")],
    ):
        for sep in ("\n\n", "\n\n\n", "\r\n\r\n"):
            _check(both, sep.join([*uniq, *tail]) + "\n\n")
            _check(both, sep.join([*alternating, *tail]))
            _check(both, sep.join([*same, *uniq, *same, *tail]))
    # a BOM only counts at the very start of the stream
    for k in (31, 32, 33, 40):
        stream = "\n\n".join([*uniq[:k], "\ufeff" + same[0], *uniq])
        want = "".join(f"u{i}" for i in range(k)) + "".join(f"u{i}" for i in range(40))
        for mod in both:
            assert mod.parse_stream(stream) == want


def test_separators_around_template_events(both: Tuple[ModuleType, ModuleType]) -> None:
    a, b, c = _ev("a"), _ev("b"), _ev("c")
    for sep in ("\n\n", "\n\n\n", "\n\n\n\n", "\n\n\r\n", "\r\n\r\n", "\n\n: c\n\n"):
        _check(both, sep.join([a, b, c, a]) + "\n\n")
        _check(both, sep.join([a, b, c, a]))


def test_template_piece_at_the_very_end(both: Tuple[ModuleType, ModuleType]) -> None:
    a, b = _ev("a"), _ev("b")
    for tail in (_ev("z"), _ev("z")[:-1], _ev("z") + "\n", "data: [DONE]"):
        _check(both, a + "\n\n" + b + "\n\n" + tail)


def test_str_kinds(both: Tuple[ModuleType, ModuleType]) -> None:
    # the same template over 1-, 2- and 4-byte str storage, and a kind change
    # of the content only (the rest stays narrow)
    for extra in ("", "é", "日", "😀"):
        evs = [_ev(x + extra) for x in ("a", "b", "c")] + [_ev("d"), _ev("😀"), _ev("\\")]
        _check(both, _stream(evs))


_SHAPE = st.sampled_from(
    [
        "same",
        "same",
        "same",
        "same",
        "id",
        "role",
        "finish",
        "missing",
        "null",
        "ascii",
        "raw",
        "done",
        "comment",
    ]
)


@st.composite
def _template_streams(draw: st.DrawFn) -> str:
    evs: List[str] = []
    for _ in range(draw(st.integers(1, 12))):
        shape = draw(_SHAPE)
        text = draw(st.text(max_size=6) | st.sampled_from(_CONTENTS))
        if shape == "same":
            evs.append(_ev(text))
        elif shape == "id":
            evs.append(_ev(text, head={**_HEAD, "id": draw(st.sampled_from(["a", "b"]))}))
        elif shape == "role":
            evs.append(_ev(text, extra_delta={"role": "assistant"}))
        elif shape == "finish":
            evs.append(_ev(text, finish="stop"))
        elif shape == "missing":
            evs.append(_ev(text, has_content=False))
        elif shape == "null":
            evs.append(_ev(None))
        elif shape == "ascii":
            evs.append(_ev(text, ensure_ascii=True))
        elif shape == "raw":
            evs.append(_raw_token_ev(draw(st.sampled_from(_RAW_TOKENS))))
        elif shape == "done":
            evs.append("data: [DONE]")
        else:
            evs.append(": ping")
    sep = draw(st.sampled_from(["\n\n", "\n\n", "\n\n", "\n\n\n", "\r\n\r\n"]))
    end = draw(st.sampled_from(["\n\n", "", "\n"]))
    return sep.join(evs) + end


@settings(max_examples=400, deadline=None)
@given(stream=_template_streams())
def test_template_streams_property(both: Tuple[ModuleType, ModuleType], stream: str) -> None:
    _check(both, stream)
