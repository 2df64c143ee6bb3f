"""Hypothesis strategies for OpenAI-shaped SSE streams."""

import json
from typing import Any, Dict

from hypothesis import strategies as st

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",))
    | st.sampled_from(["\n", "\\", '"', "😀", "é", "\t", "\x00", "\u2028"]),
    max_size=12,
)

_head: Dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion.chunk",
    "created": 1726000000,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
}


@st.composite
def chunk_json(draw: st.DrawFn, nonstr: bool = True) -> str:
    """One chunk's JSON: content deltas mostly, plus the odd shapes."""
    kinds = ["content", "content", "content", "role", "null", "missing", "finish", "usage"]
    kind = draw(st.sampled_from([*kinds, "nonstr"] if nonstr else kinds))
    d: Dict[str, Any] = dict(_head)
    if kind == "usage":
        d["choices"] = []
        d["usage"] = {"prompt_tokens": 3, "completion_tokens": 5}
    else:
        delta: Dict[str, Any]
        if kind == "content":
            delta = {"content": draw(text)}
        elif kind == "role":
            delta = {"role": "assistant", "content": ""}
        elif kind == "null":
            delta = {"content": None}
        elif kind == "nonstr":
            delta = {"content": draw(st.sampled_from([0, 7, [1], {"a": 1}, True, 1.5]))}
        else:
            delta = {}
        d["choices"] = [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": "stop" if kind == "finish" else None,
            }
        ]
    ensure_ascii = draw(st.booleans())
    compact = draw(st.booleans())
    return json.dumps(d, ensure_ascii=ensure_ascii, separators=(",", ":") if compact else None)


@st.composite
def released_friendly_stream(draw: st.DrawFn) -> str:
    """Streams the released parser handles: "data: {json}\\n\\n" pieces,
    [DONE], garbage and non-JSON lines; str contents only."""
    pieces = []
    for _ in range(draw(st.integers(0, 8))):
        k = draw(
            st.sampled_from(["chunk", "chunk", "chunk", "done", "garbage", "comment", "event"])
        )
        if k == "chunk":
            pieces.append("data: " + draw(chunk_json(nonstr=False)))
        elif k == "done":
            pieces.append("data: [DONE]")
        elif k == "garbage":
            pieces.append(
                "data: " + draw(st.sampled_from(["{", "nope", '{"choices": 1}', "", "[]"]))
            )
        elif k == "comment":
            pieces.append(": keep-alive")
        else:
            pieces.append("event: ping")
    end = draw(st.sampled_from(["\n\n", "", "\n"]))
    return "\n\n".join(pieces) + end
