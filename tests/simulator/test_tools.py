"""Tool calling: OpenAI chat ``tools``, Anthropic ``tool_use``, Gemini ``functionCall``,
and the schema-driven argument generator behind them."""

from __future__ import annotations

import json
import random
from typing import Any, Dict, Iterator, List, Optional

import anthropic
import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from vastar_fast.simulator import SimulatorServer, SimulatorSettings
from vastar_fast.simulator.tool_args import generate_arguments, value_for

from .helpers import post, sse_events

WEATHER: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2, "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}

ORDER: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "vip": {"type": "boolean"},
            },
            "required": ["email", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 2,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "enum": ["A1", "B2", "C3"]},
                    "quantity": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
                    "price": {"type": "number", "minimum": 0.5, "maximum": 99.5},
                },
                "required": ["sku", "quantity", "price"],
                "additionalProperties": False,
            },
        },
        "note": {"type": ["string", "null"]},
        "priority": {"const": "high"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
    "required": ["customer", "items", "priority"],
    "additionalProperties": False,
}

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
}
ORDER_TOOL: Any = {
    "type": "function",
    "function": {"name": "place_order", "description": "Order", "parameters": ORDER},
}


class Address(BaseModel):
    street: str
    zip_code: str = Field(min_length=5, max_length=5)


class Shipment(BaseModel):
    weight_kg: float = Field(gt=0, le=30)
    express: bool
    to: Address
    parcels: List[Address]


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10.0)
    yield c
    c.close()


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------ argument generator


@pytest.mark.parametrize(
    "schema", [WEATHER, ORDER, Shipment.model_json_schema()], ids=["flat", "nested", "pydantic"]
)
def test_generated_arguments_validate_for_many_seeds(schema: Dict[str, Any]) -> None:
    seen = set()
    for seed in range(60):
        args = generate_arguments(schema, "some prompt", "tool", seed)
        jsonschema.validate(args, schema)
        seen.add(json.dumps(args, sort_keys=True))
    assert len(seen) > 30  # the seed matters


def test_generated_arguments_are_deterministic() -> None:
    a = generate_arguments(ORDER, "Order please", "place_order", 7)
    assert a == generate_arguments(ORDER, "Order please", "place_order", 7)
    assert a != generate_arguments(ORDER, "Order please", "place_order", 8)


def test_value_for_numeric_edges() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert value_for({"type": "integer", "exclusiveMinimum": 5, "maximum": 6}, rng, {}) == 6
        v = value_for({"type": "integer", "minimum": 10, "multipleOf": 5, "maximum": 30}, rng, {})
        assert v in (10, 15, 20, 25, 30)
        x = value_for({"type": "number", "exclusiveMaximum": 1.0, "minimum": 0.99}, rng, {})
        assert 0.99 <= x < 1.0
    assert value_for({"type": "NUMBER", "minimum": 3, "maximum": 3}, rng, {}) == 3  # Gemini case


# ------------------------------------------------------------------ OpenAI chat completions


