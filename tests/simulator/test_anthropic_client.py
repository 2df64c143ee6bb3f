"""The official ``anthropic`` package against the simulator's messages API."""

from __future__ import annotations

import json
from typing import Any, Iterator

import anthropic
import pytest

from vastar_fast.simulator import SimulatorServer
from vastar_fast.simulator.answers import answer_for, tokenize

from .helpers import post, sse_events

FRANCE = "What is the capital of France?"
PYTHON = "What is Python?"
BAD_ROLE: Any = [{"role": "robot", "content": "hi"}]


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(
        base_url=sim.base_url, api_key="sk-ant-test", max_retries=0, timeout=10.0
    )
    yield c
    c.close()


def test_non_streaming_message(client: anthropic.Anthropic) -> None:
    m = client.messages.create(
        model="claude-sim-1",
        max_tokens=1024,
        system="Be brief.",
        messages=[{"role": "user", "content": FRANCE}],
    )
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == "claude-sim-1"
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    assert len(m.content) == 1
    block = m.content[0]
    assert block.type == "text"
    assert block.text == "The capital of France is Paris."
    assert m.usage.output_tokens == len(tokenize(block.text))
    assert m.usage.input_tokens > 0


def test_streaming_helper(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-x", max_tokens=1024, messages=[{"role": "user", "content": PYTHON}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer_for(PYTHON)
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(tokenize(text))


def test_raw_event_sequence(client: anthropic.Anthropic) -> None:
    events = list(
        client.messages.create(
            model="claude-x",
            max_tokens=1024,
            stream=True,
            messages=[{"role": "user", "content": FRANCE}],
        )
    )
    types = [e.type for e in events]
    n_deltas = len(tokenize("The capital of France is Paris."))
    assert types == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * n_deltas
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert all(d.delta.type == "text_delta" for d in deltas)
    assert "".join(d.delta.text for d in deltas if d.delta.type == "text_delta") == (
        "The capital of France is Paris."
    )
    delta_event = events[-2]
    assert delta_event.type == "message_delta"
    assert delta_event.delta.stop_reason == "end_turn"
    assert delta_event.usage.output_tokens == n_deltas


def test_ping_event_on_the_wire(sim: SimulatorServer) -> None:
    status, headers, body = post(
        sim,
        "/v1/messages",
        {
            "model": "m",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-1] == "message_stop"
    for name, data in events:
        assert json.loads(data)["type"] == name


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    m = client.messages.create(
        model="claude-x", max_tokens=3, messages=[{"role": "user", "content": PYTHON}]
    )
    assert m.stop_reason == "max_tokens"
    assert m.content[0].type == "text"
    assert m.content[0].text == "Python is a"
    assert m.usage.output_tokens == 3


def test_max_tokens_is_required(sim: SimulatorServer) -> None:
    status, _, body = post(
        sim, "/v1/messages", {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 400
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_bad_request_raises_sdk_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="claude-x",
            max_tokens=10,
            messages=BAD_ROLE,
        )
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "messages.0.role" in info.value.body["error"]["message"]
