"""The official ``openai`` package against the simulator's chat completions API."""

from __future__ import annotations

from typing import Any, Iterator

import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import SimulatorServer, SimulatorSettings
from vastar_fast.simulator.answers import answer_for, tokenize

FRANCE = "What is the capital of France?"
QUANTUM = "Explain quantum computing in simple terms."


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = OpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10.0)
    yield c
    c.close()


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def test_non_streaming_completion(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE))
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o"
    assert r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "The capital of France is Paris."
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.completion_tokens == len(tokenize(choice.message.content))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens > 0


def test_ids_are_unique_per_request(client: OpenAI) -> None:
    a = client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE))
    b = client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE))
    assert a.id != b.id
    assert a.choices[0].message.content == b.choices[0].message.content


def test_streaming_shapes(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=_user(QUANTUM), stream=True)
    )
    assert len(chunks) >= 3
    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.model == "gpt-4o-mini" for c in chunks)
    assert all(c.system_fingerprint for c in chunks)
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == answer_for(QUANTUM)


def test_streaming_include_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=_user(FRANCE),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(tokenize("The capital of France is Paris."))
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert text == "The capital of France is Paris."


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_with_length(client: OpenAI, param: str) -> None:
    kwargs: Any = {param: 4}
    r = client.chat.completions.create(model="gpt-4o", messages=_user(QUANTUM), **kwargs)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "".join(tokenize(answer_for(QUANTUM))[:4])
    assert r.usage is not None and r.usage.completion_tokens == 4

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=_user(QUANTUM), stream=True, **kwargs
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Quantum computing is a"


def test_n_choices(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE), n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert {c.message.content for c in r.choices} == {"The capital of France is Paris."}
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE), n=2, stream=True)
    )
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert mine[-1].finish_reason == "stop"
        assert "".join(ch.delta.content or "" for ch in mine) == "The capital of France is Paris."


def test_multimodal_style_content_parts(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": FRANCE}]},
        ],
    )
    assert r.choices[0].message.content == "The capital of France is Paris."


def test_bad_request_shapes(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == "messages"
    assert body["code"] == "empty_array"

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=_user(FRANCE), max_tokens=0)
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "integer_below_min_value"


def test_models_endpoints(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids
    model = client.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o"
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_async_client_streaming(sim: SimulatorServer) -> None:
    """The AsyncOpenAI client (httpx async) parses the stream the same way."""
    import asyncio

    async def run() -> str:
        c = openai.AsyncOpenAI(base_url=sim.base_url + "/v1", api_key="sk-test", max_retries=0)
        try:
            stream = await c.chat.completions.create(
                model="gpt-4o", messages=_user(FRANCE), stream=True
            )
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
            return "".join(parts)
        finally:
            await c.close()

    assert asyncio.run(run()) == "The capital of France is Paris."


def test_delayed_streaming_path() -> None:
    """Non-zero delays use the chunk-by-chunk writer; the content must be identical."""
    settings = SimulatorSettings(ttft_ms=1, token_delay_ms=1, tokens_per_chunk=3)
    with SimulatorServer(settings) as server:
        c = OpenAI(base_url=server.base_url + "/v1", api_key="sk-test", max_retries=0)
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o",
                messages=_user(FRANCE),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        c.close()
    content = [c.choices[0].delta.content for c in chunks[1:-2]]
    # 7 tokens at 3 tokens per chunk -> 3 content chunks.
    assert content == ["The capital of", " France is Paris", "."]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