def test_openai_tool_call_non_streaming(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o", messages=_user("What is the weather in Paris?"), tools=[WEATHER_TOOL]
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    assert r.usage is not None and r.usage.completion_tokens > 0


def test_openai_tool_call_stream_shape(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=_user("Place an order for me"),
            tools=[WEATHER_TOOL, ORDER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.tool_calls is not None
    head = first.tool_calls[0]
    assert head.index == 0 and head.type == "function"
    assert head.id is not None and head.id.startswith("call_")
    assert head.function is not None and head.function.name == "place_order"  # name words match
    assert head.function.arguments == ""
    pieces = []
    for c in chunks[1:]:
        if not c.choices:
            continue
        calls = c.choices[0].delta.tool_calls
        if calls:
            assert calls[0].index == 0 and calls[0].id is None
            assert calls[0].function is not None and calls[0].function.name is None
            pieces.append(calls[0].function.arguments or "")
    assert len(pieces) > 5  # arguments arrive in pieces
    jsonschema.validate(json.loads("".join(pieces)), ORDER)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(pieces)
    # The same request gives the same arguments; the call id is fresh.
    again = client.chat.completions.create(
        model="gpt-4o", messages=_user("Place an order for me"), tools=[WEATHER_TOOL, ORDER_TOOL]
    )
    calls = again.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.arguments == "".join(pieces)
    assert calls[0].id != head.id


def test_openai_pydantic_function_tool(client: OpenAI) -> None:
    tool = openai.pydantic_function_tool(Shipment)
    r = client.chat.completions.create(
        model="gpt-4o", messages=_user("Ship it"), tools=[tool], tool_choice="required"
    )
    calls = r.choices[0].message.tool_calls
    assert calls is not None
    Shipment.model_validate_json(calls[0].function.arguments)


def test_openai_agent_loop_and_tool_choice(client: OpenAI) -> None:
    tools = [WEATHER_TOOL, ORDER_TOOL]
    first = client.chat.completions.create(
        model="gpt-4o", messages=_user("What is the capital of France?"), tools=tools
    )
    calls = first.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"  # first tool
    history: Any = [
        *_user("What is the capital of France?"),
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model="gpt-4o", messages=history, tools=tools)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "The capital of France is Paris."
    none = client.chat.completions.create(
        model="gpt-4o", messages=_user("Place an order"), tools=tools, tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None
    named = client.chat.completions.create(
        model="gpt-4o",
        messages=_user("Place an order"),
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    named_calls = named.choices[0].message.tool_calls
    assert named_calls is not None and named_calls[0].function.name == "get_weather"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=_user("x"),
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "tool_choice"


# ------------------------------------------------------------------ Anthropic


@pytest.fixture()
def claude(sim: SimulatorServer) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=sim.base_url, api_key="sk-ant", max_retries=0, timeout=10.0)
    yield c
    c.close()


ANTHROPIC_TOOLS: Any = [
    {"name": "get_weather", "description": "Weather", "input_schema": WEATHER},
    {"name": "place_order", "description": "Order", "input_schema": ORDER},
]


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model="claude-sim",
        max_tokens=500,
        messages=[{"role": "user", "content": "Please place an order"}],
        tools=ANTHROPIC_TOOLS,
    )
    assert m.stop_reason == "tool_use"
    assert len(m.content) == 1
    block = m.content[0]
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == "place_order"
    jsonschema.validate(block.input, ORDER)


def test_anthropic_tool_use_streamed(claude: anthropic.Anthropic) -> None:
    events: List[Any] = []
    with claude.messages.stream(
        model="claude-sim",
        max_tokens=500,
        messages=[{"role": "user", "content": "weather?"}],
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        for event in stream:
            events.append(event)
        final = stream.get_final_message()
    deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(deltas) > 5
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts[0].content_block.type == "tool_use"
    assert starts[0].content_block.input == {}
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == json.loads("".join(deltas))
    jsonschema.validate(block.input, WEATHER)


def test_anthropic_tool_result_gets_text(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(
        model="claude-sim",
        max_tokens=500,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        tools=ANTHROPIC_TOOLS,
    )
    block = first.content[0]
    assert block.type == "tool_use"
    second = claude.messages.create(
        model="claude-sim",
        max_tokens=500,
        tools=ANTHROPIC_TOOLS,
        messages=[
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "ok"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    text = second.content[0]
    assert text.type == "text" and text.text == "The capital of France is Paris."


# ------------------------------------------------------------------ Gemini (raw HTTP)


def _gemini_body(mode: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "weather in Paris"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "get_weather", "description": "Weather", "parameters": WEATHER}
                ]
            }
        ],
    }
    if mode:
        body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return body


def test_gemini_function_call(sim: SimulatorServer) -> None:
    status, _, raw = post(sim, "/v1beta/models/gemini-2.0-flash:generateContent", _gemini_body())
    assert status == 200
    cand = json.loads(raw)["candidates"][0]
    part = cand["content"]["parts"][0]
    assert part["functionCall"]["name"] == "get_weather"
    jsonschema.validate(part["functionCall"]["args"], WEATHER)
    assert cand["finishReason"] == "STOP"

    status, _, raw = post(
        sim,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        _gemini_body("ANY"),
    )
    chunks = [json.loads(d) for _, d in sse_events(raw)]
    assert len(chunks) == 1
    call = chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call["args"] == part["functionCall"]["args"]

    status, _, raw = post(
        sim, "/v1beta/models/gemini-2.0-flash:generateContent", _gemini_body("NONE")
    )
    assert "text" in json.loads(raw)["candidates"][0]["content"]["parts"][0]

    allowed = _gemini_body()
    allowed["tools"][0]["functionDeclarations"].append({"name": "place_order", "parameters": ORDER})
    allowed["toolConfig"] = {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["place_order"]}
    }
    status, _, raw = post(sim, "/v1beta/models/gemini-2.0-flash:generateContent", allowed)
    call = json.loads(raw)["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call["name"] == "place_order"
    jsonschema.validate(call["args"], ORDER)

    answered = _gemini_body()
    answered["contents"] += [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}],
        },
    ]
    status, _, raw = post(sim, "/v1beta/models/gemini-2.0-flash:generateContent", answered)
    assert "text" in json.loads(raw)["candidates"][0]["content"]["parts"][0]


def test_seed_changes_arguments_not_shape() -> None:
    def args(seed: int) -> Any:
        with SimulatorServer(SimulatorSettings.fast(seed=seed)) as server:
            c = OpenAI(base_url=server.base_url + "/v1", api_key="k", max_retries=0)
            try:
                r = c.chat.completions.create(
                    model="gpt-4o", messages=_user("order"), tools=[ORDER_TOOL]
                )
            finally:
                c.close()
        calls = r.choices[0].message.tool_calls
        assert calls is not None
        return json.loads(calls[0].function.arguments)

    a, b = args(1), args(2)
    jsonschema.validate(a, ORDER)
    jsonschema.validate(b, ORDER)
    assert a != b
    assert args(1) == a
