"""Pinned answer lengths (``ignore_eos``, ``answer_tokens``) and the latency model."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, Dict, List

import openai
import pytest
from openai import OpenAI

from vastar_fast.simulator import SimulatorServer, SimulatorSettings
from vastar_fast.simulator.answers import answer_for, answer_tokens, tokenize
from vastar_fast.simulator.latency import LATENCY_HEADER, LatencyModel, Timing, parse_timing

from .helpers import post, request

STORY: Any = [{"role": "user", "content": "Tell me a long story"}]


def _client(server: SimulatorServer) -> OpenAI:
    return OpenAI(base_url=server.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=30)


# ------------------------------------------------------------------ pinned lengths


def test_ignore_eos_gives_exactly_max_tokens(sim: SimulatorServer) -> None:
    c = _client(sim)
    try:
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o",
                messages=STORY,
                max_tokens=4000,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices]
        content = [d for d in deltas if d]
        assert len(content) == 4000
        assert chunks[-2].choices[0].finish_reason == "length"
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 4000
        text = "".join(content)
        assert len(tokenize(text)) == 4000  # the usage count is the text's own count
        assert text.startswith(answer_for("Tell me a long story"))
        full = c.chat.completions.create(
            model="gpt-4o", messages=STORY, max_tokens=4000, extra_body={"ignore_eos": True}
        )
        assert full.choices[0].message.content == text
        assert full.usage is not None and full.usage.completion_tokens == 4000
        # Without ignore_eos the answer ends on its own.
        short = c.chat.completions.create(model="gpt-4o", messages=STORY, max_tokens=4000)
        assert short.usage is not None and short.usage.completion_tokens < 200
        assert short.choices[0].finish_reason == "stop"
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(
                model="gpt-4o", messages=STORY, extra_body={"ignore_eos": "yes"}
            )
    finally:
        c.close()


@pytest.mark.parametrize(
    ("path", "body", "count"),
    [
        (
            "/v1/messages",
            {"model": "c", "max_tokens": 300, "ignore_eos": True, "messages": STORY},
            lambda d: d["usage"]["output_tokens"],
        ),
        (
            "/v1beta/models/g:generateContent",
            {
                "contents": [{"parts": [{"text": "Tell me a long story"}]}],
                "generationConfig": {"maxOutputTokens": 300},
                "ignore_eos": True,
            },
            lambda d: d["usageMetadata"]["candidatesTokenCount"],
        ),
        (
            "/api/chat",
            {"model": "o", "stream": False, "ignore_eos": True, "messages": STORY,
             "options": {"num_predict": 300}},
            lambda d: d["eval_count"],
        ),
        (
            "/v2/chat",
            {"model": "c", "max_tokens": 300, "ignore_eos": True, "messages": STORY},
            lambda d: d["usage"]["billed_units"]["output_tokens"],
        ),
        (
            "/v1/chat",
            {"message": "Tell me a long story", "max_tokens": 300, "ignore_eos": True},
            lambda d: d["meta"]["billed_units"]["output_tokens"],
        ),
        (
            "/v1/responses",
            {"model": "m", "input": "Tell me a long story", "max_output_tokens": 300,
             "ignore_eos": True},
            lambda d: d["usage"]["output_tokens"],
        ),
    ],
)  # fmt: skip
def test_ignore_eos_other_dialects(sim: SimulatorServer, path: str, body: Dict, count: Any) -> None:
    status, _, raw = post(sim, path, body)
    assert status == 200
    assert count(json.loads(raw)) == 300


def test_answer_tokens_setting_and_seed() -> None:
    def texts(seed: int) -> List[str]:
        with SimulatorServer(SimulatorSettings.fast(answer_tokens=500, seed=seed)) as server:
            c = _client(server)
            try:
                out = []
                for prompt in ("What is the capital of France?", "Tell me a long story"):
                    r = c.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": prompt}]
                    )
                    assert r.usage is not None and r.usage.completion_tokens == 500
                    assert r.choices[0].finish_reason == "stop"
                    out.append(r.choices[0].message.content or "")
                cut = c.chat.completions.create(model="gpt-4o", messages=STORY, max_tokens=20)
                assert cut.choices[0].finish_reason == "length"
                assert cut.choices[0].message.content == "".join(tokenize(out[1])[:20])
                return out
            finally:
                c.close()

    one, again, other = texts(1), texts(1), texts(2)
    assert one == again
    assert one[0].startswith("The capital of France is Paris.")
    # The filler after the answer depends on the seed, and varies.
    assert one[0].split() != other[0].split()
    assert len(set(one[1].split(". "))) > 10
    assert answer_tokens("What is the capital of France?", 500, 1) == tokenize(one[0])


# ------------------------------------------------------------------ latency model


def test_latency_draws_are_seeded_and_bounded() -> None:
    settings = SimulatorSettings(
        ttft_ms=100, ttft_std_ms=30, token_delay_ms=10, token_delay_std_ms=5, seed=3
    )
    timing = Timing.of(settings)

    def draws(model: LatencyModel) -> List[float]:
        return [model.ttft(timing, 0) for _ in range(50)] + [model.gap(timing) for _ in range(50)]

    a, b = draws(LatencyModel(settings)), draws(LatencyModel(settings))
    assert a == b
    assert len(set(a)) > 90  # they do vary
    assert all(x >= 0 for x in a)
    mean_ttft = sum(a[:50]) / 50
    assert 0.08 < mean_ttft < 0.12
    other = draws(LatencyModel(SimulatorSettings(**{**settings.__dict__, "seed": 4})))
    assert other != a


def test_prefill_and_load_factor() -> None:
    settings = SimulatorSettings(
        ttft_ms=10, token_delay_ms=2, prefill_ms_per_token=0.5, load_factor=3.0, max_concurrency=5
    )
    model = LatencyModel(settings)
    timing = Timing.of(settings)
    assert model.ttft(timing, 100) == pytest.approx(0.060)
    model.active = 1
    assert model.gap(timing) == pytest.approx(0.002)
    model.active = 3  # halfway to max_concurrency: factor 2
    assert model.gap(timing) == pytest.approx(0.004)
    model.active = 9  # past the cap the factor stays at 3
    assert model.gap(timing) == pytest.approx(0.006)
    assert model.total(timing, 0, 11) == pytest.approx((10 + 10 * 2) * 3 / 1000)
    with pytest.raises(ValueError, match="max_concurrency"):
        SimulatorSettings(load_factor=2.0)


def test_timing_header_parsing() -> None:
    base = Timing(ttft_ms=200, token_delay_ms=20)
    t = parse_timing("ttft_ms=5, token-delay-ms=1,prefill_ms_per_token=0.1", base)
    assert t == Timing(ttft_ms=5, token_delay_ms=1, prefill_ms_per_token=0.1)
    for bad in ("ttft=5", "ttft_ms=-1", "ttft_ms=abc", "ttft_ms"):
        with pytest.raises(ValueError, match=LATENCY_HEADER):
            parse_timing(bad, base)


def test_latency_header_applies_per_request(sim: SimulatorServer) -> None:
    body = {"model": "m", "stream": True, "messages": STORY, "max_tokens": 3}
    start = time.perf_counter()
    status, _, raw = post(
        sim, "/v1/chat/completions", body, headers={LATENCY_HEADER: "ttft_ms=300"}
    )
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    assert time.perf_counter() - start >= 0.3  # a sleep is never shorter
    status, _, raw = post(sim, "/v1/chat/completions", body, headers={LATENCY_HEADER: "bogus=1"})
    assert status == 400
    assert LATENCY_HEADER in json.loads(raw)["error"]["message"]


def test_concurrency_cap_queues_requests() -> None:
    with SimulatorServer(SimulatorSettings.fast(max_concurrency=1)) as server:
        body = json.dumps({"model": "m", "stream": True, "messages": STORY, "max_tokens": 2})
        results: List[bytes] = []

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=body,
                headers={"Content-Type": "application/json", LATENCY_HEADER: "ttft_ms=800"},
            )
            results.append(conn.getresponse().read())
            conn.close()

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        seen = {"active": 0, "waiting": 0}
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            health = json.loads(request(server, "GET", "/health")[2])
            if health["waiting"] == 1:
                seen = health
                break
            time.sleep(0.02)
        for t in threads:
            t.join(10)
        assert seen["active"] == 1 and seen["waiting"] == 1
        assert len(results) == 2 and all(r.endswith(b"[DONE]\n\n") for r in results)
