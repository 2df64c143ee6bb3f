"""OpenAI's Responses API through the official client: ``responses.create`` streamed
and not, the ``responses.stream`` helper, function calls, and truncation."""

from __future__ import annotations

import json
from typing import Any, Iterator, List

import jsonschema
import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import SimulatorServer
from vastar_fast.simulator.answers import answer_for, tokenize

from .helpers import post, sse_events

FRANCE = "What is the capital of France?"
PARIS = "The capital of France is Paris."
QUANTUM = "Explain quantum computing in simple terms."
WEATHER: Any = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": WEATHER,
        "strict": True,
    }
]


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10.0)
    yield c
    c.close()


def test_create_non_streaming(client: OpenAI) -> None:
    r = client.responses.create(model="gpt-4.1", input=FRANCE, instructions="Be brief.")
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == "gpt-4.1"
    assert r.instructions == "Be brief."
    assert r.output_text == PARIS
    assert len(r.output) == 1
    item = r.output[0]
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.id.startswith("msg_")
    assert r.usage is not None
    assert r.usage.output_tokens == len(tokenize(PARIS))
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.created_at > 0


def test_create_streaming_event_sequence(client: OpenAI) -> None:
    events: List[Any] = list(
        client.responses.create(
            model="gpt-4.1",
            input=[{"role": "user", "content": [{"type": "input_text", "text": FRANCE}]}],
            stream=True,
        )
    )
    n = len(tokenize(PARIS))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress"
    assert events[0].response.output == []
    item_id = events[2].item.id
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert all(d.item_id == item_id and d.output_index == 0 for d in deltas)
    assert "".join(d.delta for d in deltas) == PARIS
    done = events[-1].response
    assert done.status == "completed"
    assert done.id == events[0].response.id
    assert done.output_text == PARIS
    assert done.usage is not None and done.usage.output_tokens == n


def test_stream_helper_accumulates(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-4.1", input=QUANTUM) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == answer_for(QUANTUM)
    assert final.output_text == text


def test_max_output_tokens_makes_it_incomplete(client: OpenAI) -> None:
    r = client.responses.create(model="gpt-4.1", input=QUANTUM, max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "".join(tokenize(answer_for(QUANTUM))[:16])
    events = list(
        client.responses.create(model="gpt-4.1", input=QUANTUM, max_output_tokens=16, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "incomplete"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4.1", input=QUANTUM, max_output_tokens=3)


def test_function_call_non_streaming_and_loop(client: OpenAI) -> None:
    r = client.responses.create(model="gpt-4.1", input="weather in Paris?", tools=TOOLS)
    assert len(r.output) == 1
    call = r.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    assert r.tools[0].type == "function"
    follow = client.responses.create(
        model="gpt-4.1",
        tools=TOOLS,
        input=[
            {"role": "user", "content": FRANCE},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert follow.output_text == PARIS


def test_function_call_streamed(client: OpenAI) -> None:
    events: List[Any] = list(
        client.responses.create(
            model="gpt-4.1", input="weather?", tools=TOOLS, tool_choice="required", stream=True
        )
    )
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2].item
    assert added.type == "function_call" and added.arguments == "" and added.name == "get_weather"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 3
    assert "".join(deltas) == events[-3].arguments
    jsonschema.validate(json.loads(events[-3].arguments), WEATHER)
    final = events[-1].response.output[0]
    assert final.type == "function_call" and final.arguments == events[-3].arguments


def test_raw_sse_names_events(sim: SimulatorServer) -> None:
    status, headers, raw = post(
        sim, "/v1/responses", {"model": "m", "input": FRANCE, "stream": True}
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    for name, data in sse_events(raw):
        assert json.loads(data)["type"] == name


def test_errors(client: OpenAI, sim: SimulatorServer) -> None:
    status, _, raw = post(sim, "/v1/responses", {"model": "gpt-4.1"})
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["param"] == "input" and err["code"] == "missing_required_parameter"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4.1", input=[{"role": "robot", "content": "x"}])
