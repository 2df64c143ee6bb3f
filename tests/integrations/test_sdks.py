"""The official openai and anthropic packages, unchanged, through the httpx2 transports
to the simulator via `vastar runtime` (both twins): streaming and not, sync and async,
deltas arriving while the upstream is still generating, closing early cancelling the
upstream, and errors reaching the SDKs' own error classes."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List

import anthropic
import httpx2
import openai
import pytest

from vastar_fast import RuntimeConfig
from vastar_fast.integrations.httpx2 import AsyncRuntimeTransport, RuntimeTransport

from .conftest import ANSWER, PROMPT, Stack

STALL = {"x-simulator-fault": "stall"}
"""The simulator sends a few chunks, then nothing (up to 60 s) until the client leaves."""
RATE_LIMIT = {"x-simulator-fault": "rate_limit"}


def sync_openai(config: RuntimeConfig, stack_url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack_url + "/v1",
        api_key="sk-test",
        http_client=httpx2.Client(transport=RuntimeTransport(config)),
        **kw,
    )


def async_openai(config: RuntimeConfig, stack_url: str, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=stack_url + "/v1",
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=AsyncRuntimeTransport(config)),
        **kw,
    )


def sync_anthropic(config: RuntimeConfig, stack_url: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack_url,
        api_key="sk-ant-test",
        http_client=httpx2.Client(transport=RuntimeTransport(config)),
        **kw,
    )


def async_anthropic(config: RuntimeConfig, stack_url: str, **kw: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=stack_url,
        api_key="sk-ant-test",
        http_client=httpx2.AsyncClient(transport=AsyncRuntimeTransport(config)),
        **kw,
    )


CHAT: Dict[str, Any] = {"model": "gpt-4o", "messages": PROMPT}
MESSAGE: Dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": PROMPT}


# ---------------------------------------------------------------- answers
def test_openai_sync_answers_and_streams(idle: Stack) -> None:
    client = sync_openai(idle.config(), idle.url)
    answer = client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == ANSWER
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    deltas = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(**CHAT, stream=True)
        if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 3 and "".join(deltas) == ANSWER
    raw = client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-ratelimit-limit-requests"]  # the upstream's headers came through
    client.close()


def test_openai_async_answers_and_streams(idle: Stack) -> None:
    async def go() -> List[Any]:
        async with async_openai(idle.config(), idle.url) as client:
            answer = await client.chat.completions.create(**CHAT)
            stream = await client.chat.completions.create(**CHAT, stream=True)
            deltas = [
                c.choices[0].delta.content
                async for c in stream
                if c.choices and c.choices[0].delta.content
            ]
            many = await asyncio.gather(*(client.chat.completions.create(**CHAT) for _ in range(5)))
            return [answer.choices[0].message.content, deltas, [m.choices[0].message.content
                                                                for m in many]]  # fmt: skip

    content, deltas, many = asyncio.run(go())
    assert content == ANSWER
    assert len(deltas) > 3 and "".join(deltas) == ANSWER
    assert many == [ANSWER] * 5


def test_anthropic_sync_answers_and_streams(idle: Stack) -> None:
    client = sync_anthropic(idle.config(), idle.url)
    message = client.messages.create(**MESSAGE)
    assert message.content[0].text == ANSWER  # type: ignore[union-attr]
    with client.messages.stream(**MESSAGE) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 3 and "".join(texts) == ANSWER
    assert final.usage.output_tokens == message.usage.output_tokens
    client.close()


def test_anthropic_async_answers_and_streams(idle: Stack) -> None:
    async def go() -> List[Any]:
        async with async_anthropic(idle.config(), idle.url) as client:
            message = await client.messages.create(**MESSAGE)
            async with client.messages.stream(**MESSAGE) as stream:
                texts = [t async for t in stream.text_stream]
            return [message.content[0].text, texts]  # type: ignore[union-attr]

    text, texts = asyncio.run(go())
    assert text == ANSWER
    assert len(texts) > 3 and "".join(texts) == ANSWER


# ---------------------------------------------------------------- streaming as it arrives
def test_openai_deltas_arrive_while_the_upstream_is_still_streaming(idle: Stack) -> None:
    """The simulator stalls after a few chunks: a delta in hand while it still serves the
    request is a delta that came before the stream ended. Closing early cancels it."""
    client = sync_openai(idle.config(), idle.url, max_retries=0)
    stream = client.chat.completions.create(**CHAT, stream=True, extra_headers=STALL)
    chunks = iter(stream)  # held: a dropped generator may close the response
    first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
    assert first.choices[0].delta.content == "The"
    assert idle.active() == 1  # still streaming (stalled) upstream
    stream.close()
    assert idle.wait_idle()  # the runtime cancelled the upstream request
    client.close()


def test_openai_async_deltas_arrive_while_the_upstream_is_still_streaming(idle: Stack) -> None:
    async def go() -> List[Any]:
        async with async_openai(idle.config(), idle.url, max_retries=0) as client:
            stream = await client.chat.completions.create(**CHAT, stream=True, extra_headers=STALL)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            active = await asyncio.to_thread(idle.active)
            await stream.close()
            return [chunk.choices[0].delta.content, active]

    assert asyncio.run(go()) == ["The", 1]
    assert idle.wait_idle()


def test_anthropic_deltas_arrive_while_the_upstream_is_still_streaming(idle: Stack) -> None:
    client = sync_anthropic(idle.config(), idle.url, max_retries=0)
    with client.messages.stream(**MESSAGE, extra_headers=STALL) as stream:
        texts = iter(stream.text_stream)
        first = next(texts)
        active = idle.active()
    assert (first, active) == ("The", 1)
    assert idle.wait_idle()
    client.close()


def test_anthropic_async_deltas_arrive_while_the_upstream_is_still_streaming(
    idle: Stack,
) -> None:
    async def go() -> List[Any]:
        async with async_anthropic(idle.config(), idle.url, max_retries=0) as client:
            async with client.messages.stream(**MESSAGE, extra_headers=STALL) as stream:
                async for text in stream.text_stream:
                    first = text
                    break
                active = await asyncio.to_thread(idle.active)
            return [first, active]

    assert asyncio.run(go()) == ["The", 1]
    assert idle.wait_idle()


# ---------------------------------------------------------------- errors
def _raises(kind: type, call: Callable[[], Any]) -> Any:
    with pytest.raises(kind) as info:
        call()
    return info.value


def test_429_is_the_sdks_rate_limit_error(idle: Stack) -> None:
    oa = sync_openai(idle.config(), idle.url, max_retries=0)
    err = _raises(
        openai.RateLimitError, lambda: oa.chat.completions.create(**CHAT, extra_headers=RATE_LIMIT)
    )
    assert err.status_code == 429 and err.response.headers["retry-after"]
    an = sync_anthropic(idle.config(), idle.url, max_retries=0)
    err = _raises(
        anthropic.RateLimitError, lambda: an.messages.create(**MESSAGE, extra_headers=RATE_LIMIT)
    )
    assert err.status_code == 429

    async def go() -> List[type]:
        out = []
        async with async_openai(idle.config(), idle.url, max_retries=0) as client:
            try:
                await client.chat.completions.create(**CHAT, extra_headers=RATE_LIMIT)
            except openai.RateLimitError as exc:
                out.append(type(exc))
        async with async_anthropic(idle.config(), idle.url, max_retries=0) as aclient:
            try:
                await aclient.messages.create(**MESSAGE, extra_headers=RATE_LIMIT)
            except anthropic.RateLimitError as exc:
                out.append(type(exc))
        return out

    assert asyncio.run(go()) == [openai.RateLimitError, anthropic.RateLimitError]


def test_the_sdks_retry_a_429_through_the_transport(idle: Stack) -> None:
    """max_retries=1: the injected 429 (retry-after 1 s) comes back to each attempt (the
    header goes with each), so both attempts reach the simulator."""
    before = idle.health()["faults"]["rate_limit"]
    client = sync_openai(idle.config(), idle.url, max_retries=1)
    _raises(
        openai.RateLimitError,
        lambda: client.chat.completions.create(**CHAT, extra_headers=RATE_LIMIT),
    )
    assert idle.health()["faults"]["rate_limit"] - before == 2


def test_a_runtime_that_is_not_running_is_the_sdks_connection_error(
    nowhere: RuntimeConfig,
) -> None:
    oa = sync_openai(nowhere, "http://127.0.0.1:9", max_retries=0)
    err = _raises(openai.APIConnectionError, lambda: oa.chat.completions.create(**CHAT))
    assert isinstance(err.__cause__, httpx2.ConnectError)
    assert "cannot connect to the Vastar runtime" in str(err.__cause__)
    an = sync_anthropic(nowhere, "http://127.0.0.1:9", max_retries=0)
    err = _raises(anthropic.APIConnectionError, lambda: an.messages.create(**MESSAGE))
    assert isinstance(err.__cause__, httpx2.ConnectError)

    async def go() -> List[Any]:
        out = []
        async with async_openai(nowhere, "http://127.0.0.1:9", max_retries=0) as client:
            try:
                await client.chat.completions.create(**CHAT)
            except openai.APIConnectionError as exc:
                out.append(type(exc.__cause__))
        async with async_anthropic(nowhere, "http://127.0.0.1:9", max_retries=0) as aclient:
            try:
                await aclient.messages.create(**MESSAGE)
            except anthropic.APIConnectionError as exc:
                out.append(type(exc.__cause__))
        return out

    assert asyncio.run(go()) == [httpx2.ConnectError, httpx2.ConnectError]


def test_the_runtimes_own_limit_is_a_rate_limit_error_too(idle: Stack) -> None:
    """Tenant 'single' may have one request in flight: a second one while the first is
    stalled is refused RATE_LIMITED by the runtime, which the SDK sees as a 429."""
    config = idle.config(tenant_id="single")
    client = sync_openai(config, idle.url, max_retries=0)
    held = client.chat.completions.create(**CHAT, stream=True, extra_headers=STALL)
    chunks = iter(held)
    next(chunks)
    err = _raises(openai.RateLimitError, lambda: client.chat.completions.create(**CHAT))
    assert err.response.headers["x-vastar-error-class"] == "RATE_LIMITED"
    assert "max_concurrent" in err.message or "single" in err.message
    held.close()
    assert idle.wait_idle()
    client.close()


def test_a_policy_refusal_reaches_the_sdk_with_the_runtimes_reason(idle: Stack) -> None:
    client = sync_openai(idle.config(tenant_id="restricted"), idle.url, max_retries=0)
    err = _raises(openai.APIConnectionError, lambda: client.chat.completions.create(**CHAT))
    assert isinstance(err.__cause__, httpx2.ProxyError)
    assert "restricted" in str(err.__cause__) and "PERMANENT" in str(err.__cause__)


def test_a_deadline_is_the_sdks_timeout_error(idle: Stack) -> None:
    """The request's timeouts (0.3 s each: a 0.9 s deadline) against a stalled stream."""
    client = sync_openai(idle.config(), idle.url, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        for _ in client.chat.completions.create(**CHAT, stream=True, extra_headers=STALL):
            pass
    assert idle.wait_idle()
