"""Rate limits: ``x-ratelimit-*`` headers on every OpenAI answer, request and token
budgets per API key (``rpm``/``tpm``), 429s in each provider's shape, Anthropic's 529."""

from __future__ import annotations

import json
from typing import Any, Iterator

import anthropic
import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import FAULT_HEADER, SimulatorServer, SimulatorSettings
from vastar_fast.simulator.ratelimit import NOMINAL_RPM, NOMINAL_TPM, RateLimiter, duration

from .helpers import post

MESSAGES: Any = [{"role": "user", "content": "What is the capital of France?"}]
HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def _client(server: SimulatorServer, key: str = "sk-test") -> OpenAI:
    return OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=10.0)


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[OpenAI]:
    c = _client(sim, "sk-headers-only")
    yield c
    c.close()


def test_headers_on_every_openai_answer(client: OpenAI) -> None:
    raws = [
        client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES),
        client.responses.with_raw_response.create(model="gpt-4.1", input="hi"),
        client.embeddings.with_raw_response.create(model="m", input="hi"),
    ]
    for raw in raws:
        for name in HEADERS:
            assert name in raw.headers, name
        assert int(raw.headers["x-ratelimit-limit-requests"]) == NOMINAL_RPM
        assert int(raw.headers["x-ratelimit-limit-tokens"]) == NOMINAL_TPM
    first, second = (int(r.headers["x-ratelimit-remaining-requests"]) for r in raws[:2])
    assert second <= first < NOMINAL_RPM
    chat = raws[0].parse()
    assert chat.usage is not None
    remaining = int(raws[0].headers["x-ratelimit-remaining-tokens"])
    assert remaining <= NOMINAL_TPM - chat.usage.total_tokens + 1


def test_request_budget_per_key() -> None:
    with SimulatorServer(SimulatorSettings.fast(rpm=2)) as server:
        a, b = _client(server, "sk-a"), _client(server, "sk-b")
        try:
            ok = a.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
            assert ok.headers["x-ratelimit-limit-requests"] == "2"
            assert ok.headers["x-ratelimit-remaining-requests"] == "1"
            a.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as info:
                a.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            err = info.value
            assert err.status_code == 429
            assert isinstance(err.body, dict)
            assert err.body["code"] == "rate_limit_exceeded"
            assert err.body["type"] == "requests"
            assert int(err.response.headers["retry-after"]) >= 1
            # Refill is 2 per minute: the next request is ~30 s away.
            assert 20_000 <= int(err.response.headers["retry-after-ms"]) <= 30_000
            assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
            # Another key has its own budget.
            b.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        finally:
            a.close()
            b.close()


def test_token_budget_and_other_shapes() -> None:
    with SimulatorServer(SimulatorSettings.fast(tpm=60)) as server:
        c = _client(server)
        try:
            r = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert r.usage is not None and r.usage.total_tokens < 60
            with pytest.raises(openai.RateLimitError) as info:
                for _ in range(5):
                    c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert isinstance(info.value.body, dict) and info.value.body["type"] == "tokens"
            big = "word " * 100
            with pytest.raises(openai.RateLimitError) as info:
                c.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": big}]
                )
            assert "too large" in str(info.value.body)
        finally:
            c.close()
        gemini_body = {"contents": [{"parts": [{"text": "word " * 100}]}]}
        status, headers, raw = post(server, "/v1beta/models/g:generateContent?key=abc", gemini_body)
        assert status == 429
        assert json.loads(raw)["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert "retry-after" in headers and "retry-after-ms" in headers


def test_anthropic_budget_shape_and_headers() -> None:
    with SimulatorServer(SimulatorSettings.fast(rpm=1)) as server:
        c = anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant", max_retries=0)
        try:
            raw = c.messages.with_raw_response.create(
                model="claude", max_tokens=10, messages=MESSAGES
            )
            assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
            assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
            with pytest.raises(anthropic.RateLimitError) as info:
                c.messages.create(model="claude", max_tokens=10, messages=MESSAGES)
            assert isinstance(info.value.body, dict)
            assert info.value.body["error"]["type"] == "rate_limit_error"
            assert "retry-after-ms" in info.value.response.headers
        finally:
            c.close()


def test_overloaded_fault(sim: SimulatorServer) -> None:
    c = anthropic.Anthropic(base_url=sim.base_url, api_key="k", max_retries=0)
    try:
        with pytest.raises(anthropic.OverloadedError) as info:
            c.messages.create(
                model="claude",
                max_tokens=10,
                messages=MESSAGES,
                extra_headers={FAULT_HEADER: "overloaded"},
            )
    finally:
        c.close()
    assert info.value.status_code == 529
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    status, _, raw = post(
        sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES},
        headers={FAULT_HEADER: "overloaded"},
    )  # fmt: skip
    assert status == 503 and json.loads(raw)["error"]["type"] == "server_error"


def test_bucket_refills() -> None:
    limiter = RateLimiter(rpm=60, tpm=600)
    now = 1000.0
    for _ in range(60):
        assert limiter.check("k", 1, now).refused is None
    d = limiter.check("k", 1, now)
    assert d.refused == "requests" and d.retry_after_s == pytest.approx(1.0)
    assert limiter.check("k", 1, now + 1.0).refused is None  # one request per second back
    d = limiter.check("other", 601, now)
    assert d.refused == "tokens" and d.retry_after_s == float("inf")
    assert duration(0.0204) == "21ms" and duration(1.5) == "1.5s" and duration(360) == "6m0s"
