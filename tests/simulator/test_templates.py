"""The placeholder-split Template renders exactly what substituting each placeholder does."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import pytest

from vastar_fast.simulator.dialects import DIALECTS, FullPlan, RequestIds, StreamPlan
from vastar_fast.simulator.dialects.base import Template

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
    }
]
CASES: Dict[str, Tuple[str, Dict[str, Any], Dict[str, Any]]] = {
    "openai": ("openai", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, {}),
    "openai-tools": (
        "openai",
        {"model": "m", "tools": TOOLS, "messages": [{"role": "user", "content": "hi"}]},
        {},
    ),
    "responses": ("openai-responses", {"model": "m", "input": "Explain quantum computing"}, {}),
    "responses-tools": (
        "openai-responses",
        {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]},
        {},
    ),
    "anthropic": (
        "anthropic",
        {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        {},
    ),
    "ollama": ("ollama", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, {}),
    "cohere-v1": ("cohere-v1", {"message": "hi @@simid@@"}, {}),
    "cohere-v2": ("cohere-v2", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, {}),
    "gemini": ("gemini", {"contents": [{"parts": [{"text": "hi"}]}]}, {"model": "g", "sse": True}),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("stream", [False, True])
def test_render_matches_substitution(name: str, stream: bool) -> None:
    dialect_name, body, route = CASES[name]
    dialect = DIALECTS[dialect_name]
    body = dict(body)
    route = dict(route)
    if dialect_name == "gemini":
        route["stream"] = stream
    elif dialect_name != "ollama" or not stream:
        body["stream"] = stream
    plan = dialect.make_plan(body, route, None, 3, 2)
    ids = RequestIds("the-id-42", 1_700_000_123, "2025-01-02T03:04:05.000006Z", "sfx9")
    text = plan.body if isinstance(plan, FullPlan) else plan.joined
    assert isinstance(plan, (FullPlan, StreamPlan))
    expected = dialect.fill(text, ids, plan.uses_suffix).encode("utf-8")
    assert plan.compiled.render(ids) == expected
    assert b"@@sim" not in expected or name == "cohere-v1"  # v1 echoes the prompt


def test_template_without_placeholders_and_with_one() -> None:
    ids = RequestIds("I", 5, "T", "S")
    assert Template("plain é").render(ids) == "plain é".encode()
    assert Template('{"id":"@@simid@@"}').render(ids) == b'{"id":"I"}'
    assert Template('"@@simcreated@@"@@simtime@@@@simsfx@@').render(ids) == b"5TS"
